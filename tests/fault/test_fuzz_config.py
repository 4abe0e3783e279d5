"""Fuzzed config files: loading one either succeeds or raises ConfigError, never anything else.

Four sources of files, 1000 cases each (derandomized, so CI sees the same cases every run):
arbitrary text and bytes, YAML-looking token soup, random data structures dumped as YAML, and
valid native/v1 configs with random mutations (wrong types, bad probe strings, bad bucket
types, huge numbers, unicode, deep nesting). A handful of bad files also go through the CLI:
exit code 2 and no traceback.

The bugs this fuzzing found (huge bucket ranges, NUL in paths, PyYAML errors other than
YAMLError) are fixed and pinned by the tests at the end.
"""

from __future__ import annotations

import copy
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exporter.config import load_file
from exporter.errors import ConfigError
from exporter.probes import GRAMMAR, HARDWARE_EVENTS, SOFTWARE_EVENTS

from ..conftest import REPO

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Beyond this, a histogram's bucket range is materialized as a list by the config validator.
RANGE_BOMB = 10**6
MEMORY_CAP = 2 << 30  # bytes of address space a fuzz case may add before it is a bug itself


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_config")


@pytest.fixture(scope="module", autouse=True)
def capped_memory() -> Iterator[None]:
    """A config that makes the loader allocate gigabytes fails as MemoryError instead of taking
    the machine down; the soft limit is restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm_kb = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmSize:")
    )
    cap = vm_kb * 1024 + MEMORY_CAP
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def load(path: Path) -> None:
    """The property: success or ConfigError; any other exception fails the test."""
    try:
        load_file(path)
    except ConfigError as err:
        assert str(err), "a ConfigError must say what is wrong"


# --- strategies ----------------------------------------------------------------------------

# Fields of both formats, so random dicts sometimes look like configs.
KEYS = [
    "programs",
    "name",
    "code",
    "source",
    "cflags",
    "kaddrs",
    "namespace",
    "default",
    "reads_kernel_structs",
    "probes",
    "function",
    "attach",
    "metrics",
    "counters",
    "gauges",
    "histograms",
    "help",
    "map",
    "perf_map",
    "labels",
    "size",
    "padding",
    "decoders",
    "bucket_type",
    "bucket_min",
    "bucket_max",
    "bucket_keys",
    "bucket_multiplier",
    "sum_key",
    "table",
    "kprobes",
    "kretprobes",
    "tracepoints",
    "raw_tracepoints",
    "perf_events",
    "type",
    "target",
    "sample_period",
    "sample_frequency",
    "static_map",
    "regexps",
]

HUGE = st.sampled_from(
    [0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30, 10**300]
)


def probe_strings() -> st.SearchStrategy[str]:
    kinds = st.sampled_from([*GRAMMAR, "", "TRACEPOINT", "uprobes", "tracepoint "])
    words = st.one_of(
        st.sampled_from(
            [
                "",
                "*",
                "hz",
                "syscalls",
                "sys_enter_open*",
                "/bin/bash",
                "bin/bash",
                "readline",
                "0",
                "-1",
                "49",
                "99999999999999999999",
                "٣",
                "cpu-clock",
                "cycles",
                "nope",
                "a:b",
            ]
        ),
        st.text(max_size=12),
        st.sampled_from(list(SOFTWARE_EVENTS) + list(HARDWARE_EVENTS)),
    )
    return st.builds(
        lambda kind, fields, sep: sep.join([kind, *fields]),
        kinds,
        st.lists(words, max_size=4),
        st.sampled_from([":", ":", ":", "::", " : "]),
    )


NASTY_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "exp2",
        "exp2zero",
        "linear",
        "fixed",
        "exp3",
        "EXP2",
        "uint",
        "exporter_x",
        "_",
        "1name",
        "é",
        "名前",
        "😀",
        "\u200b",
        "\u0000",
        "\x7f",
        "a" * 300,
        "!!python/object:os.system",
        "~",
        "null",
        "yes",
        "0x10",
        "1e400",
        "-0",
        "../../../../etc/passwd",
        "/",
        ".",
    ]
)

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    NASTY_STRINGS,
    probe_strings(),
)

VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(), st.booleans()),
            children,
            max_size=5,
        ),
    ),
    max_leaves=24,
)


def nested(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"programs": leaf}
    return leaf


DEEP = st.builds(nested, st.integers(0, 60), LEAVES)

NATIVE = {
    "programs": [
        {
            "name": "p",
            "code": "BPF_HASH(h, u32, u64);",
            "cflags": ["-DX=1"],
            "probes": [
                {
                    "function": "f",
                    "attach": ["tracepoint:syscalls:sys_enter_getppid", "kprobe:__x64_sys_getppid"],
                }
            ],
            "metrics": {
                "counters": [
                    {
                        "name": "c_total",
                        "help": "h",
                        "map": "h",
                        "labels": [
                            {
                                "name": "n",
                                "size": 4,
                                "decoders": [
                                    {"name": "uint"},
                                    {"name": "static_map", "static_map": {1: "one"}},
                                ],
                            }
                        ],
                    }
                ],
                "gauges": [{"name": "g", "help": "h", "map": "h"}],
                "histograms": [
                    {
                        "name": "lat",
                        "help": "h",
                        "map": "hist",
                        "bucket_type": "exp2",
                        "bucket_min": 0,
                        "bucket_max": 26,
                        "sum_key": 30,
                        "bucket_multiplier": 0.000001,
                        "labels": [{"name": "bucket", "size": 8, "decoders": [{"name": "uint"}]}],
                    },
                    {
                        "name": "fixed",
                        "help": "h",
                        "map": "hist2",
                        "bucket_type": "fixed",
                        "bucket_keys": [1, 2, 4],
                        "labels": [{"name": "bucket", "size": 4, "decoders": [{"name": "uint"}]}],
                    },
                ],
            },
        }
    ]
}

V1 = {
    "programs": [
        {
            "name": "p",
            "code": "int f(void *ctx) { return 0; }",
            "tracepoints": {"syscalls:sys_enter_getppid": "f"},
            "kprobes": {"vfs_read": "f"},
            "perf_events": [{"type": 1, "name": 0, "target": "f", "sample_frequency": 49}],
            "metrics": {
                "counters": [
                    {
                        "name": "c_total",
                        "help": "h",
                        "table": "t",
                        "labels": [{"name": "n", "size": 8, "decoders": [{"name": "ksym"}]}],
                    }
                ],
                "histograms": [
                    {
                        "name": "lat",
                        "help": "h",
                        "table": "hist",
                        "bucket_type": "exp2",
                        "bucket_min": 0,
                        "bucket_max": 26,
                        "labels": [{"name": "bucket", "size": 8, "decoders": [{"name": "uint"}]}],
                    }
                ],
            },
        }
    ]
}


def _slots(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every value in a document (dict keys and list indexes)."""
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _slots(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _slots(v, (*path, i))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from([NATIVE, V1])))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _slots(doc) if p]
        if not paths:
            break
        # Mostly leaves, so that most mutants get past the first checks to the deeper ones.
        leaves = [p for p in paths if not isinstance(_parent(doc, p)[p[-1]], dict | list)]
        path = draw(st.sampled_from(leaves if leaves and draw(st.integers(0, 4)) else paths))
        parent, last = _parent(doc, path), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[last] = draw(st.one_of(VALUES, DEEP, probe_strings()))
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)))] = draw(VALUES)
        else:
            parent.append(draw(VALUES))
    return doc


