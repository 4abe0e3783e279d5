"""Do the kernel headers BCC compiles against describe the running kernel?

BCC compiles with /lib/modules/$(uname -r)/build. When that is another kernel's tree (a
distribution's headers under a custom kernel), `prev->pid` compiles fine and reads the
wrong bytes. The check compares offsetof() as the headers say with the offsets in the
running kernel's BTF.

The work is split along the process model: header_offsets() needs bcc and runs only in
the worker, returning JSON-friendly {"struct.field": offset or None}; the daemon loads
BTF and calls compare(), which never touches bcc.

The offsets take a 2 s compile of the headers (more than any program's compile), and depend
on the headers alone: the daemon keeps them in a cache directory (cached_offsets,
cache_offsets), so only the first start with a set of headers pays; the comparison with the
running kernel's BTF is made at every start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from exporter.bpf.btf import BTF, VMLINUX_BTF
from exporter.bpf.maps import MapReader
from exporter.bpf.syscall import prog_test_run
from exporter.cache import cache_dir, read_private, write_private

log = logging.getLogger(__name__)

Field = tuple[str, str]  # (struct name, member path such as "__sk_common.skc_family")

# Members that BCC programs (bcc-tools and our built-ins) read by direct dereference,
# chosen to exist in every kernel since 5.14 so that a difference means a layout change.
DEFAULT_FIELDS: tuple[Field, ...] = (
    ("task_struct", "__state"),
    ("task_struct", "flags"),
    ("task_struct", "pid"),
    ("task_struct", "tgid"),
    ("task_struct", "real_parent"),
    ("task_struct", "mm"),
    ("task_struct", "start_time"),
    ("task_struct", "comm"),
    ("sock", "__sk_common.skc_daddr"),
    ("sock", "__sk_common.skc_rcv_saddr"),
    ("sock", "__sk_common.skc_dport"),
    ("sock", "__sk_common.skc_num"),
    ("sock", "__sk_common.skc_family"),
    ("sock", "sk_protocol"),
    ("sock", "sk_type"),
    ("tcp_sock", "srtt_us"),
    ("sk_buff", "len"),
    ("request", "q"),
    ("request", "cmd_flags"),
    ("request", "__data_len"),
    ("request", "__sector"),
    ("request", "start_time_ns"),
    ("request", "io_start_time_ns"),
    ("bio", "bi_iter.bi_sector"),
    ("file", "f_path.dentry"),
    ("file", "f_inode"),
    ("dentry", "d_name.name"),
)

# Between them these declare every struct of DEFAULT_FIELDS; struct request moved from
# blkdev.h to blk-mq.h in 5.16, so both are named.
HEADER_INCLUDES: tuple[str, ...] = (
    "linux/sched.h",
    "linux/fs.h",
    "linux/dcache.h",
    "linux/skbuff.h",
    "linux/blkdev.h",
    "linux/blk-mq.h",
    "linux/bio.h",
    "net/sock.h",
    "linux/tcp.h",
)

# A socket filter's test run needs at least an Ethernet header's worth of packet.
_TEST_PACKET = bytes(64)


def field_key(struct_name: str, path: str) -> str:
    return f"{struct_name}.{path}"


def _split_key(key: str) -> Field:
    struct_name, _, path = key.partition(".")
    return struct_name, path


class Mismatch(NamedTuple):
    struct: str
    field: str
    header_offset: int | None  # None: the headers do not have this member
    kernel_offset: int | None  # None: the running kernel's BTF does not have it


@dataclass(frozen=True)
class HeadersSource:
    """The headers BCC will compile against on this host."""

    path: str  # resolved: /lib/modules/<release>/build is usually a symlink
    release: str | None  # UTS_RELEASE the headers were generated for, if recorded
    kernel_release: str  # of the running kernel


@dataclass(frozen=True)
class HeaderCheck:
    headers_path: str
    headers_release: str | None
    kernel_release: str
    checked: int
    mismatches: tuple[Mismatch, ...]

    @property
    def matched(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeaderCheck:
        mismatches = tuple(Mismatch(*m) for m in data["mismatches"])
        return cls(**{**data, "mismatches": mismatches})

    def warning(self) -> str:
        """One line for the log naming every differing field, for when not matched."""
        fields = "; ".join(
            f"{m.struct}.{m.field} at {_describe(m.header_offset)} in the headers, "
            f"{_describe(m.kernel_offset)} in the kernel"
            for m in self.mismatches
        )
        return (
            f"kernel headers at {self.headers_path} (release {self.headers_release or 'unknown'})"
            f" do not match the running kernel {self.kernel_release}: "
            f"{len(self.mismatches)} of {self.checked} checked struct fields differ ({fields});"
            " BCC programs that read these fields will read wrong data"
        )


def _describe(offset: int | None) -> str:
    return "absent" if offset is None else f"offset {offset}"


def headers_source(
    modules_dir: str | Path = "/lib/modules", kernel_release: str | None = None
) -> HeadersSource:
    release = kernel_release or os.uname().release
    # BCC itself prefers $BCC_KERNEL_SOURCE over the module build tree.
    configured = os.environ.get("BCC_KERNEL_SOURCE")
    path = Path(configured) if configured else Path(modules_dir) / release / "build"
    path = path.resolve()
    return HeadersSource(path=str(path), release=_headers_release(path), kernel_release=release)


# The image's own headers (Dockerfile), for hosts without headers for their kernel.
FALLBACK_ENV = "BCC_EXPORTER_FALLBACK_HEADERS"


def use_fallback(
    modules_dir: str | Path = "/lib/modules", kernel_release: str | None = None
) -> str | None:
    """Point BCC (BCC_KERNEL_SOURCE, which the compile workers inherit) at the fallback
    headers when $BCC_EXPORTER_FALLBACK_HEADERS names them, the kernel has none in
    /lib/modules/<release>/build and none are configured; returns their path if so. The
    header check then says whether they describe the kernel, as it does on a host."""
    fallback = os.environ.get(FALLBACK_ENV)
    if not fallback or os.environ.get("BCC_KERNEL_SOURCE"):
        return None
    release = kernel_release or os.uname().release
    if (Path(modules_dir) / release / "build" / "include").is_dir():
        return None
    os.environ["BCC_KERNEL_SOURCE"] = fallback
    log.warning(
        "no kernel headers for %s in %s: compiling against the fallback headers at %s (%s)",
        release,
        modules_dir,
        fallback,
        FALLBACK_ENV,
    )
    return fallback


def _headers_release(path: Path) -> str | None:
    try:
        found = re.search(
            r'UTS_RELEASE\s+"([^"]*)"', (path / "include/generated/utsrelease.h").read_text()
        )
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        return (path / "include/config/kernel.release").read_text().strip() or None
    except OSError:
        return None


def kernel_offsets(btf: BTF, fields: Iterable[Field]) -> dict[str, int | None]:
    return {field_key(s, f): btf.member_offset(s, f) for s, f in fields}


def compare(
    btf: BTF, header_offsets: Mapping[str, int | None], source: HeadersSource
) -> HeaderCheck:
    """Daemon side: the worker's header offsets against the running kernel's BTF."""
    in_kernel = kernel_offsets(btf, map(_split_key, header_offsets))
    # A field the headers lack counts even when BTF lacks it too: unverified is not matched.
    mismatches = tuple(
        Mismatch(*_split_key(key), offset, in_kernel[key])
        for key, offset in header_offsets.items()
        if offset is None or offset != in_kernel[key]
    )
    return HeaderCheck(
        headers_path=source.path,
        headers_release=source.release,
        kernel_release=source.kernel_release,
        checked=len(header_offsets),
        mismatches=mismatches,
    )


class HeadersError(RuntimeError):
    """The headers cannot compile even a program that reads no field."""


def header_offsets(
    fields: Iterable[Field] = DEFAULT_FIELDS, includes: Iterable[str] = HEADER_INCLUDES
) -> dict[str, int | None]:
    """Worker side: offsetof() of each field per the compile headers; None if it won't compile."""
    from bcc import BPF  # libbcc (and LLVM) may only be loaded in the worker process

    wanted, headers = list(fields), tuple(includes)
    found = _offsets(BPF, wanted, headers)
    if found is not None:
        return found
    # Before paying for a bisection, make sure the fields are what fails, not the headers.
    if _offsets(BPF, [], headers) is None:
        raise HeadersError(f"cannot compile a BPF program including {', '.join(headers)}")
    return _halves(BPF, wanted, headers)


