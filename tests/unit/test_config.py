"""exporter.config: YAML -> pydantic -> ProgramSpec, and one exact message per bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import BUILTIN_DIR, ProgramSpec, load, load_file, select
from exporter.errors import ConfigError
from exporter.privsep import selection
from exporter.probes import Probe

from ..conftest import run_cli

LATENCY_C = "BPF_HASH(bio_latency, u32, u64);\n"


def histogram(**overrides: Any) -> dict[str, Any]:
    h: dict[str, Any] = {
        "name": "bio_latency_seconds",
        "help": "Block I/O latency.",
        "map": "bio_latency",
        "bucket_type": "exp2",
        "bucket_min": 0,
        "bucket_max": 26,
        "bucket_multiplier": 0.000001,
        "labels": [{"name": "bucket", "size": 4, "decoders": [{"name": "uint"}]}],
    }
    h.update(overrides)
    return h


def program(**overrides: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": "bio",
        "code": LATENCY_C,
        "probes": [{"function": "on_issue", "attach": "tracepoint:block:block_rq_issue"}],
        "metrics": {"histograms": [histogram()]},
    }
    p.update(overrides)
    return {k: v for k, v in p.items() if v is not None}


def write(directory: Path, doc: Any, name: str = "bio.yaml") -> Path:
    path = directory / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def error_of(directory: Path, doc: Any) -> tuple[Path, str]:
    path = write(directory, doc)
    with pytest.raises(ConfigError) as e:
        load_file(path)
    return path, str(e.value)


def one_program(directory: Path, **overrides: Any) -> tuple[Path, str]:
    return error_of(directory, {"programs": [program(**overrides)]})


def one_histogram(directory: Path, **overrides: Any) -> tuple[Path, str]:
    return one_program(directory, metrics={"histograms": [histogram(**overrides)]})


# --- a valid config ---------------------------------------------------------------------------


def test_valid_native_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "opens.bpf.c").write_text("int opens;\n")
    doc = {
        "programs": [
            program(cflags=["-DTARGET=23"]),
            {
                "name": "opens",
                "source": "../programs/opens.bpf.c",
                "probes": [
                    {
                        "function": "on_open",
                        "attach": ["tracepoint:syscalls:sys_enter_open*", "kprobe:do_sys_openat2"],
                    }
                ],
                "metrics": {
                    "counters": [
                        {
                            "name": "opens_total",
                            "help": "Opens.",
                            "map": "opens",
                            "labels": [
                                {
                                    "name": "comm",
                                    "size": 16,
                                    "padding": 0,
                                    "decoders": [{"name": "string"}],
                                }
                            ],
                        }
                    ]
                },
            },
        ]
    }
    path = write(tmp_path / "conf", doc)
    monkeypatch.chdir("/")  # `source` is relative to the config file, not to the cwd

    bio, opens = load_file(path)

    assert bio.name == "bio"
    assert bio.code == LATENCY_C
    assert bio.origin == path
    assert bio.program.cflags == ["-DTARGET=23"]
    assert bio.program.probes[0].attach == [Probe("tracepoint", ("block", "block_rq_issue"))]
    h = bio.program.metrics.histograms[0]
    assert (h.bucket_type, h.bucket_min, h.bucket_max, h.bucket_multiplier, h.sum_key) == (
        "exp2",
        0,
        26,
        0.000001,
        None,
    )
    assert [d.name for d in h.labels[0].decoders] == ["uint"]

    assert opens.name == "opens"
    assert opens.code == "int opens;\n"
    assert opens.program.source == "../programs/opens.bpf.c"
    assert [str(p) for p in opens.program.probes[0].attach] == [
        "tracepoint:syscalls:sys_enter_open*",
        "kprobe:do_sys_openat2",
    ]
    assert opens.program.metrics.counters[0].labels[0].size == 16


def test_decoder_options_sit_beside_the_name(tmp_path: Path) -> None:
    labels = [
        {
            "name": "op",
            "size": 1,
            "padding": 3,
            "decoders": [{"name": "uint"}, {"name": "static_map", "static_map": {82: "read"}}],
        },
        {"name": "bucket", "size": 4, "decoders": [{"name": "uint"}]},
    ]
    doc = {"programs": [program(metrics={"histograms": [histogram(labels=labels)]})]}
    path = write(tmp_path, doc)
    (spec,) = load_file(path)
    decoders = spec.program.metrics.histograms[0].labels[0].decoders
    assert decoders[1].options == {"name": "static_map", "static_map": {82: "read"}}


@pytest.mark.parametrize("path", sorted(BUILTIN_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_builtin_config_loads(path: Path) -> None:
    (spec,) = load_file(path)
    assert spec.name == path.stem
    assert spec.code.strip()
    assert spec.program.metrics.all()


def test_no_flag_serves_every_builtin_program_not_marked_default_false(tmp_path: Path) -> None:
    every = load(config_paths(None, None, []))
    assert [s.name for s in select(None, None, [])] == [s.name for s in every if s.program.default]
    off = tmp_path / "off.yaml"
    off.write_text("programs: [{name: quiet, default: false, code: 'int x;'}]")
    # `default` only shapes the built-in set: a program named on the command line is served.
    assert [s.name for s in select(None, None, [off])] == ["quiet"]


def test_a_directory_without_configs_is_an_error_not_an_empty_set(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ConfigError) as e:
        select(tmp_path, None, [])
    assert str(e.value) == f"{tmp_path}: no programs to run: no *.yaml config in it"
    with pytest.raises(ConfigError) as e:
        select(tmp_path / "gone", None, [])
    assert str(e.value) == f"{tmp_path / 'gone'}: no programs to run: no such directory"


def test_a_builtin_set_of_programs_all_off_by_default_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "off.yaml").write_text("programs: [{name: quiet, default: false, code: 'int x;'}]")
    monkeypatch.setattr("exporter.config.BUILTIN_DIR", tmp_path)
    with pytest.raises(ConfigError) as e:
        select(None, None, [])
    assert str(e.value) == (
        f"{tmp_path}: every built-in program is marked `default: false`: "
        "name the ones to run with --config.names"
    )
    assert [s.name for s in select(None, ["off"], [])] == ["quiet"]


@pytest.mark.parametrize("command", [["--config.check"], []], ids=["check", "serve"])
def test_checking_or_serving_an_empty_set_exits_2(tmp_path: Path, command: list[str]) -> None:
    done = run_cli(*command, f"--config.dir={tmp_path}", "--web.listen-address=127.0.0.1:0")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[-1] == (
        f"bcc_exporter: {tmp_path}: no programs to run: no *.yaml config in it"
    )


# --- one exact message per bad input ----------------------------------------------------------


def test_unknown_bucket_type(tmp_path: Path) -> None:
    path, message = one_histogram(tmp_path, bucket_type="exp3")
    assert message == (
        f'{path}: program "bio": metrics.histograms[0].bucket_type: '
        "must be one of exp2, exp2zero, linear, fixed (got 'exp3')"
    )


def test_unknown_field_in_a_histogram(tmp_path: Path) -> None:
    path, message = one_histogram(tmp_path, bucket_maximum=26)
    assert message == f'{path}: program "bio": metrics.histograms[0].bucket_maximum: unknown field'


def test_unknown_field_in_a_label(tmp_path: Path) -> None:
    labels = [{"name": "bucket", "size": 4, "decoder": [{"name": "uint"}]}]
    path, message = one_histogram(tmp_path, labels=labels)
    # A misspelt field shows both sides: the field that is missing and the one that is not known.
    assert message == (
        f'{path}: program "bio": metrics.histograms[0].labels[0].decoders: required\n'
        f'{path}: program "bio": metrics.histograms[0].labels[0].decoder: unknown field'
    )


def test_unknown_field_in_a_program(tmp_path: Path) -> None:
    path, message = one_program(tmp_path, cflag=["-O2"])
    assert message == f'{path}: program "bio": cflag: unknown field'


def test_unknown_top_level_field(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, {"programs": [program()], "program": []})
    assert message == f"{path}: program: unknown field"


def test_missing_required_metric_field(tmp_path: Path) -> None:
    h = histogram()
    del h["help"]
    path, message = one_program(tmp_path, metrics={"histograms": [h]})
    assert message == f'{path}: program "bio": metrics.histograms[0].help: required'


def test_missing_program_name_names_the_index(tmp_path: Path) -> None:
    doc = {"programs": [program(), program(name=None)]}
    path, message = error_of(tmp_path, doc)
    assert message == f"{path}: programs[1]: name: required"


def test_missing_programs(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, {})
    assert message == f"{path}: programs: required"


def test_empty_file(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "")
    assert message == f"{path}: must be a mapping (got nothing)"


def test_program_that_is_not_a_mapping(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, {"programs": ["bio"]})
    assert message == f"{path}: programs[0]: must be a mapping (got str)"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "programs:\n  - name: bio\n    code: x\n   bad: 1\n")
    assert message == (
        f"{path}: line 4: invalid YAML: expected <block end>, but found '<block mapping start>'"
    )


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        load_file(path)
    assert str(e.value) == f"{path}: cannot read config: No such file or directory"


def test_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bio.yaml"
    path.write_bytes(b"# caf\xe9\nprograms: []\n")
    with pytest.raises(ConfigError) as e:
        load_file(path)
    assert str(e.value) == f"{path}: cannot read config: not UTF-8 (byte 5)"


def test_missing_source_file(tmp_path: Path) -> None:
    path, message = one_program(tmp_path, code=None, source="bio.bpf.c")
    assert message == (
        f'{path}: program "bio": source: cannot read {tmp_path / "bio.bpf.c"}: '
        "No such file or directory"
    )


def test_unreadable_source_file(tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()  # readable by nobody as a file, even by root
    path, message = one_program(tmp_path, code=None, source="programs")
    assert message == (
        f'{path}: program "bio": source: cannot read {tmp_path / "programs"}: Is a directory'
    )


def test_source_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bio.bpf.c").write_bytes(b"// \xff\n")
    path, message = one_program(tmp_path, code=None, source="bio.bpf.c")
    assert message == (
        f'{path}: program "bio": source: cannot read {tmp_path / "bio.bpf.c"}: not UTF-8 (byte 3)'
    )


def test_both_code_and_source(tmp_path: Path) -> None:
    (tmp_path / "bio.bpf.c").write_text(LATENCY_C)
    path, message = one_program(tmp_path, source="bio.bpf.c")
    assert message == (
        f'{path}: program "bio": give exactly one of code (inline C) or source (a file)'
    )


def test_neither_code_nor_source(tmp_path: Path) -> None:
    path, message = one_program(tmp_path, code=None)
    assert message == (
        f'{path}: program "bio": give exactly one of code (inline C) or source (a file)'
    )


def test_duplicate_program_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, {"programs": [program()]}, "a.yaml")
    second = write(tmp_path, {"programs": [program(name="other"), program()]}, "b.yaml")
    with pytest.raises(ConfigError) as e:
        load([first, second])
    assert str(e.value) == f'{second}: program "bio": name: already defined in {first}'


def test_duplicate_program_names_in_one_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"programs": [program(), program()]})
    with pytest.raises(ConfigError) as e:
        load([path])
    assert str(e.value) == f'{path}: program "bio": name: already defined in {path}'


def test_duplicate_metric_names(tmp_path: Path) -> None:
    counter = {"name": "bio_latency_seconds", "help": "h", "map": "m"}
    path, message = one_program(
        tmp_path, metrics={"counters": [counter], "histograms": [histogram()]}
    )
    assert message == f'{path}: program "bio": metrics: duplicate metric names bio_latency_seconds'


@pytest.mark.parametrize("bucket_type", ["exp2", "exp2zero", "linear"])
def test_histogram_without_bucket_max(tmp_path: Path, bucket_type: str) -> None:
    h = histogram(bucket_type=bucket_type)
    del h["bucket_max"]
    path, message = one_program(tmp_path, metrics={"histograms": [h]})
    assert message == (
        f'{path}: program "bio": metrics.histograms[0].bucket_max: '
        f"required for bucket_type {bucket_type}"
    )


def test_bucket_max_below_bucket_min(tmp_path: Path) -> None:
    path, message = one_histogram(tmp_path, bucket_min=5, bucket_max=4)
    assert message == (
        f'{path}: program "bio": metrics.histograms[0].bucket_max: must not be below bucket_min'
    )


def test_fixed_without_bucket_keys(tmp_path: Path) -> None:
    path, message = one_histogram(tmp_path, bucket_type="fixed")
    assert message == (
        f'{path}: program "bio": metrics.histograms[0].bucket_keys: required for bucket_type fixed'
    )


@pytest.mark.parametrize("keys", [[100, 1000, 500], [100, 100, 1000]])
def test_fixed_bucket_keys_must_increase(tmp_path: Path, keys: list[int]) -> None:
    path, message = one_histogram(tmp_path, bucket_type="fixed", bucket_keys=keys)
    assert message == (
        f'{path}: program "bio": metrics.histograms[0].bucket_keys: must be strictly increasing'
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"sum_key": 26},
        {"sum_key": 0},
        {"bucket_type": "fixed", "bucket_keys": [100, 1000], "sum_key": 1000},
    ],
)
def test_sum_key_must_not_be_a_bucket_key(tmp_path: Path, overrides: dict[str, Any]) -> None:
    path, message = one_histogram(tmp_path, **overrides)
    assert message == (
        f'{path}: program "bio": metrics.histograms[0].sum_key: must not be one of the bucket keys'
    )


def test_sum_key_beside_the_buckets_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, {"programs": [program(metrics={"histograms": [histogram(sum_key=27)]})]})
    (spec,) = load_file(path)
    assert spec.program.metrics.histograms[0].sum_key == 27


def test_histogram_needs_its_bucket_label(tmp_path: Path) -> None:
    path, message = one_histogram(tmp_path, labels=[])
    assert message == (
        f'{path}: program "bio": metrics.histograms[0].labels: '
        "a histogram needs at least its bucket label (the last one)"
    )


@pytest.mark.parametrize("kind", ["counters", "gauges", "histograms"])
def test_reserved_metric_name_prefix(tmp_path: Path, kind: str) -> None:
    metric = (
        histogram(name="exporter_bio")
        if kind == "histograms"
        else {"name": "exporter_bio", "help": "h", "map": "m"}
    )
    path, message = one_program(tmp_path, metrics={kind: [metric]})
    assert message == (
        f'{path}: program "bio": metrics.{kind}[0].name: '
        "names starting with 'exporter_' are the exporter's own"
    )


def test_bad_probe_names_program_and_attach_index(tmp_path: Path) -> None:
    probes = [{"function": "f", "attach": ["tracepoint:block:block_rq_issue", "kprobe"]}]
    path, message = one_program(tmp_path, probes=probes)
    assert message == (
        f"{path}: program \"bio\": probes[0].attach[1]: 'kprobe': expected kprobe:FUNCTION"
    )


def test_probe_that_is_not_a_string(tmp_path: Path) -> None:
    path, message = one_program(tmp_path, probes=[{"function": "f", "attach": [23]}])
    assert message == (
        f'{path}: program "bio": probes[0].attach[0]: '
        "a probe is a string such as tracepoint:block:block_rq_issue"
    )


def test_every_problem_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """Two programs, one problem each: one line each, in order, naming file and program."""
    good = program()
    bad = program(name="runq", metrics={"histograms": [histogram(bucket_type="exp3")]})
    del good["code"]
    path, message = error_of(tmp_path, {"programs": [good, bad]})
    assert message.splitlines() == [
        f'{path}: program "bio": give exactly one of code (inline C) or source (a file)',
        f'{path}: program "runq": metrics.histograms[0].bucket_type: '
        "must be one of exp2, exp2zero, linear, fixed (got 'exp3')",
    ]


# --- config_paths -----------------------------------------------------------------------------


def config_paths(directory: Path | None, names: list[str] | None, files: list[Path]) -> list[Path]:
    found = selection.config_paths(
        str(directory) if directory else None,
        names or (),
        [str(f) for f in files],
        str(BUILTIN_DIR),
    )
    return [Path(f) for f in found]


def test_paths_without_flags_are_every_builtin_config() -> None:
    assert config_paths(None, None, []) == sorted(BUILTIN_DIR.glob("*.yaml"))


def test_paths_of_a_dir_are_every_yaml_in_it_sorted(tmp_path: Path) -> None:
    for name in ("zeta.yaml", "alpha.yaml", "mid.yaml", "notes.txt", "old.yml"):
        (tmp_path / name).write_text("")
    assert config_paths(tmp_path, None, []) == [
        tmp_path / "alpha.yaml",
        tmp_path / "mid.yaml",
        tmp_path / "zeta.yaml",
    ]


def test_paths_of_names_in_a_dir(tmp_path: Path) -> None:
    assert config_paths(tmp_path, ["zeta", "alpha"], []) == [
        tmp_path / "zeta.yaml",
        tmp_path / "alpha.yaml",
    ]


def test_paths_of_names_default_to_the_builtin_dir() -> None:
    assert config_paths(None, ["opens"], []) == [BUILTIN_DIR / "opens.yaml"]


def test_paths_of_files_only_are_just_the_files(tmp_path: Path) -> None:
    files = [tmp_path / "b.yaml", tmp_path / "a.yaml"]
    assert config_paths(None, None, files) == files


def test_paths_of_files_and_a_dir(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("")
    extra = Path("/etc/extra.yaml")
    assert config_paths(tmp_path, None, [extra]) == [extra, tmp_path / "a.yaml"]


# --- ProgramSpec.digest -----------------------------------------------------------------------


def spec_of(directory: Path, doc_program: dict[str, Any], name: str = "bio.yaml") -> ProgramSpec:
    directory.mkdir(parents=True, exist_ok=True)
    (spec,) = load_file(write(directory, {"programs": [doc_program]}, name))
    return spec


def test_digest_is_equal_for_identical_definitions(tmp_path: Path) -> None:
    a = spec_of(tmp_path / "a", program())
    b = spec_of(tmp_path / "b", program(), "other.yaml")
    assert a.origin != b.origin
    assert a.digest == b.digest
    assert len(a.digest) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"code": LATENCY_C + "// changed\n"},
        {"cflags": ["-DX=1"]},
        {"metrics": {"histograms": [histogram(help="Changed help.")]}},
        {"metrics": {"histograms": [histogram(bucket_max=25)]}},
        {"probes": [{"function": "on_issue", "attach": "tracepoint:block:block_rq_insert"}]},
    ],
    ids=["code", "cflags", "metric-help", "metric-buckets", "probe"],
)
def test_digest_changes_with_the_definition(tmp_path: Path, change: dict[str, Any]) -> None:
    before = spec_of(tmp_path / "a", program())
    assert spec_of(tmp_path / "b", program(**change)).digest != before.digest


def test_digest_ignores_the_source_path_name(tmp_path: Path) -> None:
    (tmp_path / "old.bpf.c").write_text(LATENCY_C)
    (tmp_path / "new.bpf.c").write_text(LATENCY_C)
    old = spec_of(tmp_path, program(code=None, source="old.bpf.c"), "a.yaml")
    new = spec_of(tmp_path, program(code=None, source="./new.bpf.c"), "b.yaml")
    assert old.digest == new.digest


def test_digest_of_a_source_file_equals_that_of_the_same_code_inline(tmp_path: Path) -> None:
    (tmp_path / "bio.bpf.c").write_text(LATENCY_C)
    from_file = spec_of(tmp_path, program(code=None, source="bio.bpf.c"), "a.yaml")
    inline = spec_of(tmp_path, program(), "b.yaml")
    assert from_file.code == inline.code
    assert from_file.digest == inline.digest


def test_digest_follows_the_source_file_contents(tmp_path: Path) -> None:
    source = tmp_path / "bio.bpf.c"
    source.write_text(LATENCY_C)
    before = spec_of(tmp_path, program(code=None, source="bio.bpf.c")).digest
    source.write_text(LATENCY_C + "// edited\n")
    assert spec_of(tmp_path, program(code=None, source="bio.bpf.c")).digest != before