TOKENS = st.sampled_from(
    [
        *(f"{k}:" for k in KEYS),
        "\n",
        "\n  ",
        "\n    ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ",",
        ": ",
        "&a ",
        "*a",
        "!!str ",
        "!!int ",
        "!!binary ",
        "!!python/tuple ",
        "|",
        ">-",
        "'",
        '"',
        "#",
        "---",
        "...",
        "%YAML 1.1",
        "? ",
        "<<: ",
        "tracepoint:syscalls:sys_enter_getppid",
        "exp2",
        "99999999999999999999999",
        "-1",
        ".nan",
        ".inf",
        "é",
        "\t",
        "\x00",
        "\ufeff",
    ]
)


def dump(doc: Any) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(doc, Dumper=dumper, allow_unicode=True, sort_keys=False)


# --- the fuzz tests ------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.text(), st.binary()))
def test_arbitrary_text_or_bytes(workdir: Path, data: str | bytes) -> None:
    path = workdir / "arbitrary.yaml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    load(path)


@FUZZ
@given(st.lists(st.one_of(TOKENS, st.text(max_size=6)), max_size=40))
def test_token_soup(workdir: Path, tokens: list[str]) -> None:
    text = "".join(tokens)
    path = workdir / "soup.yaml"
    path.write_text(text, encoding="utf-8")
    load(path)


