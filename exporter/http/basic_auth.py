"""Basic auth against bcrypt hashes, built so that a flood of wrong passwords cannot keep the
scrapers out.

bcrypt costs ~50-100 ms a check by design, so checks run one at a time on a thread of their
own: a flood cannot take the threads that render /metrics, nor every core. What keeps such a
flood from starving the scrapers behind it:
- credentials that passed are remembered (as a keyed digest): a scraper pays one check, and
  its later requests never wait behind anyone's;
- credentials that failed are remembered too (the last FAILURES_REMEMBERED): a repeated wrong
  password costs nothing;
- requests with the same credentials while their check is pending share that check;
- at most MAX_PENDING checks wait or run at once: beyond, the answer is BUSY at once (the
  server says 429), not a place in an unbounded queue;
- a check whose every requester went away (the server cancels their `check`) is dropped
  before it runs.
"""

from __future__ import annotations

import asyncio
import binascii
import enum
import hmac
import secrets
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bcrypt

# ~0.5 s of bcrypt at cost 10 on this kind of machine: the longest a new scraper waits.
MAX_PENDING = 8
FAILURES_REMEMBERED = 1024  # 32-byte digests: tens of KB at most


class Verdict(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    BUSY = "busy"  # too many checks pending: try again later


def parse_basic(authorization: str | None) -> tuple[str, bytes] | None:
    """(user, password) of an `Authorization: Basic ...` header, as Go's Request.BasicAuth."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = binascii.a2b_base64(credentials.strip(), strict_mode=True)
    except binascii.Error:
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


@dataclass
class _Check:
    task: asyncio.Task[bool]
    waiters: int = 0


class BasicAuth:
    def __init__(self, users: Mapping[str, str], max_pending: int = MAX_PENDING) -> None:
        self._users = {u: h.encode() for u, h in users.items()}
        # An unknown user is checked against the costliest real hash and always fails:
        # the answer takes as long as for a known user (no user enumeration by timing).
        self._decoy = max(self._users.values(), key=lambda h: int(h[4:6]))
        self._key = secrets.token_bytes(32)
        self._passed: set[bytes] = set()
        self._failed: dict[bytes, None] = {}  # insertion-ordered: the oldest goes first
        self._pending: dict[bytes, _Check] = {}
        self._max_pending = max_pending
        self._turn = asyncio.Lock()  # one check runs at a time; the others wait in order
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")

    def known(self, authorization: str | None) -> Verdict | None:
        """The verdict without a check (no header, malformed, or remembered), else None."""
        credentials = parse_basic(authorization)
        if credentials is None:
            return Verdict.FAIL
        digest = self._digest(*credentials)
        if digest in self._passed:
            return Verdict.PASS
        if digest in self._failed:
            return Verdict.FAIL
        return None

    async def check(self, authorization: str | None) -> Verdict:
        verdict = self.known(authorization)
        if verdict is not None:
            return verdict
        credentials = parse_basic(authorization)
        assert credentials is not None  # known() answered FAIL otherwise
        digest = self._digest(*credentials)
        pending = self._pending.get(digest)
        if pending is None:
            if len(self._pending) >= self._max_pending:
                return Verdict.BUSY
            task = asyncio.create_task(self._verify(digest, *credentials))
            pending = self._pending[digest] = _Check(task)
        pending.waiters += 1
        try:
            ok = await asyncio.shield(pending.task)
        finally:
            pending.waiters -= 1
            if not pending.waiters and not pending.task.done():
                # Every requester is gone: drop the check (or its result, if it runs).
                pending.task.cancel()
                del self._pending[digest]
        return Verdict.PASS if ok else Verdict.FAIL

    async def _verify(self, digest: bytes, user: str, password: bytes) -> bool:
        try:
            async with self._turn:
                loop = asyncio.get_running_loop()
                ok = await loop.run_in_executor(self._pool, self.verify, user, password)
            if ok:
                self._passed.add(digest)
            else:
                self._failed[digest] = None
                if len(self._failed) > FAILURES_REMEMBERED:
                    del self._failed[next(iter(self._failed))]
            return ok
        finally:
            pending = self._pending.get(digest)
            if pending is not None and pending.task is asyncio.current_task():
                del self._pending[digest]

    def verify(self, user: str, password: bytes) -> bool:
        """One bcrypt comparison, uncached: slow on purpose."""
        known = user in self._users
        try:
            matches = bcrypt.checkpw(password, self._users.get(user, self._decoy))
        except ValueError:  # longer than bcrypt's 72 bytes
            matches = False
        return known and matches

    def _digest(self, user: str, password: bytes) -> bytes:
        name = user.encode()
        message = len(name).to_bytes(4, "big") + name + password
        return hmac.digest(self._key, message, "sha256")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
