"""exporter.bpftrace: parsing, diagnostics, and what a script translates into (C and the
native metrics), against a tracefs made of the kernel's own format files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import tracefs
from exporter.bpf.btf import Kind
from exporter.bpftrace import ast, task
from exporter.bpftrace.config import BpftraceProgram, Diagnostic, to_native
from exporter.bpftrace.diagnostics import Origin, ScriptError, render
from exporter.bpftrace.parser import parse
from exporter.bpftrace.tracefs import parse_format
from exporter.bpftrace.types import Integer, String
from exporter.btf.kernel import KernelBTF
from exporter.config import load
from exporter.errors import ConfigError

from .test_btf import Blob
from .test_elf import with_notes

COMMON = """\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
"""
# As Linux 6.18 shows them (syscall arguments are 8 bytes, whatever their declared type).
FORMATS = {
    "syscalls/sys_enter_openat": COMMON + "\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n"
    "\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n",
    "syscalls/sys_enter_open": COMMON
    + "\tfield:const char * filename;\toffset:16;\tsize:8;\tsigned:0;\n",
    "syscalls/sys_exit_openat": COMMON + "\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n",
    "syscalls/sys_enter_write": COMMON + "\tfield:size_t count;\toffset:32;\tsize:8;\tsigned:0;\n",
    "sched/sched_switch": "\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n"
    "\tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;\n",
}


@pytest.fixture(autouse=True)
def fake_tracefs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tracing"
    for number, (event, fields) in enumerate(FORMATS.items()):
        directory = root / "events" / event
        directory.mkdir(parents=True)
        (directory / "id").write_text(f"{700 + number}\n")
        (directory / "format").write_text(f'name: {event}\nformat:\n{fields}\nprint fmt: ""\n')
    monkeypatch.setattr(tracefs, "TRACEFS", root)
    return root


@pytest.fixture(autouse=True)
def fake_btf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel whose task_struct has a signed pid, a comm and a pointer to its parent."""
    blob = Blob()
    signed = blob.add(Kind.INT, "int", 4, tail=blob.u32((1 << 24) | 32))
    char = blob.add(Kind.INT, "char", 1, tail=blob.u32(8))
    comm = blob.add(Kind.ARRAY, "", 0, tail=blob.u32(char, signed, 16))
    pointer = blob.add(Kind.PTR, "", 5)  # to the struct, the next type
    blob.struct(
        "task_struct", 32, [("pid", signed, 0), ("comm", comm, 32), ("real_parent", pointer, 192)]
    )
    (tmp_path / "vmlinux").write_bytes(blob.build())
    monkeypatch.setattr(task, "KernelBTF", lambda: KernelBTF(root=tmp_path, release="test"))


def native(script: str, **program: Any) -> dict[str, Any]:
    model = BpftraceProgram.model_validate({"name": "p", "bpftrace": script, **program})
    return to_native(model, script, Origin("t.bt"))


def metrics(script: str, **program: Any) -> dict[str, Any]:
    return {m["name"]: m for kind in native(script, **program)["metrics"].values() for m in kind}


def error(script: str) -> str:
    with pytest.raises(Diagnostic) as caught:
        native(script)
    return str(caught.value)


# -- parsing


def test_operators_bind_as_in_c() -> None:
    probe = parse("t:a:b /1 + 2 * 3 < 4 && 5/ { @x = count(); }").probes[0]
    assert isinstance(probe.predicate, ast.Binary) and probe.predicate.op == "&&"
    less = probe.predicate.left
    assert isinstance(less, ast.Binary) and less.op == "<"
    plus = less.left
    assert isinstance(plus, ast.Binary) and plus.op == "+"
    assert isinstance(plus.right, ast.Binary) and plus.right.op == "*"


def test_a_predicate_ends_at_its_slash_and_divides_in_parentheses() -> None:
    probe = parse("t:a:b /(pid / 2) == 1/ { @x = count() }").probes[0]
    assert isinstance(probe.predicate, ast.Binary)
    assert isinstance(probe.predicate.left, ast.Binary) and probe.predicate.left.op == "/"


def test_several_probes_share_a_block() -> None:
    probe = parse("tracepoint:a:b, rawtracepoint:c { @x = count(); }").probes[0]
    assert [a.text for a in probe.attach] == ["tracepoint:a:b", "rawtracepoint:c"]


