"""The throwaway compile worker: the only code that imports bcc.

Run as `python -I -m exporter.compiler FD` by the spawner, for one start or reload: it imports
bcc once, then forks a child for each share of jobs (exporter.workers.messages) the spawner
sends over the socket FD, so that concurrent compiles share the import's pages. A child runs
its jobs one after another: for each it sends `{"compiling": index, "pid": ...}` with the fd of
a fresh file that is its stderr while that job runs (so a crash's last words stay with the job
that caused them), then the job's message with every fd that keeps the program alive. Children
leave with os._exit so that BCC's atexit hooks cannot detach anything (they also keep every
BPF object alive until then: dropping one would not detach, but bcc's cleanup would).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import select
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import capabilities, headers, kallsyms
from ..bpf.perf import link_perf_event, output_event, tracepoint_event
from ..btf import spelling
from ..btf.cache import CachedFields
from ..btf.kernel import KernelBTF, NoKernelBTF
from ..probes import HARDWARE_EVENTS, SOFTWARE_EVENTS, Probe, parse_probe
from ..targets import Target
from ..tracefs import TRACEFS
from ..workers import wire
from ..workers.messages import CompileJob, HeaderJob, Job, decode_job
from . import availability, elf, kallsyms_view
from .availability import ProbeUnavailable
from .prelude import counted_maps, with_prelude

PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1


class CompileFailed(Exception):
    """The C did not compile or the verifier refused it: details are on the worker's stderr."""


class AttachFailed(Exception):
    """A probe this kernel has could not be attached (unlike ProbeUnavailable)."""


class NeedsBTF(Exception):
    """The program reads struct fields through BTF (BTF_READ) and the kernel has none."""


class Refused(Exception):
    """The program must not run here (it reads structs the headers misdescribe, its kaddrs
    cannot be resolved)."""


# How the daemon tells failures apart: "unavailable" is a kernel without the probe, which the
# default config expects on some nodes; the others are errors.
STAGES = {
    CompileFailed: "compile",
    ProbeUnavailable: "unavailable",
    AttachFailed: "attach",
    Refused: "refused",
    NeedsBTF: "no-btf",
}


def main() -> None:
    # A worker stuck in a compile (an include that never opens) would outlive a spawner or
    # daemon killed by SIGKILL: it dies with the process that started it instead.
    parent = os.getppid()
    capabilities.die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # that process died before the line above
        os._exit(1)
    if "--no-preload" not in sys.argv:
        # Imported once here; every share's compiles fork from this process and share its
        # pages (~75 MB of libbcc and LLVM), so N compiles at once cost one import, not N.
        import bcc

        why = kallsyms_view.narrow(bcc.__version__)
        if why is not None:
            print(f"compiles read all of /proc/kallsyms: {why}", file=sys.stderr)

    serve_shares(socket.socket(fileno=int(sys.argv[1])))
    os._exit(0)


def serve_shares(sock: socket.socket) -> None:
    """Fork a child for each share of jobs the spawner sends (with the socket its answers go
    to); tell the spawner, on that socket, how each child ended. Leave at EOF, once every
    child has ended."""
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the share's socket)
    accepting = True
    while accepting or children:
        waiting: list[Any] = [*children, sock] if accepting else list(children)
        ready_list: list[Any] = select.select(waiting, [], [])[0]
        for ready in ready_list:
            if ready is sock:
                message, fds = wire.receive(sock)
                if not message:
                    accepting = False
                    continue
                reply = socket.socket(fileno=fds[0])
                jobs = [decode_job(job) for job in message["jobs"]]
                pid = os.fork()
                if pid == 0:
                    sock.close()
                    for pidfd, (_, other) in children.items():
                        os.close(pidfd)
                        other.close()
                    capabilities.die_with_parent(signal.SIGKILL)
                    run_share(reply, jobs)
                    os._exit(0)
                children[os.pidfd_open(pid)] = (pid, reply)
            else:
                pid, reply = children.pop(ready)
                os.close(ready)
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):  # the spawner had every answer already
                    wire.send(reply, {"exited": os.waitstatus_to_exitcode(status)}, [])
                reply.close()


def run_share(sock: socket.socket, jobs: list[Job]) -> None:
    for index, job in enumerate(jobs):
        with tempfile.TemporaryFile() as stderr:
            os.dup2(stderr.fileno(), 2)
            wire.send(sock, {"compiling": index, "pid": os.getpid()}, [stderr.fileno()])
        meta, fds = run_safely(job)
        sys.stderr.flush()  # all it said on this job in its file before the spawner reads it
        wire.send(sock, meta, fds)
    sys.stdout.flush()


