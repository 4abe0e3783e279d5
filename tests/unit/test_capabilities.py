"""Capability names for --capabilities.keep, and their /proc/PID/status masks."""

from __future__ import annotations

import pytest

from exporter import capabilities
from exporter.capabilities import CapabilityError, parse


def test_names_parse_to_their_numbers():
    assert parse("CAP_NET_BIND_SERVICE") == {10}
    assert parse("CAP_SYSLOG,CAP_BPF,CAP_PERFMON") == {34, 39, 38}


def test_case_prefix_and_spaces_are_forgiven():
    assert parse("cap_net_bind_service") == {10}
    assert parse("net_bind_service, SYSLOG") == {10, 34}


def test_nothing_is_no_capability():
    assert parse("") == frozenset()
    assert parse(" , ") == frozenset()


def test_repeats_count_once():
    assert parse("CAP_BPF,cap_bpf,BPF") == {39}


@pytest.mark.parametrize("text", ["CAP_NET_BIND", "CAP_BPF,CAP_NOPE", "10", "CAP_", "ALL"])
def test_an_unknown_name_is_an_error_naming_it_and_the_known_ones(text):
    with pytest.raises(CapabilityError) as err:
        parse(text)
    message = str(err.value)
    assert "unknown capability" in message and "CAP_NET_BIND_SERVICE" in message


def test_numbers_follow_the_kernel_header():
    # include/uapi/linux/capability.h
    assert capabilities.NUMBERS["CAP_CHOWN"] == 0
    assert capabilities.NUMBERS["CAP_SYS_ADMIN"] == 21
    assert capabilities.NUMBERS["CAP_SYS_RESOURCE"] == 24
    assert capabilities.NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(set(capabilities.NAMES)) == len(capabilities.NAMES) == 41


def test_masks_are_the_proc_status_bits():
    assert capabilities.mask(parse("CAP_NET_BIND_SERVICE")) == 0x400
    assert capabilities.mask(parse("CAP_BPF,CAP_PERFMON")) == 0xC000000000
    assert capabilities.from_mask(0x000001FFFEFFFFFF) == frozenset(range(41)) - {24}
    assert capabilities.names(capabilities.from_mask(0x400 | 1 << 45)) == [
        "CAP_NET_BIND_SERVICE",
        "CAP_45",
    ]
