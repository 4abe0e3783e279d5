"""ebpf_exporter v1 configs in the styles of v1.2.5's own examples directory: each function
attaches once per probe (bpftool shows one attachment) and counts exactly.

- timers.yaml: TRACEPOINT_PROBE listed under tracepoints: (which BCC has attached already
  while compiling), a ksym label; and the same function mapped to a second tracepoint.
- timers-raw-tracepoints.yaml: RAW_TRACEPOINT_PROBE listed under raw_tracepoints:.
- cgroup.yaml: a cgroup label (uint, then cgroup), named as v1 named it.
- eaddrinuse.yaml: errors by function from sys_exit_* tracepoints, uint + static_map.
- llcstat.yaml: perf_events (a software event here: this machine has no hardware ones).
- bio-tracepoints.yaml: the block I/O latency histogram, majorminor device, static_map op.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from exporter.decoders.cgroup import cgroup2_mount

from ..conftest import bpftool_show
from . import workload
from .test_prog_biolatency import SIZE, loop_device  # noqa: F401 - a fixture
from .test_v1 import kprobes_available

K = 23  # bcc's rule for tools: a prime number of events
M = 29

# The comm filter keeps the maps to the test's workloads (comm "bccx..."), on one line of C.
OURS = "(c[0] == 'b' && c[1] == 'c' && c[2] == 'c' && c[3] == 'x')"
KEEP_OURS = (
    f"char *c = key.comm; bpf_get_current_comm(&key.comm, sizeof(key.comm)); if (!{OURS}) return 0;"
)

STYLES = """
programs:
  - name: timers
    metrics:
      counters:
        - name: timer_start_total
          help: hrtimers started, by comm and callback
          table: counts
          labels:
            - {name: comm, size: 16, decoders: [{name: string}]}
            - {name: function, size: 8, decoders: [{name: ksym}]}
    tracepoints:
      timer:hrtimer_start: tracepoint__timer__hrtimer_start
    code: |
      #include <linux/hrtimer.h>  // enum hrtimer_mode, a field of the tracepoint

      struct key_t { char comm[16]; u64 function; };
      BPF_HASH(counts, struct key_t);

      // Generates function tracepoint__timer__hrtimer_start
      TRACEPOINT_PROBE(timer, hrtimer_start) {
          struct key_t key = {.function = (u64) args->function};
          %(keep_ours)s
          counts.increment(key);
          return 0;
      }
  - name: calls
    metrics:
      counters:
        - name: calls_total
          help: getppid and getpgid calls by comm from one TRACEPOINT_PROBE, getsid from another
          table: calls
          labels:
            - {name: comm, size: 16, decoders: [{name: string}]}
            - name: syscall
              size: 8
              decoders:
                - name: uint
                - name: static_map
                  static_map: {110: getppid, 121: getpgid, 124: getsid}
    tracepoints:
      syscalls:sys_enter_getppid: tracepoint__syscalls__sys_enter_getppid
      syscalls:sys_enter_getpgid: tracepoint__syscalls__sys_enter_getppid
    code: |
      struct key_t { char comm[16]; u64 nr; };
      BPF_HASH(calls, struct key_t);

      static int count(long nr) {
          struct key_t key = {.nr = nr};
          %(keep_ours)s
          calls.increment(key);
          return 0;
      }

      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
          return count(args->__syscall_nr);
      }

      // Listed in no section: v1 never attached it, BCC does.
      TRACEPOINT_PROBE(syscalls, sys_enter_getsid) {
          return count(args->__syscall_nr);
      }
  - name: cgroup
    metrics:
      counters:
        - name: cgroup_getppid_calls_total
          help: getppid calls of the test's workloads by cgroup
          table: counts
          labels:
            - name: cgroup
              size: 8
              decoders:
                - name: uint
                - name: cgroup
    tracepoints:
      syscalls:sys_enter_getppid: tracepoint__syscalls__sys_enter_getppid
    code: |
      BPF_HASH(counts, u64);

      TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
          char c[16];
          bpf_get_current_comm(&c, sizeof(c));
          if (!%(ours)s)
              return 0;
          counts.increment((u64) bpf_get_current_cgroup_id());
          return 0;
      }
  - name: raw_calls
    metrics:
      counters:
        - name: raw_getppid_total
          help: getppid calls by comm, from the raw sys_enter tracepoint
          table: calls
          labels:
            - {name: comm, size: 16, decoders: [{name: string}]}
    raw_tracepoints:
      sys_enter: raw_tracepoint__sys_enter
    code: |
      struct key_t { char comm[16]; };
      BPF_HASH(calls, struct key_t);

      RAW_TRACEPOINT_PROBE(sys_enter) {
          if (ctx->args[1] != 110)  // getppid on x86_64
              return 0;
          struct key_t key = {};
          %(keep_ours)s
          calls.increment(key);
          return 0;
      }
  - name: socket_errors
    metrics:
      counters:
        - name: socket_errors_total
          help: Failed bind and connect calls by errno
          table: counts
          labels:
            - name: function
              size: 8
              decoders:
                - name: uint
                - name: static_map
                  static_map:
                    1: bind
                    2: connect
            - name: errno
              size: 8
              decoders:
                - name: uint
    tracepoints:
      syscalls:sys_exit_bind: tracepoint__syscalls__sys_exit_bind
      syscalls:sys_exit_connect: tracepoint__syscalls__sys_exit_connect
    code: |
      struct key_t { u64 function; u64 err; };
      BPF_HASH(counts, struct key_t);

      enum stats {
          S_BIND    = 1,
          S_CONNECT = 2,
      };

      static int count_return(int source, long ret) {
          char c[16];
          bpf_get_current_comm(&c, sizeof(c));
          if (ret >= 0 || !%(ours)s)
              return 0;
          struct key_t key = {.function = source, .err = -ret};
          counts.increment(key);
          return 0;
      }

      TRACEPOINT_PROBE(syscalls, sys_exit_bind) {
          return count_return(S_BIND, args->ret);
      }

      TRACEPOINT_PROBE(syscalls, sys_exit_connect) {
          return count_return(S_CONNECT, args->ret);
      }
  - name: faults
    metrics:
      counters:
        - name: page_faults  # no _total, as oomkill.yaml's oom_kills
          help: Page faults in the test's mapping, by comm
          table: faults
          labels:
            - {name: comm, size: 16, decoders: [{name: string}]}
    perf_events:
      - type: 1  # PERF_TYPE_SOFTWARE
        name: 2  # PERF_COUNT_SW_PAGE_FAULTS
        target: on_fault
        sample_period: 1
    cflags:
      - -DBASE=%(base)dULL
      - -DPAGES=%(pages)d
    code: |
      #include <uapi/linux/bpf_perf_event.h>

      struct key_t { char comm[16]; };
      BPF_HASH(faults, struct key_t);

      int on_fault(struct bpf_perf_event_data *ctx) {
          if (ctx->addr < BASE || ctx->addr >= BASE + PAGES * 4096)
              return 0;
          struct key_t key = {};
          bpf_get_current_comm(&key.comm, sizeof(key.comm));
          faults.increment(key);
          return 0;
      }
