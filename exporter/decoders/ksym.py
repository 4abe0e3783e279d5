"""ksym: an 8-byte kernel address -> the name of the kernel function it is in ("vfs_read").

Function symbols (types t, T, w, W) come from /proc/kallsyms (option `kallsyms`); an address
decodes to the nearest symbol at or below it, as bcc's ksym() does: kallsyms has no sizes, so
an address past the end of a function still takes its name. Among symbols at one address the
first listed wins. BPF programs and modules are in kallsyms too ("bpf_prog_6deef7357e7b4530_f").

The table is read at the first decode and again when an address is outside it (below the first
or past the last symbol: a module loaded since), at most once per MIN_REFRESH_SECONDS (see
_refresh.py); then the nearest symbol below is taken even past the last one, which is right
for the last function itself. Address 0 and addresses below every symbol decode to "unknown".
So does every address when kallsyms shows all addresses as 0: the kernel hides them from
readers without CAP_SYSLOG, or from everyone with kernel.kptr_restrict=2; one warning is logged.

`v1: true` (set by the ebpf_exporter v1 translation) decodes as v1.2.5 did: only an address
that some kallsyms line (any type, the first listed) has exactly takes its name, a module's
symbol with its module ("foo_init\t[foo]"); every other address, 0 included, decodes to
"unknown_addr:0x<hex>", and is looked up again later (v1 re-read kallsyms on every miss).

Memory: ~120 000 functions on a 6.x kernel, kept as one array of addresses and one bytes blob
of names (~4 MB rather than ~13 MB of Python objects), read in about 0.1 s.
"""

from __future__ import annotations  # array[int] (subscriptable at run time from 3.12)

import bisect
import logging
import re
import sys
import threading
from array import array
from collections.abc import Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any
from weakref import WeakValueDictionary

from .. import kallsyms
from ._base import TEXT_INPUT, V1, DecoderError, Unresolved, flag
from ._refresh import Snapshot, now

log = logging.getLogger(__name__)

UNKNOWN = b"unknown"


class Symbols:
    """Function symbols sorted by address; names are slices of one blob."""

    def __init__(self, addresses: array[int], starts: array[int], names: bytes) -> None:
        """Symbol i is at addresses[i], named names[starts[i]:starts[i + 1]] (the last one to
        the blob's end), in any order; of symbols at one address, the first listed stays."""
        n = len(addresses)
        ends = array("I", starts[1:])
        ends.append(len(names))
        # kallsyms lists functions in address order (on 6.x, modules and BPF programs too):
        # then one pass is all, without sorting 120 000 of them.
        order: Sequence[int]
        if any(addresses[i] < addresses[i - 1] for i in range(1, n)):
            order = sorted(range(n), key=addresses.__getitem__)  # stable: first listed first
        else:
            order = range(n)
        kept = [i for k, i in enumerate(order) if not k or addresses[order[k - 1]] != addresses[i]]
        self.addresses: array[int] = array("Q", [addresses[i] for i in kept])
        self._starts: array[int] = array("I", [starts[i] for i in kept])
        self._ends: array[int] = array("I", [ends[i] for i in kept])
        self._names = names

    def hidden(self) -> bool:
        """kallsyms with every address 0: no address can be decoded."""
        return not self.addresses or self.addresses[-1] == 0

    def covers(self, address: int) -> bool:
        """Within the table: from the first to the last symbol."""
        return not self.hidden() and self.addresses[0] <= address <= self.addresses[-1]

    def exact(self, address: int) -> bytes | None:
        """The name of the symbol at exactly `address`; None if there is none."""
        i = bisect.bisect_left(self.addresses, address)
        if i == len(self.addresses) or self.addresses[i] != address or self.hidden():
            return None
        return self._names[self._starts[i] : self._ends[i]]

    def find(self, address: int) -> bytes | None:
        """The name of the symbol at or below `address`; None if there is none."""
        i = bisect.bisect_right(self.addresses, address) - 1
        if i < 0 or self.hidden():
            return None
        return self._names[self._starts[i] : self._ends[i]]


# "ffffffff8137a0e0 T vfs_read" or "ffffffffc06d1010 t foo_init\t[foo]": function symbols
# (types t, T, w, W) by name alone; for v1, every symbol, a module's with its module. Matched
# by the regex engine over the whole text: a Python loop over its ~120 000 lines took 0.2 s,
# and the first scrape of a program with a ksym label waits for this read.
_FUNCTIONS = re.compile(rb"^([0-9a-f]+) [tTwW] (\S+)", re.MULTILINE)
_V1_SYMBOLS = re.compile(rb"^([0-9a-f]+) \S (\S+(?:\t\S+)?)", re.MULTILINE)


