"""exporter.probes: the bpftrace/BCC probe vocabulary, parsed, printed back, and refused."""

from __future__ import annotations

import pytest

from exporter.probes import (
    GRAMMAR,
    HARDWARE_EVENTS,
    SOFTWARE_EVENTS,
    Probe,
    parse_probe,
)

KNOWN = (
    "tracepoint, raw_tracepoint, kprobe, kretprobe, uprobe, uretprobe, usdt, profile, software, "
    "hardware"
)


@pytest.mark.parametrize(
    ("text", "kind", "fields", "static"),
    [
        ("tracepoint:block:block_rq_issue", "tracepoint", ("block", "block_rq_issue"), True),
        (
            "tracepoint:syscalls:sys_enter_open*",
            "tracepoint",
            ("syscalls", "sys_enter_open*"),
            True,
        ),
        ("tracepoint:sched:*", "tracepoint", ("sched", "*"), True),
        ("raw_tracepoint:sched_switch", "raw_tracepoint", ("sched_switch",), True),
        ("kprobe:vfs_read", "kprobe", ("vfs_read",), False),
        ("kprobe:vfs_*", "kprobe", ("vfs_*",), False),
        ("kretprobe:vfs_read", "kretprobe", ("vfs_read",), False),
        ("uprobe:/bin/bash:readline", "uprobe", ("/bin/bash", "readline"), False),
        ("uretprobe:/bin/bash:readline", "uretprobe", ("/bin/bash", "readline"), False),
        (
            "usdt:/usr/sbin/mysqld:mysql:query__start",
            "usdt",
            ("/usr/sbin/mysqld", "mysql", "query__start"),
            True,
        ),
        ("profile:hz:49", "profile", ("hz", "49"), False),
        ("software:cpu-clock:1000", "software", ("cpu-clock", "1000"), False),
        ("software:cs:1", "software", ("cs", "1"), False),
        ("hardware:cycles:100000", "hardware", ("cycles", "100000"), False),
        ("hardware:cache-misses:1000000", "hardware", ("cache-misses", "1000000"), False),
    ],
)
def test_every_kind_parses_and_prints_back(
    text: str, kind: str, fields: tuple[str, ...], static: bool
) -> None:
    probe = parse_probe(text)
    assert probe == Probe(kind, fields)
    assert str(probe) == text
    assert parse_probe(str(probe)) == probe
    assert probe.is_static is static


def test_the_cases_above_cover_every_kind() -> None:
    assert ", ".join(GRAMMAR) == KNOWN


def test_fields_by_name() -> None:
    usdt = parse_probe("usdt:/usr/sbin/mysqld:mysql:query__start")
    assert usdt.field("path") == "/usr/sbin/mysqld"
    assert usdt.field("provider") == "mysql"
    assert usdt.field("probe") == "query__start"
    tp = parse_probe("tracepoint:block:block_rq_issue")
    assert (tp.field("category"), tp.field("event")) == ("block", "block_rq_issue")
    assert parse_probe("profile:hz:49").field("rate") == "49"
    assert parse_probe("software:faults:23").field("period") == "23"


def test_surrounding_blanks_are_dropped() -> None:
    assert str(parse_probe("  kprobe:vfs_read\n")) == "kprobe:vfs_read"


def test_a_binary_path_may_hold_a_colon() -> None:
    """uprobe/usdt split from the right, so only the path can take the extra colons."""
    assert parse_probe("uprobe:/opt/a:b/bin/app:main").fields == ("/opt/a:b/bin/app", "main")
    assert parse_probe("usdt:/opt/a:b/app:prov:probe").fields == ("/opt/a:b/app", "prov", "probe")


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("cpu", "cpu-clock"),
        ("faults", "page-faults"),
        ("cs", "context-switches"),
        ("migrations", "cpu-migrations"),
    ],
)
def test_software_aliases_mean_the_same_event(alias: str, name: str) -> None:
    assert parse_probe(f"software:{alias}:100").field("event") == alias
    assert SOFTWARE_EVENTS[alias] == SOFTWARE_EVENTS[name]


@pytest.mark.parametrize(
    ("alias", "name"), [("cycles", "cpu-cycles"), ("branches", "branch-instructions")]
)
def test_hardware_aliases_mean_the_same_event(alias: str, name: str) -> None:
    assert parse_probe(f"hardware:{alias}:100").field("event") == alias
    assert HARDWARE_EVENTS[alias] == HARDWARE_EVENTS[name]