"""

BASE = 0x5A5A00000000  # where the fault workload maps its pages (MAP_FIXED_NOREPLACE)

WORKLOAD = f"""
import socket, time
libc.syscall.restype = ctypes.c_long
for _ in range({K}):
    time.sleep(0.001)  # one hrtimer each, hrtimer_wakeup
    os.getppid()
for _ in range({M}):
    os.getpgid(0)
for _ in range({K}):
    os.getsid(0)

# bind: EADDRINUSE (98) K times; connect: ECONNREFUSED (111) M times, on loopback only.
taken = socket.socket()
taken.bind(("127.0.0.1", 0))
taken.listen()
port = taken.getsockname()[1]
closed = socket.socket()
closed.bind(("127.0.0.1", 0))  # bound, not listening: a SYN to it gets a reset
closed_port = closed.getsockname()[1]
for _ in range({K}):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as err:
            assert err.errno == 98, err
for _ in range({M}):
    with socket.socket() as s:
        try:
            s.connect(("127.0.0.1", closed_port))
        except OSError as err:
            assert err.errno == 111, err

# Page faults: {M} fresh pages at BASE, each touched once (4 KiB pages, no huge page).
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
at = libc.mmap({BASE}, {M} * 4096, 3, 0x22 | 0x100000, -1, 0)  # PRIVATE|ANON|FIXED_NOREPLACE
assert at == {BASE}, hex(at or 0)
for i in range({M}):
    ctypes.memset({BASE} + i * 4096, 1, 1)
