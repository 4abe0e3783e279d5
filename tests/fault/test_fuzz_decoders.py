"""Fuzzed decoders: random key bytes through every decoder of the registry, at every width it
accepts and with valid options, either decode to a str or raise a declared SkipSeries or
Unresolved; random option dicts make building a chain fail with DecoderError only.

1000 cases per decoder, derandomized. Host-state decoders read the real host (kallsyms, the
cgroup tree, sysfs, interfaces) except tracepoint, which gets a small tracefs tree: random ids
all miss, and a miss on the real tracefs re-reads ~2300 id files. The bugs this fuzzing found
(option types, huge regexp repeats) are fixed and pinned by the tests at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.decoders import (
    REGISTRY,
    Chain,
    DecoderError,
    SkipSeries,
    Unresolved,
    build_chain,
)

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

INTS = (1, 2, 4, 8)
ANY_WIDTH = st.integers(1, 64) | st.sampled_from([255, 256, 300, 4096])
INTEGER_TEXT = [{"name": "uint"}]  # what a text-input numeric decoder is fed in real configs


@pytest.fixture(scope="module")
def tracefs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tracefs")
    for event_id, event in ((1, "syscalls/sys_enter_getppid"), (300, "sched/sched_switch")):
        directory = root / "events" / event
        directory.mkdir(parents=True)
        (directory / "id").write_text(f"{event_id}\n")
    return root


# decoder -> its variants: (widths of the raw field, the label's decoder options). Every chain
# is decoded from raw key bytes of a drawn width; text-input decoders get their input from the
# decoder before them, as configs give it.
Options = list[dict[str, Any]]
Variant = tuple[st.SearchStrategy[int], Options]
UINT = st.sampled_from(INTS)


def _majorminor(_: Path) -> list[Variant]:
    return [
        (st.sampled_from([4, 8]), [{"name": "majorminor", **enc, **dev}])
        for enc in ({}, {"encoding": "kernel"}, {"encoding": "user"})
        for dev in ({}, {"device_name": True}, {"device_name": False})
    ]


def _syscall(_: Path) -> list[Variant]:
    arches: list[dict[str, Any]] = [{}, *({"arch": a} for a in ("x86_64", "arm64", "amd64"))]
    return [(UINT, [{"name": "syscall", **a}]) for a in arches] + [
        (UINT, [*INTEGER_TEXT, {"name": "syscall", **a}]) for a in arches
    ]


def _static_map(_: Path) -> list[Variant]:
    tables = [
        {"static_map": {1: "one", 2: "two", "0": "zero"}},
        {"static_map": {1: "one"}, "allow_unknown": True},
        {"static_map": {"é": "x", "": "empty"}, "allow_unknown": False},
    ]
    return (
        [(ANY_WIDTH, [{"name": "static_map", **t}]) for t in tables]
        + [(UINT, [{"name": "uint"}, {"name": "static_map", **t}]) for t in tables]
        + [
            (ANY_WIDTH, [{"name": first}, {"name": "static_map", **t}])
            for first in ("string", "hex")
            for t in tables
        ]
    )


def _regexp(_: Path) -> list[Variant]:
    patterns = [["^1"], ["[0-9]+$", "x"], [""], ["^$"], ["é|\\w+"], ["(a|b)*c"]]
    return [(ANY_WIDTH, [{"name": "regexp", "regexps": r}]) for r in patterns] + [
        (ANY_WIDTH, [{"name": "string"}, {"name": "regexp", "regexps": r}]) for r in patterns
    ]


def _tracepoint(root: Path) -> list[Variant]:
    return [
        (UINT, [{"name": "uint"}, {"name": "tracepoint", "tracefs": str(root)}]),
        (ANY_WIDTH, [{"name": "string"}, {"name": "tracepoint", "tracefs": str(root)}]),
    ]


def _only(widths: st.SearchStrategy[int], *chains: Options) -> Callable[[Path], list[Variant]]:
    return lambda _: [(widths, c) for c in chains]


VARIANTS: dict[str, Callable[[Path], list[Variant]]] = {
    "uint": _only(UINT, [{"name": "uint"}]),
    "hex": _only(ANY_WIDTH, [{"name": "hex"}], [{"name": "string"}, {"name": "hex"}]),
    "string": _only(ANY_WIDTH, [{"name": "string"}], [{"name": "hex"}, {"name": "string"}]),
    "dname": _only(ANY_WIDTH, [{"name": "dname"}]),
    "static_map": _static_map,
    "regexp": _regexp,
    "syscall": _syscall,
    "errno": _only(UINT, [{"name": "errno"}], [*INTEGER_TEXT, {"name": "errno"}]),
    "ksym": _only(st.just(8), [{"name": "ksym"}]),
    "majorminor": _majorminor,
    "inet_ip": _only(st.sampled_from([4, 16]), [{"name": "inet_ip"}]),
    "cgroup": _only(st.just(8), [{"name": "cgroup"}]),
    "k8s_namespace": _only(st.just(8), [{"name": "k8s_namespace"}]),
    "k8s_pod": _only(st.just(8), [{"name": "k8s_pod"}]),
    "k8s_container": _only(st.just(8), [{"name": "k8s_container"}]),
    "ifname": _only(st.just(4), [{"name": "ifname"}]),
    "tracepoint": _tracepoint,
}

# Chains keep host snapshots (kallsyms, cgroups): built once per variant and width, as the
# daemon builds them once per label.
_chains: dict[tuple[str, int, int], Chain] = {}


def chain(decoder: str, variant: int, width: int, tracefs: Path) -> Chain:
    key = (decoder, variant, width)
    if key not in _chains:
        _chains[key] = build_chain(VARIANTS[decoder](tracefs)[variant][1], width)
    return _chains[key]


def keys(width: int) -> st.SearchStrategy[bytes]:
    """Random bytes, and numbers in native byte order: small ones (ids, indexes, device and
    syscall numbers, errnos) and, for 8 bytes, kernel addresses."""
    numbers = st.integers(0, 2 ** (8 * width) - 1) | st.integers(-256, -1).map(
        lambda n: n % 2 ** (8 * width)
    )
    if width == 8:
        numbers |= st.integers(0xFFFFFFFF80000000, 2**64 - 1)
    return st.binary(min_size=width, max_size=width) | numbers.map(
        lambda n: n.to_bytes(width, sys.byteorder)
    )


def test_every_registered_decoder_is_fuzzed() -> None:
    assert set(VARIANTS) == set(REGISTRY)


@pytest.mark.parametrize("decoder", sorted(REGISTRY))
def test_random_keys(decoder: str, tracefs: Path) -> None:
    variants = VARIANTS[decoder](tracefs)

    @FUZZ
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        variant = data.draw(st.integers(0, len(variants) - 1), label="variant")
        width = data.draw(variants[variant][0], label="width")
        key = data.draw(keys(width), label="key")
        try:
            value = chain(decoder, variant, width, tracefs).decode(key)
        except SkipSeries:
            return
        except Unresolved as provisional:
            assert isinstance(provisional.value, bytes)
            return
        assert isinstance(value, str)
        value.encode("utf-8")  # a label value Prometheus can carry

    fuzz()


# --- building chains from random options ----------------------------------------------------

OPTION_KEYS = [
    "name",
    "static_map",
    "allow_unknown",
    "regexps",
    "arch",
    "encoding",
    "device_name",
    "sysfs",
    "kallsyms",
    "cgroupfs",
    "mounts",
    "tracefs",
    "pod_logs",
    "container_logs",
]
PATH_OPTIONS = {"sysfs", "kallsyms", "cgroupfs", "mounts", "tracefs", "pod_logs", "container_logs"}

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "x86_64",
            "arm64",
            "aarch64",
            "riscv",
            "kernel",
            "user",
            "",
            "/",
            "/nonexistent",
            "(",
            "[a-",
            "a{2,1}",
            "(?P<x>a)(?P<x>b)",
            "\\",
            "*",
            "é",
        ]
    ),
)
OPTION_VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.booleans()), children)
    ),
    max_leaves=8,
)
OPTIONS = st.builds(
    lambda name, extra: {**extra, "name": name} if name is not None else extra,
    st.one_of(st.sampled_from(sorted(REGISTRY)), st.none(), LEAVES),
    st.dictionaries(st.one_of(st.sampled_from(OPTION_KEYS), st.text(max_size=6)), OPTION_VALUES),
)
CHAIN_OPTIONS = st.lists(st.one_of(OPTIONS, LEAVES), max_size=3)


@FUZZ
@given(CHAIN_OPTIONS, st.integers(-2, 20) | st.sampled_from([64, 2**31, 2**64]))
def test_random_options_raise_only_decoder_error(options_list: list[Any], size: int) -> None:
    try:
        built = build_chain(options_list, size)
    except DecoderError as err:
        assert str(err)
        return
    assert isinstance(built, Chain)


# --- once bugs, now pinned ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "size"),
    [
        ([{"name": "ksym", "kallsyms": 5}], 8),
        ([{"name": "cgroup", "cgroupfs": 5}], 8),
        ([{"name": "cgroup", "mounts": [1]}], 8),
        ([{"name": "k8s_pod", "pod_logs": 5}], 8),
        ([{"name": "majorminor", "sysfs": True}], 4),
        ([{"name": "uint"}, {"name": "tracepoint", "tracefs": 5}], 4),
    ],
)
def test_a_path_option_of_another_type_is_a_decoder_error(
    options: list[dict[str, Any]], size: int
) -> None:
    # Once a TypeError from Path() that took the whole daemon down at start.
    with pytest.raises(DecoderError, match="bad options"):
        build_chain(options, size)


def test_a_huge_regexp_repeat_is_a_decoder_error() -> None:
    with pytest.raises(DecoderError):
        build_chain([{"name": "regexp", "regexps": ["a{4294967296}"]}], 4)


@pytest.mark.parametrize("decoder", ["errno", "syscall"])
def test_numeric_text_decoder_after_non_numeric_text_raises_value_error(decoder: str) -> None:
    # Chain.decode's contract: ValueError for a field that cannot be decoded (the collector
    # counts it in bcc_exporter_decoder_errors_total).
    with pytest.raises(ValueError):
        build_chain([{"name": "string"}, {"name": decoder}], 4).decode(b"ab\0\0")
