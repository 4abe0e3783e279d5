"""exporter.bpf against real maps and programs made by BCC in the test process.

The daemon never imports bcc; the test does, only to create and fill maps the way the
worker will. Every read goes through exporter.bpf's raw bpf(2) calls.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.bpf import syscall
from exporter.bpf.btf import BTF
from exporter.bpf.maps import MapReader, possible_cpus
from exporter.bpf.syscall import BPFError, Cmd, MapType, enable_stats, map_info, prog_info

N = 23  # prime, so a stray or missing entry cannot hide in a round number

SOURCE = r"""
struct pair { u64 a; u64 b; };

BPF_HASH(hash_u8, u32, u8, 64);
BPF_HASH(hash_u16, u32, u16, 64);
BPF_HASH(hash_u32, u32, u32, 64);
BPF_HASH(hash_u64, u32, u64, 64);
BPF_ARRAY(array_u64, u64, 23);
BPF_PERCPU_HASH(percpu_hash, u32, u64, 64);
BPF_PERCPU_ARRAY(pcpu_array_u32, u32, 23);
BPF_TABLE("lru_hash", u32, u64, lru_hash, 256);
BPF_TABLE("lru_percpu_hash", u32, u64, lru_pcpu_hash, 256);
BPF_PROG_ARRAY(progs, 4);
BPF_HASH(wide, u32, struct pair, 4);
BPF_PERCPU_ARRAY(getppid_calls, u64, 1);