def test_a_parse_error_is_position_line_and_caret() -> None:
    script = "t:a:b {\n  @x = count( }"
    with pytest.raises(ScriptError) as caught:
        parse(script)
    assert render(caught.value, script, Origin("f.bt")) == (
        "f.bt:2:15: error: syntax error: unexpected '}', expected an expression\n"
        "  @x = count( }\n"
        "              ^"
    )


def test_an_unknown_function_is_underlined() -> None:
    assert error("tracepoint:syscalls:sys_enter_open {\n  @x = foo(1);\n}") == (
        't.bt:2:8: error: foo() is not supported (program "p")\n  @x = foo(1);\n       ^~~~~~'
    )


@pytest.mark.parametrize(
    ("script", "message", "caret"),
    [
        ('printf("x")', "printf() has no meaning in an exporter", "^~~~~~~~~~~"),
        ("exit()", "exit() has no meaning in an exporter", "^~~~~~"),
        ("@x++", "'++' is not supported", "  ^~"),
        ("while (pid) { @x = count() }", "'while' is not supported", "^~~~~"),
        ("@x = retval", "the retval builtin can only be used with kretprobe", "     ^~~~~~"),
        ("@x = arg0", "arg0 is not available in tracepoints: use args->field", "     ^~~~"),
        ("@x = pid ? comm : comm", "a ternary of strings is not supported", "     ^" + "~" * 16),
        ("@x = curtask->comm", "curtask->comm is an array or a struct", "     ^" + "~" * 12),
        (
            "@x = curtask->nope",
            "curtask: struct task_struct, field nope: struct task_struct has no member nope "
            "(BTF of kernel test)",
            "     ^" + "~" * 12,
        ),
        (
            "@x = curtask.pid",
            "struct fields are supported on args-> and curtask-> only",
            " " * 12 + "^",
        ),
        ("@x = lhist(1, -1, 10, 1)", "lhist() min must be non-negative", " " * 14 + "^~"),
        ("@" + "a" * 30 + " = count()", "map names of up to 25 characters", "^" + "~" * 30),
        (
            "@x = args->nope",
            "tracepoint:syscalls:sys_enter_open has no field 'nope'",
            "     ^~~~~~~~~~",
        ),
    ],
)
def test_unsupported_constructs_are_refused_where_they_are(
    script: str, message: str, caret: str
) -> None:
    text = error(f"tracepoint:syscalls:sys_enter_open {{ {script}; }}")
    head, line, mark = text.split("\n")
    assert head.startswith("t.bt:1:") and message in head
    assert mark == " " * (len("tracepoint:syscalls:sys_enter_open { ")) + caret


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ("BEGIN", "BEGIN probes have no meaning in an exporter"),
        ("interval:s:1", "interval probes have no meaning in an exporter"),
        ("fentry:vfs_read", "fentry probes are not supported: tracepoint, rawtracepoint, uprobe"),
        ("uprobe:bash:readline", "'uprobe:bash:readline': the binary must be an absolute path"),
        ("uprobe:/bin/bash:read*", "wildcards in uprobe probes are not supported"),
        ("profile:ms:10", "expected profile:hz:RATE"),
    ],
)
def test_probes_outside_the_subset_are_refused(probe: str, message: str) -> None:
    assert message in error(f"{probe} {{ @x = count(); }}").split("\n")[0]


def test_a_script_on_a_tracepoint_this_kernel_lacks_is_bound_to_it_and_nothing_else() -> None:
    done = native(
        "tracepoint:syscalls:sys_enter_openat { @x = count(); }\n"
        "tracepoint:nope:none { @y[args->field] = count(); }"
    )
    assert done["probes"] == [{"function": "bt_unavailable", "attach": "tracepoint:nope:none"}]
    assert "bt_unavailable" in done["code"] and "BPF_HASH" not in done["code"]


# -- maps and metrics


