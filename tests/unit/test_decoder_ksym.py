import logging
import sys
import threading
import time
from pathlib import Path

import pytest

from exporter import decoders
from exporter.decoders import DecoderError, Unresolved, _refresh, ksym
from exporter.decoders._base import TEXT_INPUT
from exporter.decoders.ksym import Ksym

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81001000 t do_one_initcall
ffffffff81002000 D some_data
ffffffff81002800 r some_rodata
ffffffff81003000 T vfs_read
ffffffff81003200 W weak_function
ffffffffc0201000 t mod_init\t[mod]
ffffffffc0201100 t mod_exit\t[mod]
ffffffffa0000000 t bpf_prog_6deef7357e7b4530_count\t[bpf]
"""


def address(a: int) -> bytes:
    return a.to_bytes(8, sys.byteorder)


@pytest.fixture
def kallsyms(tmp_path: Path) -> Path:
    path = tmp_path / "kallsyms"
    path.write_text(KALLSYMS)
    return path


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The time _refresh sees: now[0], moved by the test."""
    now = [1000.0]
    monkeypatch.setattr(_refresh, "monotonic", lambda: now[0])
    return now


@pytest.mark.parametrize(
    ("a", "name"),
    [
        (0xFFFFFFFF81000000, b"_stext"),  # of symbols at one address, the first listed
        (0xFFFFFFFF81000FFF, b"_stext"),
        (0xFFFFFFFF81001000, b"do_one_initcall"),
        (0xFFFFFFFF81002400, b"do_one_initcall"),  # data symbols are not functions
        (0xFFFFFFFF81003000, b"vfs_read"),
        (0xFFFFFFFF8100301C, b"vfs_read"),
        (0xFFFFFFFF81003200, b"weak_function"),
        (0xFFFFFFFFC0201010, b"mod_init"),  # module symbols, without their [module]
        (0xFFFFFFFFC0201100, b"mod_exit"),
        (0xFFFFFFFFA0000040, b"bpf_prog_6deef7357e7b4530_count"),  # listed out of order
        (0xFFFFFFFFB0000000, b"bpf_prog_6deef7357e7b4530_count"),
    ],
)
def test_nearest_function_at_or_below(kallsyms: Path, a: int, name: bytes) -> None:
    assert Ksym({"kallsyms": str(kallsyms)}, 8).decode(address(a)) == name


@pytest.mark.parametrize("a", [0, 1, 0xFFFFFFFF80FFFFFF])
def test_zero_and_below_every_symbol_are_unknown(kallsyms: Path, a: int) -> None:
    assert Ksym({"kallsyms": str(kallsyms)}, 8).decode(address(a)) == b"unknown"


def test_a_module_loaded_since_is_read_again(kallsyms: Path, clock: list[float]) -> None:
    decoder = Ksym({"kallsyms": str(kallsyms)}, 8)
    assert decoder.decode(address(0xFFFFFFFF81003000)) == b"vfs_read"  # first read
    kallsyms.write_text(KALLSYMS + "ffffffffc0400000 t new_init\t[new]\n")
    clock[0] += _refresh.MIN_REFRESH_SECONDS
    assert decoder.decode(address(0xFFFFFFFFC0400008)) == b"new_init"


def test_rereads_are_rate_limited(kallsyms: Path, clock: list[float]) -> None:
    decoder = Ksym({"kallsyms": str(kallsyms)}, 8)
    assert decoder.decode(address(0xFFFFFFFF81003000)) == b"vfs_read"
    kallsyms.write_text(KALLSYMS + "ffffffffc0400000 t new_init\t[new]\n")
    clock[0] += _refresh.MIN_REFRESH_SECONDS - 0.1
    # Too soon after the last read: the old table's guess (its last function), not final.
    with pytest.raises(Unresolved) as provisional:
        decoder.decode(address(0xFFFFFFFFC0400008))
    assert provisional.value.value == b"mod_exit"
    clock[0] += 0.1
    assert decoder.decode(address(0xFFFFFFFFC0400010)) == b"new_init"


