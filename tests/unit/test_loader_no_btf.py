"""A kernel without BTF: programs that read struct fields through it are skipped, named in one
line; the others run. (This machine has BTF: the kernel's absence is a BTF root without it.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter import loader
from exporter.btf.kernel import KernelBTF
from exporter.compiler import worker
from exporter.workers.messages import Done, Failed, Reply, Selection


class Spawner:
    """Answers a reload as a spawner would for programs that all failed."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies

    def ask(self, request: Any) -> Iterator[tuple[Reply, list[int]]]:
        for reply in self.replies:
            yield reply, []


def test_programs_needing_btf_are_named_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    no_btf = "reads kernel struct fields through BTF (BTF_READ): the kernel has no BTF"
    spawner = Spawner(
        [
            Selection((), ("tcp", "opens", "execs")),
            Failed("tcp", "no-btf", no_btf, ""),
            Failed("opens", "unavailable", "no tracepoint syscalls:sys_enter_open", ""),
            Failed("execs", "no-btf", no_btf, ""),
            Done(),
        ]
    )
    with caplog.at_level(logging.INFO, logger="exporter.loader"):
        outcome = loader.load(spawner)  # type: ignore[arg-type]
    assert [(e.program, e.unavailable) for e in outcome.failed] == [
        ("tcp", True),
        ("opens", True),
        ("execs", True),
    ]
    said = [r.getMessage() for r in caplog.records if "BTF" in r.getMessage()]
    assert said == [
        "the kernel has no BTF (/sys/kernel/btf/vmlinux): not running execs, tcp, which read"
        " kernel struct fields through it (BTF_READ); the other programs run"
    ]


def test_the_worker_refuses_a_btf_read_without_btf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "KernelBTF", lambda: KernelBTF(root=tmp_path))
    monkeypatch.setattr(worker, "_btf_fields", None)
    code = "int f(void *task) { return BTF_READ(task, struct task_struct, pid); }"
    with pytest.raises(worker.NeedsBTF, match="the kernel has no BTF"):
        worker.with_btf_fields(code)
    assert worker.STAGES[worker.NeedsBTF] == "no-btf"
    plain = "int f(void *ctx) { return 0; }"
    assert worker.with_btf_fields(plain) == plain  # the others compile as they are