"""


def attachments(prog_ids: set[int]) -> collections.Counter[tuple[str, str]]:
    """(kind, tracepoint) -> how many attachments of the given programs the kernel has."""
    return collections.Counter(
        (entry["fd_type"], entry.get("tracepoint") or entry.get("func", ""))
        for entry in bpftool_show("perf")
        if entry["prog_id"] in prog_ids
    )


def v1_cgroup_path() -> str:
    """Our cgroup2 directory, as v1 named it (under /sys/fs/cgroup; unified/ on hybrid hosts)."""
    mount = cgroup2_mount(Path("/proc/self/mounts"))
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    path = next(line[3:] for line in lines if line.startswith("0::"))
    assert mount is not None and mount.is_relative_to("/sys/fs/cgroup"), mount
    return str(mount / path.lstrip("/"))


def test_v1_example_styles_attach_once_and_count_exactly(daemon, write_config):
    config = write_config(
        "v1", STYLES % {"ours": OURS, "keep_ours": KEEP_OURS, "base": BASE, "pages": M}
    )
    exporter = daemon(f"--config.file={config}")
    comm = workload.unique_comm()
    workload.run(comm, WORKLOAD)
    samples = exporter.scrape()

    def value(sample: str, **labels: str) -> float:
        return samples.get((sample, frozenset(labels.items())), 0.0)

    seen = {
        "hrtimer_wakeup": value(
            "ebpf_exporter_timer_start_total", comm=comm, function="hrtimer_wakeup"
        ),
        "getppid": value("ebpf_exporter_calls_total", comm=comm, syscall="getppid"),
        "getpgid": value("ebpf_exporter_calls_total", comm=comm, syscall="getpgid"),
        "raw getppid": value("ebpf_exporter_raw_getppid_total", comm=comm),
        "getsid (unlisted)": value("ebpf_exporter_calls_total", comm=comm, syscall="getsid"),
        "cgroup getppid": value(
            "ebpf_exporter_cgroup_getppid_calls_total", cgroup=v1_cgroup_path()
        ),
        "bind EADDRINUSE": value("ebpf_exporter_socket_errors_total", function="bind", errno="98"),
        "connect ECONNREFUSED": value(
            "ebpf_exporter_socket_errors_total", function="connect", errno="111"
        ),
        "faults": value("ebpf_exporter_page_faults", comm=comm),
    }
    # Twice attached would count twice: every figure is the workload's, exactly.
    assert seen == {
        "hrtimer_wakeup": K,
        "getppid": K,
        "getpgid": M,
        "raw getppid": K,
        "getsid (unlisted)": K,
        "cgroup getppid": K,
        "bind EADDRINUSE": K,
        "connect ECONNREFUSED": M,
        "faults": M,
    }
    # v1's Go version collector has no equivalent: bcc_exporter_build_info says the version.
    assert not any(sample == "ebpf_exporter_build_info" for (sample, _) in samples)
    # A counter named without _total keeps v1's sample name (untyped: no _total added).
    assert "# TYPE ebpf_exporter_page_faults untyped\n" in exporter.get("/metrics").decode()
    # And the kernel holds one attachment per probe.
    expected = {
        "timers": {("tracepoint", "hrtimer_start"): 1},
        "calls": {
            ("tracepoint", "sys_enter_getppid"): 1,
            ("tracepoint", "sys_enter_getpgid"): 1,
            ("tracepoint", "sys_enter_getsid"): 1,
        },
        "cgroup": {("tracepoint", "sys_enter_getppid"): 1},
        "raw_calls": {("raw_tracepoint", "sys_enter"): 1},
        "socket_errors": {
            ("tracepoint", "sys_exit_bind"): 1,
            ("tracepoint", "sys_exit_connect"): 1,
        },
    }
    for program, probes in expected.items():
        assert attachments(exporter.program_ids(program)) == probes, program
        assert value("ebpf_exporter_enabled_programs", name=program) == 1
    # v1's program info: the mapped functions (not perf_events targets), tags as v1 printed
    # them (a number: no leading zeros).
    tags = {entry["id"]: entry["tag"].lstrip("0") for entry in bpftool_show("prog")}
    info = {
        (dict(labels)["program"], dict(labels)["function"]): dict(labels)["tag"]
        for (sample, labels) in samples
        if sample == "ebpf_exporter_ebpf_programs"
    }
    assert sorted(info) == [
        ("calls", "tracepoint__syscalls__sys_enter_getppid"),
        ("cgroup", "tracepoint__syscalls__sys_enter_getppid"),
        ("raw_calls", "raw_tracepoint__sys_enter"),
        ("socket_errors", "tracepoint__syscalls__sys_exit_bind"),
        ("socket_errors", "tracepoint__syscalls__sys_exit_connect"),
        ("timers", "tracepoint__timer__hrtimer_start"),
    ]
    for (program, _), tag in info.items():
        assert tag in {tags[i] for i in exporter.program_ids(program)}, (program, tag)


BIO_TRACEPOINTS = """
programs:
  - name: bio
    metrics:
      histograms:
        - name: bio_latency_seconds
          help: Block IO latency histogram
          table: io_latency
          bucket_type: exp2
          bucket_min: 0
          bucket_max: 26
          bucket_multiplier: 0.000001 # microseconds to seconds
          labels:
            - name: device
              size: 4
              decoders:
                - name: majorminor
            - name: operation
              size: 4
              decoders:
                - name: uint
                - name: static_map
                  static_map:
                    1: read
                    2: write
            - name: bucket
              size: 8
              decoders:
                - name: uint
    tracepoints:
      block:block_rq_issue: tracepoint__block__block_rq_issue
      block:block_rq_complete: tracepoint__block__block_rq_complete
    code: |
      #include <linux/blkdev.h>

      typedef struct disk_key {
          u32 dev;
          u8 op;
          u64 slot;
      } disk_key_t;

      const u8 max_disks = 255;
      const u8 max_latency_slot = 26;

      BPF_HISTOGRAM(io_latency, disk_key_t, (max_latency_slot + 2) * max_disks);

      struct key_t {
          dev_t dev;
          sector_t sector;
      };

      struct val_t {
          u64 start;
          u64 bytes;
      };

      BPF_HASH(start, struct key_t, struct val_t);

      // Generates function tracepoint__block__block_rq_issue
      TRACEPOINT_PROBE(block, block_rq_issue) {
          if (args->dev == 0) {
              return 0;
          }
          struct key_t key = {};
          key.dev = args->dev;
          key.sector = args->sector;
          if (key.sector == -1) {
             key.sector = 0;
          }
          struct val_t val = {};
          val.start = bpf_ktime_get_ns();
          val.bytes = args->bytes;
          start.update(&key, &val);
          return 0;
      }

      // Generates function tracepoint__block__block_rq_complete
      TRACEPOINT_PROBE(block, block_rq_complete) {
          struct key_t key = {};
          key.dev = args->dev;
          key.sector = args->sector;
          if (key.sector == -1) {
             key.sector = 0;
          }
          struct val_t *valp = start.lookup(&key);
          if (valp == 0) {
              return 0; // missed issue
          }
          u64 delta = (bpf_ktime_get_ns() - valp->start) / 1000;
          u64 latency_slot = bpf_log2l(delta);
          if (latency_slot > max_latency_slot) {
              latency_slot = max_latency_slot;
          }
          disk_key_t latency_key = {};
          latency_key.slot = latency_slot;
          latency_key.dev = new_encode_dev(args->dev);
          if (args->rwbs[0] == 'W' || args->rwbs[0] == 'S' || args->rwbs[0] == 'F' ||
              args->rwbs[1] == 'W' || args->rwbs[1] == 'S' || args->rwbs[1] == 'F') {
              latency_key.op = 2;
          } else {
              latency_key.op = 1;
          }
          io_latency.increment(latency_key);
          latency_key.slot = max_latency_slot + 1;
          io_latency.increment(latency_key, delta);
          start.delete(&key);
          return 0;
      }