def test_concurrent_misses_read_once(
    kallsyms: Path, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    read = ksym.read_kallsyms

    def counted(path: Path, v1: bool = False) -> ksym.Symbols:
        reads.append(path)
        return read(path, v1)

    monkeypatch.setattr(ksym, "read_kallsyms", counted)
    decoder = Ksym({"kallsyms": str(kallsyms)}, 8)
    results: list[bytes] = []
    start = threading.Barrier(8)

    def scrape(i: int) -> None:
        start.wait()
        try:
            results.append(decoder.decode(address(0xFFFFFFFFD0000000 + i)))  # past the end
        except Unresolved as provisional:  # a thread that began before another's read
            results.append(provisional.value)

    threads = [threading.Thread(target=scrape, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"mod_exit"] * 8
    assert len(reads) == 1


def test_hidden_addresses_decode_to_unknown_with_one_warning(
    tmp_path: Path, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "kallsyms"
    path.write_text("".join("0000000000000000" + line[16:] for line in KALLSYMS.splitlines(True)))
    decoder = Ksym({"kallsyms": str(path)}, 8)
    with caplog.at_level(logging.WARNING):
        for i in range(3):
            assert decoder.decode(address(0xFFFFFFFF81003000 + i)) == b"unknown"
            clock[0] += _refresh.MIN_REFRESH_SECONDS  # every miss reads again
    assert [r.getMessage() for r in caplog.records] == [
        f"ksym: {path} shows every address as 0 (the daemon lacks CAP_SYSLOG, or "
        "kernel.kptr_restrict is 2): kernel addresses decode to unknown"
    ]


def test_unreadable_kallsyms(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "missing"
    decoder = Ksym({"kallsyms": str(missing)}, 8)  # nothing is read before the first decode
    with caplog.at_level(logging.WARNING):
        assert decoder.decode(address(0xFFFFFFFF81003000)) == b"unknown"
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(f"ksym: cannot read {missing} ([Errno 2]")


def test_this_hosts_kallsyms() -> None:
    """Functions of /proc/kallsyms decode to themselves (or an alias at their address)."""
    lines = Path("/proc/kallsyms").read_text().splitlines()
    # Core kernel ones only: BPF programs (and modules) may come and go while the test runs.
    functions = [f for f in map(str.split, lines) if f[1] in "tTwW" and len(f) == 3]
    if not functions or all(int(f[0], 16) == 0 for f in functions):
        pytest.skip("/proc/kallsyms hides addresses here")
    names: dict[int, set[bytes]] = {}
    for a, _, name, *_ in functions:
        names.setdefault(int(a, 16), set()).add(name.encode())
    decoder = Ksym({}, 8)
    for a in list(names)[::97]:
        assert decoder.decode(address(a)) in names[a]


@pytest.mark.parametrize("size", [1, 4, 16])
def test_other_widths_are_rejected(size: int) -> None:
    with pytest.raises(DecoderError) as e:
        Ksym({}, size)
    assert str(e.value) == f"ksym decodes 8-byte addresses, not {size}"


def test_text_input_is_rejected() -> None:
    with pytest.raises(DecoderError, match="ksym decodes a raw field"):
        Ksym({}, TEXT_INPUT)


@pytest.mark.parametrize(
    ("a", "name"),
    [
        (0xFFFFFFFF81000000, b"_stext"),  # the first line with that address
        (0xFFFFFFFF81003000, b"vfs_read"),
        (0xFFFFFFFF81002000, b"some_data"),  # any symbol type
        (0xFFFFFFFFC0201000, b"mod_init\t[mod]"),  # v1 split lines on " " only
    ],
)
def test_v1_names_exact_addresses(kallsyms: Path, a: int, name: bytes) -> None:
    assert Ksym({"kallsyms": str(kallsyms), "v1": True}, 8).decode(address(a)) == name


def test_v1_other_addresses_are_unknown_addr(kallsyms: Path) -> None:
    decoder = Ksym({"kallsyms": str(kallsyms), "v1": True}, 8)
    with pytest.raises(Unresolved) as inside:  # inside a function: v1 matched exactly
        decoder.decode(address(0xFFFFFFFF8100301C))
    assert inside.value.value == b"unknown_addr:0xffffffff8100301c"
    assert decoder.decode(address(0)) == b"unknown_addr:0x0"  # never in kallsyms' column


def test_decoders_of_one_file_share_one_read_that_warm_starts_early(
    kallsyms: Path, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every program's ksym decoder of one file reads it once (one table, not one each), and
    decoders.warm() reads it before any decoder exists (as the spawner describes a program,
    before its compile), so the first scrape finds it read."""
    reads = []
    read = ksym.read_kallsyms

    def counted(path: Path, v1: bool = False) -> ksym.Symbols:
        reads.append((path, v1))
        return read(path, v1)

    monkeypatch.setattr(ksym, "read_kallsyms", counted)
    options = {"name": "ksym", "kallsyms": str(kallsyms)}
    handle = decoders.warm(options)
    assert handle is not None
    deadline = time.monotonic() + 10
    while not reads:
        assert time.monotonic() < deadline, "warm() did not read"
        time.sleep(0.01)
    first, second = Ksym(options, 8), Ksym(options, 8)
    assert first.decode(address(0xFFFFFFFF81003000)) == b"vfs_read"
    assert second.decode(address(0xFFFFFFFF81003010)) == b"vfs_read"
    v1 = Ksym({**options, "v1": True}, 8)  # read as v1 reads it: another table
    assert v1.decode(address(0xFFFFFFFF81003000)) == b"vfs_read"
    assert reads == [(kallsyms, False), (kallsyms, True)]
    assert decoders.warm({"name": "uint"}) is None


def test_a_table_read_before_the_miss_gives_a_provisional_answer_and_warm_rereads_an_old_one(
    kallsyms: Path, clock: list[float]
) -> None:
    """An address past the table, decoded after a warm read and within MIN_REFRESH_SECONDS of
    it: the table was not read since the miss, so the answer is a guess to ask again. A warm()
    of a table older than that reads it again (a program added by a reload)."""
    options = {"name": "ksym", "kallsyms": str(kallsyms)}
    table = ksym.table(options)
    table.current()  # read at clock 1000
    clock[0] += 1.0
    with pytest.raises(Unresolved):
        Ksym(options, 8).decode(address(0xFFFFFFFFD0000000))
    clock[0] += _refresh.MIN_REFRESH_SECONDS
    reads = table.reads
    decoders.warm(options)
    deadline = time.monotonic() + 10
    while table.reads == reads:
        assert time.monotonic() < deadline, "warm() did not read the old table again"
        time.sleep(0.01)