def test_perf_event_configs_are_the_kernels() -> None:
    # PERF_COUNT_SW_CPU_CLOCK, PERF_COUNT_SW_CONTEXT_SWITCHES, PERF_COUNT_HW_CPU_CYCLES,
    # PERF_COUNT_HW_CACHE_MISSES from include/uapi/linux/perf_event.h.
    assert (SOFTWARE_EVENTS["cpu-clock"], SOFTWARE_EVENTS["context-switches"]) == (0, 3)
    assert (HARDWARE_EVENTS["cpu-cycles"], HARDWARE_EVENTS["cache-misses"]) == (0, 3)


# --- errors -----------------------------------------------------------------------------------


def error(text: str) -> str:
    with pytest.raises(ValueError) as e:
        parse_probe(text)
    return str(e.value)


@pytest.mark.parametrize("text", ["fentry:vfs_read", "perf:software:cpu-clock", "vfs_read"])
def test_unknown_kind_lists_the_known_ones(text: str) -> None:
    kind = text.partition(":")[0]
    assert error(text) == f"unknown probe type {kind!r} in {text!r}; known: {KNOWN}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tracepoint:block", "tracepoint:CATEGORY:EVENT"),
        ("tracepoint:block:block_rq_issue:extra", "tracepoint:CATEGORY:EVENT"),
        ("tracepoint::block_rq_issue", "tracepoint:CATEGORY:EVENT"),
        ("raw_tracepoint:sched:sched_switch", "raw_tracepoint:EVENT"),
        ("kprobe:", "kprobe:FUNCTION"),
        ("kprobe:vfs:read", "kprobe:FUNCTION"),
        ("kretprobe", "kretprobe:FUNCTION"),
        ("uprobe:/bin/bash", "uprobe:PATH:SYMBOL"),
        ("uretprobe:/bin/bash:", "uretprobe:PATH:SYMBOL"),
        ("usdt:/usr/sbin/mysqld:query__start", "usdt:PATH:PROVIDER:PROBE"),
        ("profile:49", "profile:UNIT:RATE"),
        ("profile:hz:49:1", "profile:UNIT:RATE"),
        ("software:cpu-clock", "software:EVENT:PERIOD"),
        ("hardware:cycles:1000:2", "hardware:EVENT:PERIOD"),
    ],
)
def test_wrong_field_count(text: str, expected: str) -> None:
    assert error(text) == f"{text!r}: expected {expected}"


@pytest.mark.parametrize("kind", ["uprobe", "uretprobe"])
def test_uprobe_needs_an_absolute_path(kind: str) -> None:
    text = f"{kind}:bin/bash:readline"
    assert error(text) == f"{text!r}: the binary must be an absolute path"


def test_usdt_needs_an_absolute_path() -> None:
    text = "usdt:mysqld:mysql:query__start"
    assert error(text) == f"{text!r}: the binary must be an absolute path"


@pytest.mark.parametrize(
    "text", ["profile:ms:49", "profile:hz:fast", "profile:hz:0", "profile:hz:-1"]
)
def test_profile_needs_a_positive_hz(text: str) -> None:
    assert error(text) == f"{text!r}: expected profile:hz:RATE, e.g. profile:hz:49"


def test_unknown_software_event_lists_the_known_ones() -> None:
    assert error("software:cpu-cycles:1000") == (
        "'software:cpu-cycles:1000': unknown software event 'cpu-cycles'; known: "
        "cpu-clock, cpu, task-clock, page-faults, faults, context-switches, cs, cpu-migrations, "
        "migrations, minor-faults, major-faults, alignment-faults, emulation-faults, dummy"
    )


def test_unknown_hardware_event_lists_the_known_ones() -> None:
    assert error("hardware:cpu-clock:1000") == (
        "'hardware:cpu-clock:1000': unknown hardware event 'cpu-clock'; known: "
        "cpu-cycles, cycles, instructions, cache-references, cache-misses, branch-instructions, "
        "branches, branch-misses, bus-cycles, stalled-cycles-frontend, stalled-cycles-backend, "
        "ref-cycles"
    )


@pytest.mark.parametrize(
    "text",
    [
        "software:cpu-clock:fast",
        "software:cpu-clock:1e6",
        "software:cpu-clock:-1",
        "software:cpu-clock:0",
        "hardware:cycles:0x100",
        "hardware:cycles:0",
        "hardware:cycles:\u00b2",  # '²'.isdigit() is True, int('²') fails
    ],
)
def test_period_must_be_a_positive_integer(text: str) -> None:
    assert error(text) == f"{text!r}: PERIOD must be a positive integer"