"""

# K O_DIRECT writes of SIZE bytes, with gaps so that no two merge; no fsync (no flush request).
DIRECT_WRITES = f"""
import mmap
buffer = mmap.mmap(-1, {SIZE})  # O_DIRECT wants an aligned buffer
buffer.write(b"x" * {SIZE})
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_DIRECT | os.O_CREAT, 0o600)
for i in range({K}):
    os.pwrite(fd, buffer, i * 2 * {SIZE})
os.close(fd)
"""


def root_disk() -> str:
    """The name /proc/partitions gives the device of the file system the tests write in."""
    dev = os.stat(os.path.dirname(os.path.abspath(__file__))).st_dev
    for line in Path("/proc/partitions").read_text().splitlines()[2:]:
        major, minor, _, name = line.split()
        if (int(major), int(minor)) == (os.major(dev), os.minor(dev)):
            return name
    pytest.skip(f"the tests' file system is on no block device ({os.major(dev)}:{os.minor(dev)})")


def writes_completed(disk: str) -> int:
    """The disk's completed write and flush requests (/proc/diskstats' 8th and 19th fields),
    each counted once at completion, as block_rq_complete sees them: the example counts a
    flush ('F' in rwbs) as a write."""
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if fields[2] == disk:
            return int(fields[7]) + int(fields[18])
    raise AssertionError(f"{disk} is not in /proc/diskstats")


def test_v1_bio_tracepoints_names_devices_as_v1(daemon, write_config, loop_device, tmp_path):  # noqa: F811
    config = write_config("bio", BIO_TRACEPOINTS)
    disk = root_disk()
    before = writes_completed(disk)
    exporter = daemon(f"--config.file={config}")
    comm = workload.unique_comm()
    workload.run(comm, DIRECT_WRITES, f"/dev/{loop_device}")
    workload.run(comm, DIRECT_WRITES, str(tmp_path / "direct"))
    samples = exporter.scrape()
    after = writes_completed(disk)

    def value(sample: str, **labels: str) -> float:
        return samples.get((sample, frozenset(labels.items())), 0.0)

    name = "ebpf_exporter_bio_latency_seconds_count"
    # Every request on the loop device is the workload's: exactly K writes, named as v1 names
    # them (/proc/partitions), where a plain majorminor would say "0:1792".
    assert value(name, device=loop_device, operation="write") == K
    # The root disk has other writers too (the journal), and the file system may put two of
    # the workload's writes next to each other on the disk, where they merge into one request:
    # at least one, at most every write the disk completed from before the start to now.
    assert 1 <= value(name, device=disk, operation="write") <= after - before
    devices = {dict(labels)["device"] for (sample, labels) in samples if sample == name}
    assert all(not d[0].isdigit() for d in devices), devices
    assert attachments(exporter.program_ids("bio")) == {
        ("tracepoint", "block_rq_issue"): 1,
        ("tracepoint", "block_rq_complete"): 1,
    }


# A kprobe__ function BCC attaches while compiling, listed under kprobes: as v1 configs list it.
KPROBE_STYLE = """
programs:
  - name: kprobes
    metrics:
      counters:
        - name: kprobe_getppid_total
          help: getppid calls by comm, from a kprobe
          table: calls
          labels:
            - {name: comm, size: 16, decoders: [{name: string}]}
    kprobes:
      __x64_sys_getppid: kprobe____x64_sys_getppid
    code: |
      struct key_t { char comm[16]; };
      BPF_HASH(calls, struct key_t);

      int kprobe____x64_sys_getppid(struct pt_regs *ctx) {
          struct key_t key = {};
          %(keep_ours)s
          calls.increment(key);
          return 0;
      }