def test_counter_names_labels_and_scratch_maps() -> None:
    found = metrics(
        "tracepoint:syscalls:sys_enter_openat {\n"
        "    @start[tid] = nsecs; @opens[comm, str(args->filename)] = count();\n"
        "}\n"
        "tracepoint:syscalls:sys_exit_openat /@start[tid]/ {\n"
        "    @ = sum(nsecs - @start[tid]); delete(@start[tid]);\n"
        "}"
    )
    assert sorted(found) == ["p_opens_total", "p_total"]  # @start is scratch
    opens = found["p_opens_total"]
    assert opens["map"] == "at_opens"
    assert [(lab["name"], lab["size"], lab["decoders"]) for lab in opens["labels"]] == [
        ("comm", 16, [{"name": "string"}]),
        ("filename", 64, [{"name": "string"}]),
    ]
    assert found["p_total"]["labels"] == []


def test_label_names_from_key_expressions() -> None:
    found = metrics(
        "tracepoint:syscalls:sys_exit_openat { @a[pid, pid, args->ret < 0, args->ret] = count(); }"
    )
    labels = found["p_a_total"]["labels"]
    assert [lab["name"] for lab in labels] == ["pid", "key1", "key2", "ret"]
    # bpftrace 0.17 prints every integer key signed, unsigned ones (pid) too: @[2**64 - 1] is @[-1].
    assert labels[3]["decoders"] == [{"name": "uint", "signed": True}]
    assert labels[0]["decoders"] == [{"name": "uint", "signed": True}]


def test_probe_label_of_a_wildcard_names_each_tracepoint() -> None:
    found = metrics("tracepoint:syscalls:sys_enter_open* { @[probe] = count(); }")
    (label,) = found["p_total"]["labels"]
    assert label["decoders"][1] == {
        "name": "static_map",
        "static_map": {
            0: "tracepoint:syscalls:sys_enter_open",
            1: "tracepoint:syscalls:sys_enter_openat",
        },
    }


def test_hist_and_lhist_bucket_bounds() -> None:
    found = metrics(
        "tracepoint:syscalls:sys_enter_write {\n"
        "    @h = hist(args->count); @l[comm] = lhist(args->count, 100, 1050, 100);\n"
        "}"
    )
    assert found["p_h"]["bucket_type"] == "fixed"
    assert found["p_h"]["bucket_keys"][:5] == [0, 1, 2, 4, 8]
    assert found["p_h"]["bucket_keys"][-1] == 2**31
    # (1050 - 100) // 100 = 9 buckets past min, as bpftrace counts them.
    assert found["p_l"]["bucket_keys"] == [100 * i for i in range(1, 11)]
    assert [lab["name"] for lab in found["p_l"]["labels"]] == ["comm", "bucket"]


def test_listed_maps_are_exported_with_their_settings() -> None:
    found = metrics(
        "tracepoint:syscalls:sys_enter_openat {\n"
        "    @start[tid] = nsecs; @lat = hist(nsecs - @start[tid]);\n"
        "}",
        metrics=[
            {"map": "@start", "help": "pending opens", "labels": {"tid": "thread"}},
            {"map": "@lat", "unit": "nanoseconds"},
        ],
    )
    assert found["p_start"]["help"] == "pending opens"
    assert found["p_start"]["labels"][0]["name"] == "thread"
    assert found["p_lat_seconds"]["bucket_multiplier"] == 1e-9


@pytest.mark.parametrize(
    ("listed", "message"),
    [
        ({"map": "@nope"}, "metrics: map: the script has no map @nope (maps: @x)"),
        (
            {"map": "@x", "labels": {"pid": "p"}},
            "metrics: labels: @x has no key pid (its keys: comm)",
        ),
        ({"map": "@x", "unit": "nanoseconds"}, "metrics: unit: nanoseconds: only histograms scale"),
    ],
)
def test_metrics_entries_that_do_not_fit_the_script(listed: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        native("tracepoint:syscalls:sys_enter_openat { @x[comm] = count(); }", metrics=[listed])
    assert str(caught.value).startswith(message)


def test_a_map_keeps_one_kind_and_one_key_type() -> None:
    assert "@x is assigned sum() here and count() before" in error(
        "tracepoint:syscalls:sys_enter_openat { @x = count(); @x = sum(1); }"
    )
    assert "@x is used with key [string[16]] here and [unsigned int64] before" in error(
        "tracepoint:syscalls:sys_enter_openat { @x[pid] = count(); @x[comm] = count(); }"
    )


def test_format_fields_are_typed_as_bpftrace_types_them() -> None:
    fields = parse_format(FORMATS["syscalls/sys_enter_openat"] + FORMATS["sched/sched_switch"])
    assert fields["dfd"] == Integer(True)  # declared int, laid out in 8 bytes
    assert fields["filename"] == Integer(False)
    assert fields["prev_comm"] == String(16)
    assert fields["name"] is None  # __data_loc: not supported
    assert "common_pid" not in fields


# -- in config files


def write(tmp_path: Path, programs: list[dict[str, Any]]) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"programs": programs}))
    return path