def run_safely(job: Job) -> tuple[dict[str, Any], list[int]]:
    try:
        return run(job)
    except Exception as err:  # noqa: BLE001 - bcc raises bare Exception; the daemon gets its text
        stage = STAGES.get(type(err), "attach")
        return {"ok": False, "stage": stage, "error": str(err) or type(err).__name__}, []


def run(job: Job) -> tuple[dict[str, Any], list[int]]:
    if isinstance(job, HeaderJob):
        # Only programs that read kernel structs wait for this check (no built-in one does):
        # it must not slow the compiles the others wait for.
        os.nice(19)
        return {"ok": True, "headers": headers.check_cached().to_json()}, []
    if job.settings.reads_kernel_structs:
        check = headers.check_cached()
        if not check.matched:
            raise Refused(
                f"refused: it reads kernel structs ({job.settings.reads_kernel_structs}) and "
                "the kernel headers do not lay them out as this kernel does "
                "(bcc_exporter_kernel_headers_match 0)"
            )
    return load_program(job)


# The kernel's BTF fields, for every program of this worker's share: parsed at most once.
_btf_fields: CachedFields | None = None


def with_btf_fields(code: str) -> str:
    """The code with its BTF_READ spellings written out (exporter.btf): CompileFailed, with the
    compiler-style line on stderr, for a field BTF cannot give; NeedsBTF without BTF."""
    global _btf_fields
    if not spelling.uses_btf(code):
        return code
    try:
        if _btf_fields is None:
            _btf_fields = CachedFields(KernelBTF())
        return spelling.rewrite(code, _btf_fields.access)
    except spelling.SpellingError as err:
        print(err.diagnostic(), file=sys.stderr)
        raise CompileFailed(str(err)) from None
    except NoKernelBTF as err:
        raise NeedsBTF(f"reads kernel struct fields through BTF (BTF_READ): {err}") from None
    finally:
        if _btf_fields is not None:
            _btf_fields.save()


def kaddr_cflags(kaddrs: tuple[str, ...], path: Path = kallsyms.KALLSYMS) -> list[str]:
    """`-Dkaddr_<symbol>=<address>` for each of the program's kaddrs, as ebpf_exporter v1 did."""
    if not kaddrs:
        return []
    found = kallsyms.addresses(kaddrs, kallsyms.reopened(path))
    missing = [name for name in kaddrs if name not in found]
    if missing:
        raise Refused(f"kaddrs: not in {path}: {', '.join(missing)}")
    if not any(found.values()):
        raise Refused(f"kaddrs: {path} shows every address as 0 (needs CAP_SYSLOG)")
    return [f"-Dkaddr_{name}=0x{found[name]:x}ULL" for name in kaddrs]


def declare_attach_uprobe() -> None:
    """libbcc 0.26's bpf_attach_uprobe() takes a seventh argument, ref_ctr_offset (the file
    offset of a USDT probe's semaphore, which the kernel counts up in every process that maps
    the file while the probe is attached); Debian's python3-bpfcc 0.26 declares and calls it
    with six, so the kernel got whatever the stack held (0x6 here): a "semaphore" at byte 6 of
    /bin/bash for a readline uprobe, and every other tool's uprobe on the same instruction
    refused (EINVAL; dmesg: "ref_ctr_offset mismatch"). Declared with seven, BCC's own calls
    (uprobes, uretprobes, USDT probes without a semaphore) passing 0."""
    from bcc import lib

    attach = lib.bpf_attach_uprobe
    if getattr(attach, "ref_ctr_offset_declared", False):
        return
    attach.argtypes = [*attach.argtypes[:6], ctypes.c_uint32]

    def with_ref_ctr_offset(*args: Any) -> int:
        return int(attach(*args, 0) if len(args) == 6 else attach(*args))

    with_ref_ctr_offset.ref_ctr_offset_declared = True  # type: ignore[attr-defined]
    lib.bpf_attach_uprobe = with_ref_ctr_offset