"""


def test_v1_kprobe_function_listed_under_kprobes_attaches_once(daemon, write_config):
    if not kprobes_available():
        pytest.skip("this kernel has no kprobes (no /sys/bus/event_source/devices/kprobe)")
    exporter = daemon(
        f"--config.file={write_config('kprobes', KPROBE_STYLE % {'keep_ours': KEEP_OURS})}"
    )
    comm = workload.unique_comm()
    workload.run(comm, f"for _ in range({K}): os.getppid()")
    assert exporter.value("ebpf_exporter_kprobe_getppid_total", comm=comm) == K
    assert attachments(exporter.program_ids("kprobes")) == {("kprobe", "__x64_sys_getppid"): 1}


# What v1 let through and then failed on at every scrape (or counted wrong), here skips the
# program at start, naming the problem; the other programs run.
GETPPID_COUNTER = """
  - name: %(name)s
    metrics:
      counters:
        - name: %(name)s_total
          help: getppid calls
          table: counts
          labels: [{name: x, size: %(size)d, decoders: [{name: uint}]}]
    tracepoints:
      syscalls:sys_enter_getppid: count_getppid
    kaddrs: %(kaddrs)s
    code: |
      BPF_HASH(counts, u64);
      int count_getppid(struct tracepoint__syscalls__sys_enter_getppid *args) {
          counts.increment(%(key)s);
          return 0;
      }
"""
MISTAKES = "programs:" + "".join(
    GETPPID_COUNTER % program
    for program in [
        # v1 defined kaddr_<symbol> as 0 for a symbol not in kallsyms
        {
            "name": "unknown_kaddr",
            "size": 8,
            "kaddrs": "[no_such_symbol_anywhere]",
            "key": "(u64) kaddr_no_such_symbol_anywhere",
        },
        # v1 logged that the label sizes do not add up to the key's on every scrape
        {"name": "short_labels", "size": 4, "kaddrs": "[]", "key": "1"},
        {"name": "fine", "size": 8, "kaddrs": "[]", "key": "1"},
    ]
)


def test_v1_mistakes_v1_let_pass_skip_the_program(daemon, write_config):
    exporter = daemon(f"--config.file={write_config('mistakes', MISTAKES)}")
    samples = exporter.scrape()
    enabled = {
        dict(labels)["name"]
        for (sample, labels) in samples
        if sample == "ebpf_exporter_enabled_programs"
    }
    assert enabled == {"fine"}
    log = exporter.log()
    assert 'program "unknown_kaddr"' in log and "no_such_symbol_anywhere" in log, log
    assert "the labels span 4 bytes but the map's key is 8" in log, log