@FUZZ
@given(st.one_of(VALUES, DEEP, st.fixed_dictionaries({"programs": VALUES})))
def test_random_structures(workdir: Path, doc: Any) -> None:
    path = workdir / "structure.yaml"
    path.write_text(dump(doc), encoding="utf-8")
    load(path)


@FUZZ
@given(mutated())
def test_mutated_valid_configs(workdir: Path, doc: Any) -> None:
    path = workdir / "mutated.yaml"
    path.write_text(dump(doc), encoding="utf-8")
    load(path)


def test_templates_are_valid(workdir: Path) -> None:
    """The mutations start from configs that load, so they probe beyond the first check."""
    for name, doc in (("native", NATIVE), ("v1", V1)):
        path = workdir / f"{name}.yaml"
        path.write_text(dump(doc))
        assert [s.name for s in load_file(path)] == ["p"]


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", f"--config.file={path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(st.one_of(mutated(), st.fixed_dictionaries({"programs": VALUES})))
def test_cli_exits_2_without_traceback(workdir: Path, doc: Any) -> None:
    path = workdir / "cli.yaml"
    path.write_text(dump(doc), encoding="utf-8")
    try:
        load_file(path)
    except ConfigError:
        pass
    else:
        assume(False)  # a valid config would be compiled: not this test's business
    done = run_check(path)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert re.search(rf"^bcc_exporter: {re.escape(str(path))}: ", done.stderr, re.M), done.stderr


# --- once bugs, now pinned: each used to escape as another exception ---------------------

HISTOGRAM = """
programs:
  - name: p
    code: x
    metrics:
      histograms:
        - name: lat
          help: h
          map: m
          bucket_type: linear
          bucket_max: {bucket_max}
          sum_key: -1
          labels: [{{name: bucket, size: 8, decoders: [{{name: uint}}]}}]
"""


@pytest.mark.parametrize("bucket_max", [10**9, 10**30])
def test_huge_bucket_range_is_a_config_error(workdir: Path, bucket_max: int) -> None:
    # Once built the whole range as a list: ~36 GB for 10**9 (every v1 histogram has a sum_key).
    path = workdir / "range.yaml"
    path.write_text(HISTOGRAM.format(bucket_max=bucket_max))
    with pytest.raises(ConfigError, match="at most 4096 buckets"):
        load_file(path)


def test_nul_in_source_path_is_a_config_error(workdir: Path) -> None:
    path = workdir / "nul.yaml"
    path.write_text('programs:\n  - name: p\n    source: "a\\0b"\n')
    with pytest.raises(ConfigError, match="embedded null byte"):
        load_file(path)


def test_a_device_as_source_is_refused_not_read_forever(workdir: Path) -> None:
    path = workdir / "zero.yaml"
    path.write_text("programs:\n  - name: p\n    source: /dev/zero\n")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_file(path)


DEEP_YAML = "programs: " + "[" * 3000 + "]" * 3000 + "\n"


def test_deeply_nested_yaml_is_a_config_error(workdir: Path) -> None:
    path = workdir / "deep.yaml"
    path.write_text(DEEP_YAML)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_file(path)


@pytest.mark.parametrize("text", ["programs: !!int x\n", "programs: !!int\n", "a: !!float x\n"])
def test_yaml_errors_other_than_yamlerror_are_config_errors(workdir: Path, text: str) -> None:
    path = workdir / "tagged.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_file(path)


def test_deeply_nested_yaml_on_the_command_line_exits_2(workdir: Path) -> None:
    path = workdir / "deep_cli.yaml"
    path.write_text(DEEP_YAML)
    done = run_check(path)
    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