def _halves(
    bpf_class: Any, fields: list[Field], includes: tuple[str, ...]
) -> dict[str, int | None]:
    half = len(fields) // 2
    return {
        **_bisect(bpf_class, fields[:half], includes),
        **_bisect(bpf_class, fields[half:], includes),
    }


def _bisect(
    bpf_class: Any, fields: list[Field], includes: tuple[str, ...]
) -> dict[str, int | None]:
    """Offsets of the fields, halving failing groups until each bad field stands alone."""
    found = _offsets(bpf_class, fields, includes)
    if found is not None:
        return found
    if len(fields) == 1:
        return {field_key(*fields[0]): None}
    return _halves(bpf_class, fields, includes)


def _offsets(
    bpf_class: Any, fields: list[Field], includes: tuple[str, ...]
) -> dict[str, int | None] | None:
    """Compile the fields together and run the program once; None if they don't compile."""
    try:
        module = bpf_class(text=_source(fields, includes).encode())
    except Exception:  # bcc reports a compile error as a bare Exception (clang prints why)
        return None
    try:
        prog = module.load_func(b"header_offsets", bpf_class.SOCKET_FILTER)
        prog_test_run(prog.fd, _TEST_PACKET)
        stored = dict(MapReader(module[b"offsets"].map_fd).items())
    finally:
        module.cleanup()
    return {field_key(*f): stored[i.to_bytes(4, sys.byteorder)] for i, f in enumerate(fields)}


