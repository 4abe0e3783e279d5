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
- at most MAX_PENDING checks wait or run at once, not an unbounded queue: a new one beyond
  that takes the place of the one waiting longest, which is answered BUSY at once (the
  server says 429), so that a scraper arriving after a burst is checked next but seven;
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
    user: str
    password: bytes
    verdict: asyncio.Future[Verdict]
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
        self._waiting: dict[bytes, _Check] = {}  # in order of arrival
        self._running: tuple[bytes, _Check] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._max_pending = max_pending
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
        """The verdict; cancelling it (the client left) drops the check if nobody else
        waits for it."""
        verdict = self.known(authorization)
        if verdict is not None:
            return verdict
        credentials = parse_basic(authorization)
        assert credentials is not None  # known() answered FAIL otherwise
        digest = self._digest(*credentials)
        check = self._waiting.get(digest)
        if check is None and self._running is not None and self._running[0] == digest:
            check = self._running[1]
        if check is None:
            if len(self._waiting) + (self._running is not None) >= self._max_pending:
                if not self._waiting:
                    return Verdict.BUSY
                # Full: the check waiting longest gives way, so that whoever comes after a
                # burst (a scraper's next scrape) gets in.
                oldest = next(iter(self._waiting))
                self._waiting.pop(oldest).verdict.set_result(Verdict.BUSY)
            future = asyncio.get_running_loop().create_future()
            check = self._waiting[digest] = _Check(*credentials, future)
            if self._worker is None:
                self._worker = asyncio.create_task(self._work())
        check.waiters += 1
        try:
            return await asyncio.shield(check.verdict)
        finally:
            check.waiters -= 1
            if not check.waiters and self._waiting.get(digest) is check:
                del self._waiting[digest]  # every requester is gone: dropped before it runs
                check.verdict.cancel()

    async def _work(self) -> None:
        """Runs the waiting checks one at a time, oldest first, until none is left."""
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                digest = next(iter(self._waiting))
                check = self._waiting.pop(digest)
                self._running = digest, check
                ok = await loop.run_in_executor(self._pool, self.verify, check.user, check.password)
                if ok:
                    self._passed.add(digest)
                else:
                    self._failed[digest] = None
                    if len(self._failed) > FAILURES_REMEMBERED:
                        del self._failed[next(iter(self._failed))]
                if not check.verdict.done():
                    check.verdict.set_result(Verdict.PASS if ok else Verdict.FAIL)
                self._running = None
        finally:
            self._running = self._worker = None

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