def load_program(job: CompileJob) -> tuple[dict[str, Any], list[int]]:
    from bcc import BPF

    declare_attach_uprobe()
    bindings = [(b.function, [parse_probe(p) for p in b.attach]) for b in job.settings.probes]
    cflags = [*job.settings.cflags, *kaddr_cflags(job.settings.kaddrs)]
    started = time.monotonic()
    code = with_btf_fields(job.code)
    usdt_contexts, usdt_done = _prepare_usdt(bindings)
    try:
        bpf = BPF(text=with_prelude(code), cflags=cflags, usdt_contexts=usdt_contexts)
    except Exception as err:
        raise CompileFailed(str(err)) from None
    compiled = time.monotonic()
    auto = _auto_attached(bpf)
    attacher = Attacher(bpf, frozenset((a["function"], a["probe"]) for a in auto))
    bound = []
    for function, alternatives in bindings:
        if any(a["function"] == function for a in usdt_done):
            continue
        bound.extend(_attach_first(attacher, function, alternatives))
    attached = time.monotonic()
    # A binding of an auto-attached function to its own probe (ebpf_exporter v1 listed every
    # TRACEPOINT_PROBE under tracepoints:) is that one attachment: described once, as bound.
    listed = {(a["function"], a["probe"]) for a in bound}
    attachments = [a for a in auto if (a["function"], a["probe"]) not in listed]
    attachments += usdt_done + bound
    meta, fds = _describe(bpf, attachments, compiled - started, attached - compiled)
    meta["counted_maps"] = counted_maps(job.code)
    rings, ring_fds = _perf_rings(
        bpf, list(job.settings.perf_maps), first_fd=len(fds) + len(attacher.held)
    )
    return {**meta, "perf_rings": rings}, fds + attacher.held + ring_fds


def _perf_rings(bpf: Any, names: list[str], first_fd: int) -> tuple[list[dict], list[int]]:
    """A bpf-output ring per online CPU in each BPF_PERF_OUTPUT map that events are counted
    from; the daemon mmaps and reads them."""
    from bcc.table import PerfEventArray
    from bcc.utils import get_online_cpus

    rings: list[dict] = []
    fds: list[int] = []
    for name in names:
        try:
            table = bpf.get_table(name)
        except KeyError:
            raise ProbeUnavailable(f"perf_map: the program has no map named {name!r}") from None
        if not isinstance(table, PerfEventArray):
            raise ProbeUnavailable(f"perf_map: {name!r} is not a BPF_PERF_OUTPUT map")
        for cpu in get_online_cpus():
            fd = output_event(cpu)
            table[table.Key(cpu)] = table.Leaf(fd)
            rings.append({"map": name, "cpu": cpu, "fd": first_fd + len(fds)})
            fds.append(fd)
    return rings, fds


def _prepare_usdt(bindings: list[tuple[str, list[Probe]]]) -> tuple[list[Any], list[dict]]:
    """Let BCC enable the USDT probes it can before compiling: system-wide, that is the ones
    without a semaphore, which then get bpf_usdt_readarg(). Attacher.usdt takes the rest."""
    from bcc import USDT

    contexts, done = [], []
    for function, alternatives in bindings:
        first = alternatives[0]
        try:
            if first.kind != "usdt" or _usdt_probe(first)[1].semaphore:
                continue
        except ProbeUnavailable:
            continue  # the attach loop reports it, or takes the next alternative
        context = USDT(path=first.field("path"))
        context.enable_probe(probe=first.field("probe"), fn_name=function)
        contexts.append(context)
        done.append({"function": function, "probe": str(first), "tried": [], **_target(first)})
    return contexts, done


def _usdt_probe(probe: Probe) -> tuple[Any, Any]:
    """The USDT context of the probe's binary (keep it: it owns the probe) and the probe."""
    from bcc import USDT

    availability.check(probe)
    path, provider, name = probe.field("path"), probe.field("provider"), probe.field("probe")
    context = USDT(path=path)
    for found in context.enumerate_probes():
        if found.provider.decode() == provider and found.name.decode() == name:
            return context, found
    raise ProbeUnavailable(f"{path} has no USDT probe {provider}:{name}")