int noop(struct __sk_buff *skb) {
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET_TGID)
        return 0;
    u32 zero = 0;
    u64 *calls = getppid_calls.lookup(&zero);
    if (calls)
        (*calls)++;  /* per-CPU slot: no other CPU writes it */
    return 0;
}
"""

PROBE = b"tracepoint__syscalls__sys_enter_getppid"
BPF_SOCKET_FILTER = 1


@pytest.fixture(scope="module")
def bpf() -> Iterator[Any]:
    from bcc import BPF

    module = BPF(text=SOURCE.encode(), cflags=[f"-DTARGET_TGID={os.getpid()}"])
    yield module
    module.cleanup()


def key(i: int) -> bytes:
    return struct.pack("=I", i)


def fill(table: Any, values: dict[int, Any]) -> None:
    for k, v in values.items():
        leaf = table.Leaf(*v) if isinstance(v, list) else table.Leaf(v)
        table[table.Key(k)] = leaf


def reader(bpf: Any, name: str, batch: bool) -> MapReader:
    return MapReader(bpf[name.encode()].map_fd, batch=batch)


both_paths = pytest.mark.parametrize("batch", [True, False], ids=["batch", "by_key"])


@both_paths
@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_hash_values_of_each_width(bpf: Any, batch: bool, size: int) -> None:
    expected = {i: (i * 2_654_435_761 + 7) % (1 << (8 * size)) for i in range(100, 100 + N)}
    fill(bpf[f"hash_u{8 * size}".encode()], expected)

    items = reader(bpf, f"hash_u{8 * size}", batch).items()

    assert sorted(items) == sorted((key(k), v) for k, v in expected.items())


@both_paths
def test_array_returns_every_slot(bpf: Any, batch: bool) -> None:
    expected = {i: (1 << 40) + i for i in range(N)}
    fill(bpf[b"array_u64"], expected)

    assert reader(bpf, "array_u64", batch).items() == [(key(k), v) for k, v in expected.items()]


@both_paths
def test_lru_hash(bpf: Any, batch: bool) -> None:
    expected = {i * 31: i for i in range(1, N + 1)}
    fill(bpf[b"lru_hash"], expected)

    assert sorted(reader(bpf, "lru_hash", batch).items()) == sorted(
        (key(k), v) for k, v in expected.items()
    )


def per_cpu_values(k: int) -> list[int]:
    return [k * 1000 + cpu + 1 for cpu in possible_cpus()]


@both_paths
@pytest.mark.parametrize("name", ["percpu_hash", "lru_pcpu_hash"])
def test_percpu_hash_sums_cpus(bpf: Any, batch: bool, name: str) -> None:
    expected = {k: per_cpu_values(k) for k in range(7, 7 + N)}
    fill(bpf[name.encode()], expected)
    r = reader(bpf, name, batch)

    assert sorted(r.items_per_cpu()) == sorted((key(k), v) for k, v in expected.items())
    assert sorted(r.items()) == sorted((key(k), sum(v)) for k, v in expected.items())


@both_paths
def test_percpu_array_of_u32_skips_slot_padding(bpf: Any, batch: bool) -> None:
    # 4-byte values sit in 8-byte per-CPU slots; reading them packed would interleave zeros.
    expected = {k: per_cpu_values(k) for k in range(N)}
    fill(bpf[b"pcpu_array_u32"], expected)
    r = reader(bpf, "pcpu_array_u32", batch)

    assert r.items_per_cpu() == [(key(k), v) for k, v in expected.items()]
    assert r.items() == [(key(k), sum(v)) for k, v in expected.items()]


def test_map_without_batch_lookup_falls_back_and_stays(bpf: Any) -> None:
    # Program arrays implement no batch op (ENOTSUPP, 524); from user space a lookup
    # yields the id of the program in the slot.
    prog = bpf.load_func(b"noop", BPF_SOCKET_FILTER)
    progs = bpf[b"progs"]
    progs[progs.Key(2)] = progs.Leaf(prog.fd)
    r = reader(bpf, "progs", batch=True)

    assert r.items() == [(key(2), prog_info(prog.fd).id)]
    assert r.batch is False
    assert r.items() == [(key(2), prog_info(prog.fd).id)]


def test_empty_hash(bpf: Any) -> None:
    bpf[b"hash_u64"].clear()
    for batch in (True, False):
        assert reader(bpf, "hash_u64", batch).items() == []


def test_reading_never_removes_entries(bpf: Any) -> None:
    fill(bpf[b"hash_u32"], {1: 11, 2: 22})
    r = reader(bpf, "hash_u32", batch=True)

    assert sorted(r.items()) == sorted(r.items())
    assert len(bpf[b"hash_u32"]) == len(r.items())


def test_struct_values_are_refused_with_the_map_name(bpf: Any) -> None:
    with pytest.raises(ValueError, match="'wide'.*16-byte"):
        reader(bpf, "wide", batch=True)


def test_items_per_cpu_needs_a_percpu_map(bpf: Any) -> None:
    with pytest.raises(ValueError, match="'hash_u64'.*not per-CPU"):
        reader(bpf, "hash_u64", batch=True).items_per_cpu()


def test_map_info(bpf: Any) -> None:
    info = map_info(bpf[b"lru_pcpu_hash"].map_fd)

    assert (info.type, info.key_size, info.value_size, info.max_entries, info.name) == (
        MapType.LRU_PERCPU_HASH,
        4,
        8,
        256,
        "lru_pcpu_hash",
    )
    assert info.id > 0


def test_error_names_command_and_errno() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    with pytest.raises(BPFError) as caught:
        map_info(read_end)  # a pipe is no BPF object
    os.close(read_end)

    assert caught.value.cmd is Cmd.BPF_OBJ_GET_INFO_BY_FD
    assert caught.value.errno == errno.EINVAL
    assert "BPF_OBJ_GET_INFO_BY_FD" in str(caught.value)
    assert "EINVAL" in str(caught.value)


def test_possible_cpus(tmp_path: Path) -> None:
    possible = tmp_path / "possible"
    for text, cpus in [
        ("0\n", [0]),
        ("0-1\n", [0, 1]),
        ("0,2-3\n", [0, 2, 3]),
        ("0-3,8-11\n", [0, 1, 2, 3, 8, 9, 10, 11]),
    ]:
        possible.write_text(text)
        assert possible_cpus(possible) == cpus
    assert possible_cpus() == bpf_possible_cpus_from_bcc()


def bpf_possible_cpus_from_bcc() -> list[int]:
    from bcc.utils import get_possible_cpus

    return list(get_possible_cpus())


def call_getppid_on(cpu: int, times: int) -> None:
    os.sched_setaffinity(0, {cpu})
    for _ in range(times):
        os.getppid()


def test_tracepoint_counts_per_cpu_and_run_stats(bpf: Any) -> None:
    prog_fd = bpf.funcs[PROBE].fd
    cpus = sorted(os.sched_getaffinity(0))[:2]
    calls = dict(zip(cpus, [N, 29], strict=False))
    stats_fd = enable_stats()
    try:
        before = prog_info(prog_fd)
        allowed = os.sched_getaffinity(0)
        try:
            for cpu, times in calls.items():
                call_getppid_on(cpu, times)
        finally:
            os.sched_setaffinity(0, allowed)
        after = prog_info(prog_fd)
    finally:
        os.close(stats_fd)

    per_cpu = dict(MapReader(bpf[b"getppid_calls"].map_fd).items_per_cpu())[key(0)]
    assert per_cpu == [calls.get(cpu, 0) for cpu in possible_cpus()]
    assert after.run_cnt - before.run_cnt >= sum(calls.values())
    assert after.run_time_ns > before.run_time_ns
    assert (after.id, after.tag, after.name) == (before.id, before.tag, before.name)
    assert len(after.tag) == 16 and int(after.tag, 16) >= 0
    assert after.name and after.name in PROBE.decode()  # BCC drops the tracepoint__ prefix


@pytest.mark.parametrize(
    ("layout", "btf_struct", "prefix"),
    [
        (syscall._ElemAttr, "bpf_attr", ""),
        (syscall._BatchAttr, "bpf_attr", "batch."),
        (syscall._InfoAttr, "bpf_attr", "info."),
        (syscall._TestRunAttr, "bpf_attr", "test."),
        (syscall._EnableStatsAttr, "bpf_attr", "enable_stats."),
        (syscall._MapInfo, "bpf_map_info", ""),
        (syscall._ProgInfo, "bpf_prog_info", ""),
    ],
)
def test_ctypes_layouts_match_the_running_kernel(
    layout: type[ct.Structure], btf_struct: str, prefix: str
) -> None:
    # The kernel describes its own uapi structs in BTF: every field we declare must sit
    # where the kernel reads it.
    btf = BTF.load()
    fields = [name for name, *_ in layout._fields_]

    ours = {name: getattr(layout, name).offset for name in fields}

    assert ours == {name: btf.member_offset(btf_struct, prefix + name) for name in fields}
