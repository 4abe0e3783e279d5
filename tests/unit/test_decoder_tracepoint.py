from pathlib import Path

import pytest

from exporter.decoders import DecoderError, Unresolved, _refresh, build_chain


def fake_tracefs(root: Path, events: dict[str, int]) -> None:
    for name, event_id in events.items():
        event = root / "events" / name
        event.mkdir(parents=True)
        (event / "id").write_text(f"{event_id}\n")


def test_event_id_decodes_to_probe_name(tmp_path):
    fake_tracefs(tmp_path, {"syscalls/sys_enter_openat": 645, "sched/sched_switch": 321})
    chain = build_chain([{"name": "uint"}, {"name": "tracepoint", "tracefs": str(tmp_path)}], 2)
    assert chain.decode((645).to_bytes(2, "little")) == "tracepoint:syscalls:sys_enter_openat"
    assert chain.decode((321).to_bytes(2, "little")) == "tracepoint:sched:sched_switch"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(_refresh, "monotonic", lambda: now[0])
    return now


def test_unknown_id_is_reread_at_most_every_few_seconds(tmp_path, clock):
    fake_tracefs(tmp_path, {"syscalls/sys_enter_openat": 645})
    chain = build_chain([{"name": "uint"}, {"name": "tracepoint", "tracefs": str(tmp_path)}], 2)
    seven = (7).to_bytes(2, "little")
    assert chain.decode(seven) == "unknown:7"  # from a read made for this decode: final
    fake_tracefs(tmp_path, {"mod/new_event": 7})  # a module loaded since
    with pytest.raises(Unresolved):  # too soon to read again: "unknown:7" for now
        chain.decode(seven)
    clock[0] += _refresh.MIN_REFRESH_SECONDS
    assert chain.decode(seven) == "tracepoint:mod:new_event"


def test_needs_a_uint_before_it():
    with pytest.raises(DecoderError, match="put it after uint"):
        build_chain([{"name": "tracepoint"}], 2)
