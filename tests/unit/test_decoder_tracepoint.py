from pathlib import Path

import pytest

from exporter.decoders import DecoderError, build_chain


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


def test_unknown_id_is_reread_then_marked_unknown(tmp_path):
    fake_tracefs(tmp_path, {"syscalls/sys_enter_openat": 645})
    chain = build_chain([{"name": "uint"}, {"name": "tracepoint", "tracefs": str(tmp_path)}], 2)
    assert chain.decode((7).to_bytes(2, "little")) == "unknown:7"
    fake_tracefs(tmp_path, {"mod/new_event": 7})  # a module loaded since
    assert chain.decode((7).to_bytes(2, "little")) == "tracepoint:mod:new_event"


def test_needs_a_uint_before_it():
    with pytest.raises(DecoderError, match="put it after uint"):
        build_chain([{"name": "tracepoint"}], 2)