def _auto_attached(bpf: Any) -> list[dict[str, Any]]:
    """BCC attaches TRACEPOINT_PROBE/RAW_TRACEPOINT_PROBE functions (and kprobe__<function>,
    kretprobe__<function>) itself while compiling."""
    found = []
    for name in bpf.funcs:
        for prefix, kind in ((b"kprobe__", "kprobe"), (b"kretprobe__", "kretprobe")):
            if name.startswith(prefix):
                # As BCC names the event: sys_clone is the kernel's __x64_sys_clone.
                event = bpf.fix_syscall_fnname(name[len(prefix) :]).decode()
                found.append({"function": name.decode(), "probe": f"{kind}:{event}", "tried": []})
    for tp in bpf.tracepoint_fds:
        category, event = tp.decode().split(":")
        found.append(
            {
                "function": f"tracepoint__{category}__{event}",
                "probe": f"tracepoint:{category}:{event}",
                "tried": [],
            }
        )
    for tp in bpf.raw_tracepoint_fds:
        found.append(
            {
                "function": f"raw_tracepoint__{tp.decode()}",
                "probe": f"raw_tracepoint:{tp.decode()}",
                "tried": [],
            }
        )
    return found


def _attach_first(
    attacher: Attacher, function: str, alternatives: list[Probe]
) -> list[dict[str, Any]]:
    tried: list[dict[str, str]] = []
    unavailable = True  # until an alternative that exists fails for another reason
    for probe in alternatives:
        try:
            availability.check(probe)
        except ProbeUnavailable as err:
            tried.append({"probe": str(probe), "error": str(err)})
            continue
        try:
            matched = getattr(attacher, probe.kind)(function, probe)
        except Exception as err:  # noqa: BLE001 - bcc's attach errors are bare Exceptions
            tried.append({"probe": str(probe), "error": str(err)})
            unavailable = unavailable and isinstance(err, ProbeUnavailable)
            continue
        target = _target(probe)
        return [{"function": function, "probe": p, "tried": tried, **target} for p in matched]
    reasons = "; ".join(f"{t['probe']}: {t['error']}" for t in tried)
    failure = ProbeUnavailable if unavailable else AttachFailed
    raise failure(f"function {function}: no probe could be attached ({reasons})")


def _target(probe: Probe) -> dict[str, Any]:
    """The file a uprobe or USDT probe is in, as attached. The probe stays on that file if it
    is deleted or replaced (a package upgrade): the daemon watches for it (exporter.targets)."""
    if probe.kind not in ("uprobe", "uretprobe", "usdt"):
        return {}
    return {"target": dataclasses.asdict(Target.of(probe.field("path")))}


