"""A SIGTERM during start-up stops it even where CPython drops the exception its handler raises
(seen in a soak run: inside logging's at-fork hook, as the server forked a child before
dropping its privileges, after which the start-up went on until killed). Each case runs in a
fresh interpreter: the real signal, the real at-fork hooks, the real drop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# `dropping()` sends the signal and spins, so that the handler runs inside it, where the Stop it
# raises is dropped (in an at-fork hook, in a finalizer) unless the signal is held.
PROGRAM = """
import gc, os, signal, sys, time
from exporter.signals import Signals, Stop, stops_held

def dropping():
    print("sent", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10**6):
        pass

class Finalized:
    def __del__(self):
        dropping()

signals = Signals()
signals.install()
try:
    if sys.argv[1] == "fork":
        os.register_at_fork(after_in_parent=dropping)
        with stops_held():  # as the server's one fork (exporter.privsep.drop)
            pid = os.fork()
            if pid == 0:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(20)
    else:
        cycle = Finalized()
        cycle.self = cycle
        del cycle
        gc.collect()
        signals.serving(lambda: None)  # the start-up's end
    print("not stopped", flush=True)
except Stop as stop:
    print(f"stopped by {stop}", flush=True)
"""


def run(where: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, where],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=15,
    )


def test_a_stop_during_the_servers_fork_is_held_until_it_has_forked():
    done = run("fork")
    assert done.stdout.splitlines() == ["sent", "stopped by SIGTERM"], done
    assert done.stderr == "", done.stderr  # nothing "ignored": the handler ran after the hooks


def test_a_stop_dropped_elsewhere_still_stops_the_start_up_before_serving():
    done = run("finalizer")
    assert "Exception ignored" in done.stderr, done  # the premise: CPython dropped it
    assert done.stdout.splitlines() == ["sent", "stopped by SIGTERM"], done
