"""One function on `tracepoint:syscalls:sys_enter_open*`, labelled by probe, vs bpftrace."""

from __future__ import annotations

import re
from collections.abc import Callable

from . import workload

WILDCARD = """
programs:
  - name: wildcard
    code: |
      struct key_t {
          u16 probe;
          char comm[16];
      };
      BPF_HASH(opens, struct key_t, u64);
      int count_open(void *ctx) {
          struct key_t key = {};
          key.probe = bpf_get_attach_cookie(ctx);  // the event id of the tracepoint that fired
          bpf_get_current_comm(&key.comm, sizeof(key.comm));
          opens.increment(key);
          return 0;
      }
    probes:
      - function: count_open
        attach: "tracepoint:syscalls:sys_enter_open*"
    metrics:
      counters:
        - name: open_calls_total
          help: open-family syscalls by probe and comm.
          map: opens
          labels:
            - {name: probe, size: 2, decoders: [{name: uint}, {name: tracepoint}]}
            - {name: comm, size: 16, decoders: [{name: string}]}
"""

# open(2) 5 times, openat(2) 7 times, openat2(2) 11 times, by raw syscall number (x86_64).
CALLS = """
import struct
path = sys.argv[2].encode()
libc.syscall.restype = ctypes.c_long
how = struct.pack("QQQ", os.O_RDONLY, 0, 0)  # struct open_how
for nr, times, args in ((2, 5, (path, 0)), (257, 7, (-100, path, 0)),
                        (437, 11, (-100, path, how, len(how)))):
    for _ in range(times):
        fd = libc.syscall(nr, *args)
        assert fd >= 0, (nr, ctypes.get_errno())
        os.close(fd)
"""


def bpftrace_counts(comm: str) -> Callable[[], dict[str, int]]:
    script = f'tracepoint:syscalls:sys_enter_open* /comm == "{comm}"/ {{ @[probe] = count(); }}'
    stop = workload.bpftrace(script)

    def finish() -> dict[str, int]:
        return {m[0]: int(m[1]) for m in re.findall(r"@\[(\S+)\]: (\d+)", stop())}

    return finish


def test_wildcard_probe_label_matches_bpftrace(daemon, write_config, tmp_path):
    exporter = daemon(f"--config.file={write_config('wildcard', WILDCARD)}")
    comm = workload.unique_comm()
    target = tmp_path / "target"
    target.write_text("x")
    finish = bpftrace_counts(comm)
    workload.run(comm, CALLS, str(target))
    theirs = finish()
    samples = exporter.scrape()
    ours = {
        dict(labels)["probe"]: value
        for (name, labels), value in samples.items()
        if name == "bcc_open_calls_total" and dict(labels)["comm"] == comm
    }
    expected = {
        "tracepoint:syscalls:sys_enter_open": 5,
        "tracepoint:syscalls:sys_enter_openat": 7,
        "tracepoint:syscalls:sys_enter_openat2": 11,
    }
    assert theirs == expected
    assert ours == expected
    attached = {
        dict(labels)["probe"]
        for (name, labels), _ in samples.items()
        if name == "bcc_exporter_program_attached"
    }
    assert set(expected) <= attached


def test_hundreds_of_probes_hand_over_past_the_fd_limit_of_one_message(daemon, write_config):
    # ~150 syscall entry tracepoints, two fds each (perf event + link): more than the 253 fds
    # one SCM_RIGHTS message can carry, so the handoff must send them in several. (Not all
    # 360: the kernel takes ~70 ms per tracepoint to detach them again.)
    config = WILDCARD.replace("sys_enter_open*", "sys_enter_[a-l]*")
    exporter = daemon(f"--config.file={write_config('everything', config)}")
    comm = workload.unique_comm()
    workload.run(comm, "for _ in range(23):\n    os.getppid()\n")
    samples = exporter.scrape()
    attached = [
        labels for (name, labels), _ in samples.items() if name == "bcc_exporter_program_attached"
    ]
    assert 2 * len(attached) > 253
    ours = {
        dict(labels)["probe"]: value
        for (name, labels), value in samples.items()
        if name == "bcc_open_calls_total" and dict(labels)["comm"] == comm
    }
    assert ours["tracepoint:syscalls:sys_enter_getppid"] == 23