def test_a_bt_source_runs_as_native_c(tmp_path: Path) -> None:
    (tmp_path / "opens.bt").write_text(
        "tracepoint:syscalls:sys_enter_openat { @[comm] = count(); }\n"
    )
    (spec,) = load([write(tmp_path, [{"name": "opens", "source": "opens.bt"}])])
    assert "int bt_probe_0(void *ctx)" in spec.code  # no args: bound, not TRACEPOINT_PROBE
    assert [(p.function, [str(a) for a in p.attach]) for p in spec.program.probes] == [
        ("bt_probe_0", ["tracepoint:syscalls:sys_enter_openat"])
    ]
    assert spec.program.source is None and spec.program.metrics.counters[0].name == "opens_total"


def test_code_and_bpftrace_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, [{"name": "x", "code": "int a;", "bpftrace": "t:a:b { @ = count() }"}])
    with pytest.raises(ConfigError) as caught:
        load([path])
    assert str(caught.value) == (
        f'{path}: program "x": give exactly one of code (inline C), source (a file) or bpftrace'
    )


def test_a_metric_name_another_program_exports_is_refused_naming_both(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"name": "a", "bpftrace": "tracepoint:syscalls:sys_enter_openat { @b_c = count(); }"},
            {"name": "a_b", "bpftrace": "tracepoint:syscalls:sys_enter_openat { @c = count(); }"},
        ],
    )
    with pytest.raises(ConfigError) as caught:
        load([path])
    assert str(caught.value) == (
        f'{path}: program "a_b": metric bcc_a_b_c_total: also exported by program "a" ({path})'
    )


def test_inline_script_errors_point_into_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "programs:\n  - name: p\n    bpftrace: |\n\n      tracepoint:syscalls:sys_enter_openat {\n"
        "        @x = count(;\n      }\n"
    )
    with pytest.raises(ConfigError) as caught:
        load([path])
    assert str(caught.value) == (
        f"{path}:6:20: error: syntax error: unexpected ';', expected an expression "
        '(program "p")\n'
        "        @x = count(;\n"
        "                   ^"
    )


def test_field_errors_of_a_bpftrace_program_name_the_program(tmp_path: Path) -> None:
    script = "tracepoint:syscalls:sys_enter_openat { @x = count(); }"
    path = write(tmp_path, [{"name": "p", "bpftrace": script, "cflags": ["-O2"]}])
    with pytest.raises(ConfigError) as caught:
        load([path])
    assert str(caught.value) == f'{path}: program "p": cflags: unknown field'


# -- user-space probes, sampling, control flow


def test_dynamic_probes_are_bound_by_the_loader_in_the_exporters_vocabulary() -> None:
    done = native(
        "uretprobe:/bin/bash:readline { @r[retval > 0] = count(); }\n"
        "u:/bin/bash:readline { @a[arg0 > 0] = count(); }\n"
        "profile:hz:99 { @[comm] = count(); }\n"
        "kr:vfs_read { @k = count(); }"
    )
    assert done["probes"] == [
        {"function": "bt_probe_0", "attach": "uretprobe:/bin/bash:readline"},
        {"function": "bt_probe_1", "attach": "uprobe:/bin/bash:readline"},
        {"function": "bt_probe_2", "attach": "profile:hz:99"},
        {"function": "bt_probe_3", "attach": "kretprobe:vfs_read"},
    ]
    code = done["code"]
    assert "int bt_probe_0(struct pt_regs *ctx)" in code and "PT_REGS_RC(ctx)" in code
    assert "PT_REGS_PARM1(ctx)" in code
    assert "int bt_probe_2(struct bpf_perf_event_data *ctx)" in code