def _source(fields: list[Field], includes: tuple[str, ...]) -> str:
    """A socket filter that stores offsetof() of field i at index i of the `offsets` array."""
    stores = "".join(
        f"    index = {i}; offset = __builtin_offsetof(struct {s}, {f});"
        " offsets.update(&index, &offset);\n"
        for i, (s, f) in enumerate(fields)
    )
    return (
        "".join(f"#include <{header}>\n" for header in includes)
        # An array map needs at least one entry, even when no field is asked for.
        + f"BPF_ARRAY(offsets, u64, {max(len(fields), 1)});\n"
        + "int header_offsets(struct __sk_buff *skb) {\n"
        + "    u32 index;\n    u64 offset;\n"
        + stores
        + "    return 0;\n}\n"
    )


CACHE_FILE = "header_offsets.json"


def _cache_key(source: HeadersSource, fields: Iterable[Field]) -> str:
    """What the offsets depend on: the headers (a package upgrade, even to the same release,
    replaces files and so changes the directories' mtimes) and the question asked."""
    path = Path(source.path)
    stamps = [path.stat().st_mtime_ns, (path / "include").stat().st_mtime_ns]
    what = [source.path, source.release, stamps, [list(f) for f in fields], HEADER_INCLUDES]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def cached_offsets(
    source: HeadersSource, fields: Iterable[Field] = DEFAULT_FIELDS, directory: Path | None = None
) -> dict[str, int | None] | None:
    """The offsets a previous start found for these headers, or None (exporter.cache says
    which files are trusted: this one decides whether programs that read kernel structs may
    run)."""
    cached = read_private((directory or cache_dir()) / CACHE_FILE)
    try:
        if cached.get("key") == _cache_key(source, fields):
            return dict(cached["offsets"])
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        pass  # no cache yet, or not one of ours: the check compiles
    return None


def cache_offsets(
    source: HeadersSource,
    offsets: Mapping[str, int | None],
    fields: Iterable[Field] = DEFAULT_FIELDS,
    directory: Path | None = None,
) -> None:
    """Keep the offsets for the next start, if the cache directory can be written."""
    entry = {"key": _cache_key(source, fields), "offsets": dict(offsets)}
    write_private((directory or cache_dir()) / CACHE_FILE, entry)


def check_headers(
    fields: Iterable[Field] = DEFAULT_FIELDS,
    *,
    btf_path: str | Path = VMLINUX_BTF,
    modules_dir: str | Path = "/lib/modules",
) -> HeaderCheck:
    """Both sides in one process: for the worker and for tests, since it loads bcc."""
    return compare(BTF.load(btf_path), header_offsets(fields), headers_source(modules_dir))


def check_cached() -> HeaderCheck:
    """Worker side: the check, with the header offsets from the cache when these headers were
    checked before (they cost a 2 s compile), and cached for the next start otherwise."""
    source = headers_source()
    offsets = cached_offsets(source)
    if offsets is None:
        offsets = header_offsets()
        cache_offsets(source, offsets)
    return compare(BTF.load(), offsets, source)