# Matched a megabyte at a time, into arrays and one blob: the matches of the whole text at
# once (120 000 tuples, then lists of ints and bytes) took 40 MB at the peak of a read, which a
# start-up's tree peak counts (it reads while compiles run: decoders.warm); this takes 25.
CHUNK = 1 << 20


def read_kallsyms(path: Path, v1: bool = False) -> Symbols:
    """The function symbols; `v1`: every symbol, modules' with their module, as v1 read them."""
    with kallsyms.open_file(path) as f:
        text = f.read()
    pattern = _V1_SYMBOLS if v1 else _FUNCTIONS
    addresses, starts, names = array("Q"), array("I"), bytearray()
    start = 0
    while start < len(text):
        end = text.find(b"\n", start + CHUNK)
        end = len(text) if end == -1 else end + 1
        found = pattern.findall(text, start, end)
        if found:
            addresses.extend([int(address, 16) for address, _ in found])
            starts.extend(accumulate([len(name) for _, name in found[:-1]], initial=len(names)))
            names += b"".join([name for _, name in found])
        start = end
    return Symbols(addresses, starts, bytes(names))


class Ksym:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size == TEXT_INPUT:
            raise DecoderError("ksym decodes a raw field, so it must be the first decoder")
        if size != 8:
            raise DecoderError(f"ksym decodes 8-byte addresses, not {size}")
        self.path, self._v1 = _table_key(options)
        self._symbols = table(options)

    def decode(self, data: bytes) -> bytes:
        address = int.from_bytes(data, sys.byteorder)
        if self._v1:
            return self._decode_v1(address)
        if address == 0:
            return UNKNOWN
        asked = now()
        symbols = self._symbols.current()
        if not symbols.covers(address):  # maybe in a module loaded since
            symbols = self._symbols.refresh()
        name = UNKNOWN if symbols.hidden() else symbols.find(address) or UNKNOWN
        read_before = not self._symbols.read_since(asked)
        if not symbols.covers(address) and read_before and not symbols.hidden():
            # Read before the miss (the re-read was rate-limited, or a warm read was under
            # way): a best guess, to be asked again later.
            raise Unresolved(name)
        return name

    def _decode_v1(self, address: int) -> bytes:
        unknown = f"unknown_addr:0x{address:x}".encode()
        # v1 compared f"{address:x}" with kallsyms' 16-digit address column: only addresses
        # with 16 hex digits could match.
        if not address >> 60:
            return unknown
        name = self._symbols.current().exact(address) or self._symbols.refresh().exact(address)
        if name is None:
            raise Unresolved(unknown)  # maybe in a module loaded later
        return name


def _table_key(options: Mapping[str, Any]) -> tuple[Path, bool]:
    return Path(options.get("kallsyms") or kallsyms.KALLSYMS), flag(options, V1, "ksym")


# One table per file and reading (v1 or not) in the process, for as long as a decoder (or a
# warm() caller) holds it: every program with a ksym label shares it (~4 MB each otherwise).
_tables: WeakValueDictionary[tuple[Path, bool], Snapshot[Symbols]] = WeakValueDictionary()
_tables_lock = threading.Lock()


def table(options: Mapping[str, Any]) -> Snapshot[Symbols]:
    """The kallsyms table a ksym decoder with `options` reads; read on first use or warm()."""
    key = _table_key(options)
    with _tables_lock:
        found = _tables.get(key)
        if found is None:
            found = _tables[key] = Snapshot(_Reader(*key))
        return found


class _Reader:
    """Reads one table; says once why its addresses cannot be decoded, if they cannot."""

    def __init__(self, path: Path, v1: bool) -> None:
        self.path, self.v1 = path, v1
        self._warned = False  # only __call__ touches it, under its snapshot's lock

    def __call__(self) -> Symbols:
        try:
            symbols = read_kallsyms(self.path, v1=self.v1)
        except OSError as err:
            self._warn_once(f"ksym: cannot read {self.path} ({err}): addresses decode to unknown")
            return Symbols(array("Q"), array("I"), b"")
        if symbols.hidden():
            self._warn_once(
                f"ksym: {self.path} shows every address as 0 (the daemon lacks CAP_SYSLOG, or "
                "kernel.kptr_restrict is 2): kernel addresses decode to unknown"
            )
        return symbols

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s", message)
