"""errno: an error number -> its name ("ENOENT"); 0 -> "0"; unknown -> "unknown:<n>".

As a first decoder it reads a signed integer of 1, 2, 4 or 8 bytes in native byte order, so
both conventions decode alike: a syscall's return value (-2) and a positive errno (2) are both
"ENOENT". After another decoder it takes that decoder's text as a (signed) integer; a negative
value read by `uint` is a huge positive number there, so put errno first for return values.

0 is not an error, and a decoder cannot tell success from "no error recorded": it decodes to
"0", whatever the program meant by it.

Names are Python's errno.errorcode, which on Linux is built from the C library's <errno.h>,
i.e. the kernel's uapi numbers, with three fixes to match the kernel's own names
(include/uapi/asm-generic/errno*.h): 35 is EDEADLK (not the alias EDEADLOCK), 95 is EOPNOTSUPP
(not glibc's alias ENOTSUP, easily confused with the kernel-internal ENOTSUPP, 524), and 133
EHWPOISON, which this Python lacks. The kernel-internal errors of include/linux/errno.h
(512-531) are added: never returned to user space, but seen by programs on kernel functions and
on the raw sys_exit tracepoint (ERESTARTSYS when a signal interrupts a syscall).
"""

import errno
import sys
from collections.abc import Mapping
from typing import Any

from ._base import TEXT_INPUT, DecoderError

_WIDTHS = (1, 2, 4, 8)

NAMES: dict[int, str] = {
    **errno.errorcode,
    35: "EDEADLK",
    95: "EOPNOTSUPP",
    133: "EHWPOISON",
    # include/linux/errno.h: kernel-internal, stable since they were added.
    512: "ERESTARTSYS",
    513: "ERESTARTNOINTR",
    514: "ERESTARTNOHAND",
    515: "ENOIOCTLCMD",
    516: "ERESTART_RESTARTBLOCK",
    517: "EPROBE_DEFER",
    518: "EOPENSTALE",
    519: "ENOPARAM",
    521: "EBADHANDLE",
    522: "ENOTSYNC",
    523: "EBADCOOKIE",
    524: "ENOTSUPP",
    525: "ETOOSMALL",
    526: "ESERVERFAULT",
    527: "EBADTYPE",
    528: "EJUKEBOX",
    529: "EIOCBQUEUED",
    530: "ERECALLCONFLICT",
    531: "ENOGRACE",
}


class Errno:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        if size not in (TEXT_INPUT, *_WIDTHS):
            raise DecoderError(f"errno decodes 1, 2, 4 or 8 bytes, not {size}")
        self._text = size == TEXT_INPUT

    def decode(self, data: bytes) -> bytes:
        if self._text:
            try:
                number = int(data)
            except ValueError:
                raise ValueError(f"errno expects an integer, not {data!r}") from None
        else:
            number = int.from_bytes(data, sys.byteorder, signed=True)
        if number == 0:
            return b"0"
        name = NAMES.get(abs(number))
        return name.encode() if name is not None else f"unknown:{number}".encode()