def test_a_usdt_probe_missing_from_its_binary_makes_the_program_unavailable(
    tmp_path: Path,
) -> None:
    done = native(f"usdt:{tmp_path}/none:demo:tick {{ @ = count(); }}")
    assert done["probes"] == [
        {"function": "bt_unavailable", "attach": f"usdt:{tmp_path}/none:demo:tick"}
    ]


def test_if_else_and_ternaries_translate_to_c_blocks_and_choices() -> None:
    done = native(
        "tracepoint:syscalls:sys_enter_openat {\n"
        "    if (pid > 10) { $x = 1; @big = count(); } else if (pid) { @small = count(); }\n"
        "    else { @zero = count() }\n"
        "    @kind[pid > 5 ? 1 : 0] = count();\n"
        "}"
    )
    code = done["code"]
    assert "} else {" in code and code.count("if (") >= 2
    assert " ? (s64)1LL : (s64)0LL" in code
    assert sorted(m["name"] for m in done["metrics"]["counters"]) == [
        "p_big_total",
        "p_kind_total",
        "p_small_total",
        "p_zero_total",
    ]


def test_a_variable_lives_in_its_probe_block_branches_included() -> None:
    # As in bpftrace: first assigned in a branch, it is there after it (0 if not taken).
    code = native(
        "tracepoint:syscalls:sys_enter_openat { if (pid) { $x = 1; } @a[$x] = count(); }"
    )["code"]
    assert "        s64 v_x = 0;\n" in code and "v_x = 1LL;" in code
    assert "$y is used before it is assigned" in error(
        "tracepoint:syscalls:sys_enter_openat { @a[$y] = count(); $y = 1; }"
    )


def test_curtask_fields_are_btf_reads_typed_as_btf_types_them() -> None:
    done = native(
        "tracepoint:syscalls:sys_enter_openat {\n"
        "    @[curtask->real_parent->pid] = count(); @parent = curtask->real_parent;\n"
        "}"
    )
    code = done["code"]
    assert (
        "((s64)BTF_READ((void *)bpf_get_current_task(), struct task_struct, real_parent->pid))"
        in code
    )
    assert "((u64)BTF_READ((void *)bpf_get_current_task(), struct task_struct, real_parent))" in (
        code
    )
    (counter,) = done["metrics"]["counters"]
    assert [label["name"] for label in counter["labels"]] == ["pid"]


def test_two_strings_compare_over_the_shorter_ones_size() -> None:
    code = native(
        "uretprobe:/bin/bash:readline { @short[str(retval, 4) == str(retval)] = count(); }"
    )["code"]
    # str(p, 4) is 5 bytes (4 characters and the NUL, as bpftrace reads it): one masked word.
    assert "(((u64 *)t1)[0] & 0xffffffffffULL) == (((u64 *)t2)[0] & 0xffffffffffULL)" in code


def test_usdt_arguments_are_read_at_their_size_and_refused_behind_a_semaphore(
    tmp_path: Path,
) -> None:
    path = with_notes(
        tmp_path, ("demo", "tick", "-4@%eax 8@%rdx", 0), ("demo", "gated", "-4@%eax", 0x84)
    )
    code = native(f"usdt:{path}:demo:tick {{ @[arg0, arg1] = count(); }}")["code"]
    # BCC's reader wants the argument's own size; the signed int is widened with its sign.
    assert "s32 t1 = 0;\n" in code and "bpf_usdt_readarg(1, ctx, &t1);" in code
    assert "u64 t2 = 0;\n" in code and "bpf_usdt_readarg(2, ctx, &t2);" in code
    assert "((u64)(s64)t1)" in code and "((u64)t2)" in code
    assert f"usdt:{path}:demo:tick has 2 arguments" in error(
        f"usdt:{path}:demo:tick {{ @ = sum(arg2); }}"
    )
    assert f"arg0: usdt:{path}:demo:gated has a semaphore" in error(
        f"usdt:{path}:demo:gated {{ @ = sum(arg0); }}"
    )
    # Counting it needs no argument: the loader enables it in every process.
    assert native(f"usdt:{path}:demo:gated {{ @ = count(); }}")["probes"] == [
        {"function": "bt_probe_0", "attach": f"usdt:{path}:demo:gated"}
    ]
