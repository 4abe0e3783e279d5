"""The built-in `syscall_errors` program: failed syscalls by name and errno, against an exact
workload and against syscount-bpfcc -x on the same window.

The counter is system-wide (no comm or pid label); the workload fails syscalls nothing else on
the machine makes (sched_get_priority_max, sched_rr_get_interval, pause), so the counts are
exact.
"""

from __future__ import annotations

import shutil

from ..conftest import cannot_run
from . import workload
from .test_prog_syscalls import delta, series, syscount

ERRORS = "bcc_syscall_errors_total"
RARE = ("sched_get_priority_max", "sched_rr_get_interval", "pause")


def test_failures_count_exactly_by_syscall_and_errno(daemon):
    exporter = daemon("--config.names=syscall_errors")
    before = exporter.scrape()
    workload.run(
        workload.unique_comm(),
        """
        import errno, signal

        def fails(call, *args, expect):
            try:
                call(*args)
            except OSError as err:
                assert err.errno == expect, err
            else:
                raise AssertionError(f"{call.__name__}{args} succeeded")

        for _ in range(23):
            os.sched_get_priority_max(os.SCHED_OTHER)  # succeeds: not counted
        for _ in range(19):
            fails(os.sched_get_priority_max, -1, expect=errno.EINVAL)
        for _ in range(13):
            fails(os.sched_rr_get_interval, 1 << 30, expect=errno.ESRCH)  # no such pid
        for _ in range(11):
            fails(os.sched_rr_get_interval, -1, expect=errno.EINVAL)
        # pause(2) returns when a signal's handler has run; at sys_exit the kernel's own
        # ERESTARTNOHAND, which user space sees as EINTR. A timer every 5 ms, not one per
        # call: a one-shot could fire before pause() is entered (the child preempted for
        # 5 ms in between), and pause() would wait for ever.
        signal.signal(signal.SIGALRM, lambda *_: None)
        signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
        for _ in range(7):
            signal.pause()
        signal.setitimer(signal.ITIMER_REAL, 0)
        """,
    )
    after = exporter.scrape()
    ours = delta(
        series(before, ERRORS, "syscall", "errno"), series(after, ERRORS, "syscall", "errno")
    )
    assert {k: v for k, v in ours.items() if k[0] in RARE} == {
        ("sched_get_priority_max", "EINVAL"): 19,
        ("sched_rr_get_interval", "ESRCH"): 13,
        ("sched_rr_get_interval", "EINVAL"): 11,
        ("pause", "ERESTARTNOHAND"): 7,
    }


LOUD_FAILS = 10_007


def test_failures_match_syscount_x_on_the_same_window(daemon):
    if shutil.which("syscount-bpfcc") is None:
        cannot_run("no syscount-bpfcc (Debian's bpfcc-tools) to compare with")
    exporter = daemon("--config.names=syscall_errors")
    theirs = syscount("-x")  # failed syscalls (return < 0) by syscall, counted at sys_exit
    before = exporter.scrape()
    workload.run(
        workload.unique_comm(),
        f"""
        for _ in range({LOUD_FAILS}):
            try:
                os.sched_get_priority_max(-1)
            except OSError:
                pass
        """,
    )
    after = exporter.scrape()
    table = theirs()
    ours = delta(
        series(before, ERRORS, "syscall", "errno"), series(after, ERRORS, "syscall", "errno")
    )
    # Nothing else fails this syscall: both count it exactly, though their window is longer.
    assert ours[("sched_get_priority_max", "EINVAL")] == LOUD_FAILS
    assert table["sched_get_priority_max"] == LOUD_FAILS
    # Both count at sys_exit, ours on the shorter window: per syscall, ours never exceed
    # theirs (for the names both tables spell alike).
    per_syscall: dict[str, float] = {}
    for (name, _errno), count in ours.items():
        per_syscall[name] = per_syscall.get(name, 0) + count
    compared = {name: (count, table[name]) for name, count in per_syscall.items() if name in table}
    assert all(mine <= their for mine, their in compared.values()), compared
    assert len(compared) >= 2  # the workload's, and the rest of the machine's (python's ENOENTs)