class Attacher:
    """One method per probe kind; each returns the probes it attached to.

    `already` holds the (function, probe) pairs BCC attached while compiling: binding one of
    them again would run the function twice per event (kprobes) or fail with EEXIST (a
    program can be on a tracepoint once), so it counts as attached as it is."""

    def __init__(self, bpf: Any, already: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.bpf = bpf
        self.already = already
        self.held: list[int] = []  # fds bcc does not track: our own perf events and links

    def tracepoint(self, function: str, probe: Probe) -> list[str]:
        from bcc import BPF

        events = availability.tracepoints(probe)
        prog_fd = self.bpf.load_func(function.encode(), BPF.TRACEPOINT).fd
        for event in events:
            if (function, f"tracepoint:{event.parent.name}:{event.name}") in self.already:
                continue
            event_id = int((event / "id").read_text())
            perf_fd = tracepoint_event(event_id)
            self.held.append(perf_fd)
            self.held.append(link_perf_event(prog_fd, perf_fd, cookie=event_id))
        return [f"tracepoint:{e.parent.name}:{e.name}" for e in events]

    def raw_tracepoint(self, function: str, probe: Probe) -> list[str]:
        from bcc import BPF, lib

        if (function, str(probe)) in self.already:
            return [str(probe)]
        # Not bcc's attach_raw_tracepoint: it allows one function per raw tracepoint and program.
        prog_fd = self.bpf.load_func(function.encode(), BPF.RAW_TRACEPOINT).fd
        fd = lib.bpf_attach_raw_tracepoint(prog_fd, probe.field("event").encode())
        if fd < 0:
            raise AttachFailed(f"cannot attach to {probe}: {os.strerror(ctypes.get_errno())}")
        self.held.append(fd)
        return [str(probe)]

    def kprobe(self, function: str, probe: Probe) -> list[str]:
        if (function, str(probe)) in self.already:
            return [str(probe)]
        attach = self.bpf.attach_kretprobe if probe.kind == "kretprobe" else self.bpf.attach_kprobe
        attach(event=probe.field("function"), fn_name=function)
        return [str(probe)]

    kretprobe = kprobe

    def uprobe(self, function: str, probe: Probe) -> list[str]:
        attach = self.bpf.attach_uretprobe if probe.kind == "uretprobe" else self.bpf.attach_uprobe
        attach(name=probe.field("path"), sym=probe.field("symbol"), fn_name=function)
        return [str(probe)]

    uretprobe = uprobe

    def usdt(self, function: str, probe: Probe) -> list[str]:
        """System-wide USDT through the kernel's uprobe reference counter, which sets the
        probe's semaphore in every process that maps the binary (BCC sets it only in one pid).
        Arguments are not available to the program on this path."""
        from bcc import BPF, lib

        context, found = _usdt_probe(probe)
        path = probe.field("path")
        prog_fd = self.bpf.load_func(function.encode(), BPF.KPROBE).fd
        semaphore = elf.file_offset(path, found.semaphore) if found.semaphore else 0
        for i in range(found.num_locations):
            offset = elf.file_offset(path, found.get_location(i).address)
            event = f"bcc_exporter_usdt_{os.getpid()}_{offset:x}".encode()
            fd = lib.bpf_attach_uprobe(prog_fd, 0, event, path.encode(), offset, -1, semaphore)
            if fd < 0:
                raise ProbeUnavailable(f"cannot attach a uprobe at {path}+{offset:#x}")
            self.held.append(fd)
        del context
        return [str(probe)]

    def hardware(self, function: str, probe: Probe) -> list[str]:
        self.bpf.attach_perf_event(
            ev_type=PERF_TYPE_HARDWARE,
            ev_config=HARDWARE_EVENTS[probe.field("event")],
            fn_name=function,
            sample_period=int(probe.field("period")),
        )
        return [str(probe)]

    def software(self, function: str, probe: Probe) -> list[str]:
        self.bpf.attach_perf_event(
            ev_type=PERF_TYPE_SOFTWARE,
            ev_config=SOFTWARE_EVENTS[probe.field("event")],
            fn_name=function,
            sample_period=int(probe.field("period")),
        )
        return [str(probe)]

    def profile(self, function: str, probe: Probe) -> list[str]:
        self.bpf.attach_perf_event(
            ev_type=PERF_TYPE_SOFTWARE,
            ev_config=SOFTWARE_EVENTS["cpu-clock"],
            fn_name=function,
            sample_freq=int(probe.field("rate")),
        )
        return [str(probe)]


def _describe(
    bpf: Any, attachments: list[dict[str, Any]], compile_s: float, attach_s: float
) -> tuple[dict[str, Any], list[int]]:
    from bcc import lib

    # libbcc exports these but bcc's Python binding leaves them undeclared (int restype).
    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fds: list[int] = []
    maps = []
    for i in range(lib.bpf_num_tables(bpf.module)):
        name = lib.bpf_table_name(bpf.module, i).decode()
        maps.append(
            {
                "name": name,
                "fd": len(fds),
                "key_desc": (lib.bpf_table_key_desc(bpf.module, name.encode()) or b"").decode(),
            }
        )
        fds.append(lib.bpf_table_fd(bpf.module, name.encode()))
    functions = []
    for name, fn in bpf.funcs.items():
        functions.append({"name": name.decode(), "fd": len(fds)})
        fds.append(fn.fd)
    fds.extend(_attachment_fds(bpf))
    meta = {
        "ok": True,
        "maps": maps,
        "functions": functions,
        "attachments": attachments,
        "compile_seconds": compile_s,
        "attach_seconds": attach_s,
        "tracepoint_ids": _tracepoint_ids(attachments),
        "headers": os.path.realpath(f"/lib/modules/{os.uname().release}/build"),
    }
    return meta, fds


def _tracepoint_ids(attachments: list[dict[str, Any]]) -> dict[str, str]:
    """Event id -> probe of each tracepoint attached: the tracepoint decoder's table, which the
    server cannot read itself (tracefs is root's)."""
    ids = {}
    for a in attachments:
        kind, _, event = a["probe"].partition(":")
        if kind == "tracepoint":
            id_file = TRACEFS / "events" / event.replace(":", "/") / "id"
            with contextlib.suppress(OSError):
                ids[id_file.read_text().strip()] = a["probe"]
    return ids


def _attachment_fds(bpf: Any) -> list[int]:
    """Every perf-event/link fd BCC holds; the daemon keeping them keeps the probes attached."""
    fds = [*bpf.tracepoint_fds.values(), *bpf.raw_tracepoint_fds.values(), *bpf.uprobe_fds.values()]
    for per_function in bpf.kprobe_fds.values():
        fds.extend(per_function.values())
    for per_cpu in bpf.open_perf_events.values():
        fds.extend(per_cpu.values())
    return fds
