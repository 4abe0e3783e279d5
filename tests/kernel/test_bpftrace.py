"""bpftrace programs (exporter/bpftrace/): the exporter runs the script translated into BCC C,
bpftrace 0.17 runs the same script over the same workload window, and every value of the
workload's unique comm must be equal (counts, sums, and each histogram bucket)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO, run_cli
from ..unit import test_bpftrace_output as output_test
from . import workload
from .histograms import cpu_ticks, most_time_in
from .test_probes import kprobes_available
from .test_prog_readline import BASH, type_into_bash
from .test_reload import reload
from .test_wildcard import CALLS as OPEN_CALLS

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# bpftrace prints hist() bounds with binary suffixes: [1K, 2K) is [1024, 2048).
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def config(name: str, script: str) -> str:
    return yaml.safe_dump({"programs": [{"name": name, "bpftrace": script}]})


def _number(text: str) -> int:
    match = re.fullmatch(r"(-?\d+)([KMGTP]?)", text.strip())
    assert match, text
    return int(match.group(1)) * _SUFFIX[match.group(2)]


def _upper_bound(bucket: str) -> float:
    """The `le` a bpftrace bucket is exported as: its exclusive upper bound. bpftrace 0.17's
    hist() counts every value from 2^31 up in the bucket it prints as [2G, 4G): +Inf."""
    if bucket.endswith("...)") or bucket == "[2G, 4G)":
        return math.inf
    if bucket.startswith("(..., "):
        return _number(bucket[6:-1])
    if "," in bucket:
        return _number(bucket[1:-1].split(",")[1])
    return _number(bucket[1:-1]) + 1  # [0], [1]: one value


def bpftrace_maps(printed: str) -> dict[str, dict]:
    """What bpftrace printed at exit: {map: {key text: value}} for plain maps and
    {map: {key text: {le: count}}} for histograms (keys as printed, "" without one)."""
    maps: dict[str, dict] = {}
    current: dict[float, int] | None = None
    for line in printed.splitlines():
        plain = re.fullmatch(r"(@\w*)(?:\[(.*)\])?: (-?\d+)", line)
        head = re.fullmatch(r"(@\w*)(?:\[(.*)\])?: ", line)
        bucket = re.fullmatch(r"([\[(].*?[\])])\s+(\d+) \|.*\|", line)
        if plain:
            maps.setdefault(plain.group(1), {})[plain.group(2) or ""] = int(plain.group(3))
        elif head:
            current = maps.setdefault(head.group(1), {})[head.group(2) or ""] = {}
        elif bucket and current is not None:
            current[_upper_bound(bucket.group(1))] = int(bucket.group(2))
    return maps


def ours_plain(samples: Samples, name: str) -> dict[frozenset, float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def ours_hist(samples: Samples, name: str, **labels: str) -> dict[float, int]:
    """Per-bucket (not cumulative) counts by `le`, zero buckets left out, as bpftrace prints
    only the buckets from its first to its last non-zero one."""
    cumulative = sorted(
        (float(dict(lab)["le"]), value)
        for (n, lab), value in samples.items()
        if n == name + "_bucket" and {k: v for k, v in lab if k != "le"} == labels
    )
    out, below = {}, 0.0
    for le, total in cumulative:
        if total - below:
            out[le] = int(total - below)
        below = total
    return out


def nonzero(hist: dict[float, int]) -> dict[float, int]:
    return {le: n for le, n in hist.items() if n}


def run_both(daemon, write_config, name: str, script: str, body: str, *args: str):
    """Start the exporter on the script, then bpftrace; run the workload in a unique comm (the
    script's COMM placeholder); return (comm, bpftrace's maps, our samples)."""
    comm = workload.unique_comm()
    script = script.replace("COMM", comm)
    exporter = daemon(f"--config.file={write_config(name, config(name, script))}")
    finish = workload.bpftrace(script)
    workload.run(comm, body, *args)
    theirs = bpftrace_maps(finish())
    return comm, theirs, exporter.scrape()


def opens(failing: int, succeeding: int) -> str:
    """A workload: opens of a missing file, then of one that exists (`there`, in the directory
    given as its argument); it prints its pid."""
    return f"""
for _ in range({failing}):
    try:
        open(sys.argv[2] + "/missing")
    except FileNotFoundError:
        pass
for _ in range({succeeding}):
    open(sys.argv[2] + "/there").close()
print(os.getpid())
"""


FAILED_OPENS = "tracepoint:syscalls:sys_exit_openat /args->ret < 0/ { @failed[comm] = count(); }"


def test_failed_opens_per_comm_count_equals_bpftrace(daemon, write_config, tmp_path):
    (tmp_path / "there").write_text("x")
    comm, theirs, samples = run_both(
        daemon, write_config, "failed_opens", FAILED_OPENS, opens(13, 5), str(tmp_path)
    )
    ours = ours_plain(samples, "bcc_failed_opens_failed_total")
    assert theirs["@failed"][comm] == 13
    assert ours[frozenset({("comm", comm)})] == 13


SLEEPS = """
tracepoint:syscalls:sys_enter_clock_nanosleep /comm == "COMM"/ { @start[tid] = nsecs; }
tracepoint:syscalls:sys_exit_clock_nanosleep /@start[tid]/ {
    @ns = hist(nsecs - @start[tid]);
    delete(@start[tid]);
}
"""


def test_sleep_latency_hist_with_scratch_start_equals_bpftrace(daemon, write_config):
    # Sleeps well inside their power-of-two buckets ([2, 4) ms, [8, 16) ms, [32, 64) ms), so
    # the two tracers, timing the same calls a few microseconds apart, agree.
    body = """
    import time
    for seconds, times in ((0.003, 5), (0.010, 3), (0.040, 2)):
        for _ in range(times):
            time.sleep(seconds)
    """
    _, theirs, samples = run_both(daemon, write_config, "sleeps", SLEEPS, body)
    assert sum(theirs["@ns"][""].values()) == 10
    assert ours_hist(samples, "bcc_sleeps_ns") == nonzero(theirs["@ns"][""])
    # @start is read in an expression and deleted: scratch state, not a metric.
    assert not [name for name, _ in samples if name.startswith("bcc_sleeps_start")]


def test_wildcard_probe_count_equals_bpftrace(daemon, write_config, tmp_path):
    script = 'tracepoint:syscalls:sys_enter_open* /comm == "COMM"/ { @[probe] = count(); }'
    target = tmp_path / "target"
    target.write_text("x")
    _, theirs, samples = run_both(daemon, write_config, "opens", script, OPEN_CALLS, str(target))
    expected = {
        "tracepoint:syscalls:sys_enter_open": 5,
        "tracepoint:syscalls:sys_enter_openat": 7,
        "tracepoint:syscalls:sys_enter_openat2": 11,
    }
    assert theirs["@"] == expected
    ours = {
        dict(labels)["probe"]: v for labels, v in ours_plain(samples, "bcc_opens_total").items()
    }
    assert ours == expected


WRITES = """
for size in (0, 1, 50, 99, 100, 150, 999, 1000, 1001, 5000, 100, 100):
    os.write(fd, b"x" * size)
"""
WRITES_PRELUDE = 'fd = os.open("/dev/null", os.O_WRONLY)\n'


def test_sum_of_bytes_written_equals_bpftrace(daemon, write_config):
    script = "tracepoint:syscalls:sys_enter_write { @bytes[comm] = sum(args->count); }"
    comm, theirs, samples = run_both(
        daemon, write_config, "writes", script, WRITES_PRELUDE + WRITES
    )
    assert theirs["@bytes"][comm] == 8600
    ours = ours_plain(samples, "bcc_writes_bytes_total")
    assert ours[frozenset({("comm", comm)})] == 8600


def test_lhist_buckets_equal_bpftrace(daemon, write_config):
    # Below min (0, 1, 50, 99), each step, max itself and above max (1000, 1001, 5000).
    script = (
        "tracepoint:syscalls:sys_enter_write { @sizes[comm] = lhist(args->count, 100, 1000, 100); }"
    )
    comm, theirs, samples = run_both(daemon, write_config, "sizes", script, WRITES_PRELUDE + WRITES)
    expected = {100: 4, 200: 4, 1000: 1, math.inf: 3}
    assert nonzero(theirs["@sizes"][comm]) == expected
    assert ours_hist(samples, "bcc_sizes_sizes", comm=comm) == expected


def test_two_key_map_equals_bpftrace(daemon, write_config, tmp_path):
    script = (
        'tracepoint:syscalls:sys_exit_openat /comm == "COMM"/ '
        "{ @opens[pid, args->ret < 0] = count(); }"
    )
    (tmp_path / "there").write_text("x")
    comm = workload.unique_comm()
    script = script.replace("COMM", comm)
    exporter = daemon(f"--config.file={write_config('opens', config('opens', script))}")
    finish = workload.bpftrace(script)
    pid = workload.run(comm, opens(4, 6), str(tmp_path)).strip()
    theirs = bpftrace_maps(finish())["@opens"]
    assert theirs == {f"{pid}, 1": 4, f"{pid}, 0": 6}
    ours = ours_plain(exporter.scrape(), "bcc_opens_opens_total")
    assert ours == {
        frozenset({("pid", pid), ("key1", "1")}): 4,
        frozenset({("pid", pid), ("key1", "0")}): 6,
    }


GETPPIDS = "for _ in range(23):\n    os.getppid()\n"


def test_bt_source_file_and_its_metrics_block(daemon, tmp_path):
    # @n is read in an expression: scratch, so exported only because `metrics:` lists it
    # (with its comm label renamed); @last is a plain assignment: a gauge.
    comm = workload.unique_comm()
    (tmp_path / "ppid.bt").write_text(
        f'tracepoint:syscalls:sys_enter_getppid /comm == "{comm}"/ {{\n'
        "    @n[comm] = count();\n"
        "    @last = @n[comm];\n"
        "}\n"
    )
    (tmp_path / "ppid.yaml").write_text(
        textwrap.dedent("""\
        programs:
          - name: ppid
            source: ppid.bt
            metrics:
              - map: "@n"
                help: getppid calls of the test's process.
                labels: {comm: command}
        """)
    )
    exporter = daemon(f"--config.dir={tmp_path}")
    workload.run(comm, GETPPIDS)
    samples = exporter.scrape()
    assert ours_plain(samples, "bcc_ppid_n_total") == {frozenset({("command", comm)}): 23}
    assert ours_plain(samples, "bcc_ppid_last") == {frozenset(): 23}
    assert "# HELP bcc_ppid_n_total getppid calls of the test's process." in (
        exporter.get("/metrics").decode()
    )


def test_rawtracepoint_args_and_probe_label(daemon, write_config):
    # bpftrace 0.17 as packaged here refuses rawtracepoint probes ("Invalid probe type made it
    # to attachpoint parser"): the workload's known count is the oracle.
    script = "rawtracepoint:sys_enter /arg1 == 110/ { @raw[probe, comm] = count(); }"  # getppid
    exporter = daemon(f"--config.file={write_config('raw', config('raw', script))}")
    comm = workload.unique_comm()
    workload.run(comm, GETPPIDS)
    ours = ours_plain(exporter.scrape(), "bcc_raw_raw_total")
    assert ours[frozenset({("probe", "rawtracepoint:sys_enter"), ("comm", comm)})] == 23


def test_script_errors_exit_2_with_position_line_and_caret(write_config):
    path = write_config(
        "broken",
        "programs:\n"
        "  - name: broken\n"
        "    bpftrace: |\n"
        "      tracepoint:syscalls:sys_enter_openat {\n"
        "          @opens[comm] = count(;\n"
        "      }\n",
    )
    done = run_cli(f"--config.file={path}")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        f"{path}:5:32: error: syntax error: unexpected ';', expected an expression "
        '(program "broken")\n'
        "          @opens[comm] = count(;\n"
        "                               ^\n"
    ) in done.stderr


def test_printf_fails_a_reload_and_the_same_script_again_keeps_its_counts(daemon, tmp_path):
    good = "tracepoint:syscalls:sys_enter_getppid { @calls[comm] = count(); }"
    bad = 'tracepoint:syscalls:sys_enter_getppid { printf("%d\\n", pid); }'
    (tmp_path / "p.yaml").write_text(config("p", good))
    exporter = daemon(f"--config.dir={tmp_path}")
    comm = workload.unique_comm()
    workload.run(comm, GETPPIDS)
    (tmp_path / "p.yaml").write_text(config("p", bad))
    assert reload(exporter) == 0
    assert (
        f"{tmp_path}/p.yaml:2:41: error: printf() has no meaning in an exporter: keep the value "
        'in a map, it is exported (program "p")\n'
        'tracepoint:syscalls:sys_enter_getppid { printf("%d\\n", pid); }\n'
        "                                        ^~~~~~~~~~~~~~~~~~~\n"
    ) in exporter.log()
    assert exporter.value("bcc_p_calls_total", comm=comm) == 23
    # The same script again translates to the same program: kept as it runs, counts and all.
    ids = exporter.program_ids("p")
    assert ids
    (tmp_path / "p.yaml").write_text(config("p", good))
    assert reload(exporter) == 1
    assert exporter.program_ids("p") == ids
    assert exporter.value("bcc_p_calls_total", comm=comm) == 23


# lseek(2) on fd 99 only: Python itself seeks its own files (offset 0) now and then.
SEEKS = 'tracepoint:syscalls:sys_enter_lseek /comm == "COMM" && args->fd == 99/ '


def seeks(*offsets: int) -> str:
    """A workload: lseek(2) by each offset (signed values the test can choose exactly)."""
    return f"""
fd = os.dup2(os.open("/dev/null", os.O_RDONLY), 99)
for offset in {offsets!r}:
    os.lseek(fd, offset, os.SEEK_CUR)
"""


def test_min_max_avg_of_signed_values_equal_bpftrace(daemon, write_config):
    script = SEEKS + (
        "{ @low = min(args->offset); @high = max(args->offset); @mean = avg(args->offset); }"
    )
    _, theirs, samples = run_both(daemon, write_config, "seeks", script, seeks(-7, 3, 12, -20))
    assert (theirs["@low"][""], theirs["@high"][""], theirs["@mean"][""]) == (-20, 12, -3)
    assert ours_plain(samples, "bcc_seeks_low") == {frozenset(): -20}
    assert ours_plain(samples, "bcc_seeks_high") == {frozenset(): 12}
    assert ours_plain(samples, "bcc_seeks_mean") == {frozenset(): -3}


def test_hist_and_lhist_edges_equal_bpftrace(daemon, write_config):
    # Negatives, 0 and 1 on their own, powers of two and their neighbours (bpftrace prints
    # 1024 as 1K); an lhist whose range is not a multiple of its step, below and above it.
    script = SEEKS + "{ @h = hist(args->offset); @l = lhist(args->offset, 2, 12, 3); }"
    edges = (-5, -1, 0, 1, 1, 2, 3, 4, 7, 8, 11, 12, 13, 1023, 1024, 1025, 2**31 - 1, 2**31)
    body = seeks(*edges, 2**40)
    _, theirs, samples = run_both(daemon, write_config, "edges", script, body)
    assert nonzero(theirs["@h"][""]) == {
        0: 2,
        1: 1,
        2: 2,
        4: 2,
        8: 2,
        16: 4,
        1024: 1,
        2048: 2,
        2**31: 1,
        math.inf: 2,
    }
    assert ours_hist(samples, "bcc_edges_h") == nonzero(theirs["@h"][""])
    # [2, 5) [5, 8) [8, 11) and bpftrace's last bucket from 11 on, printed [12, ...).
    assert nonzero(theirs["@l"][""]) == {2: 5, 5: 3, 8: 1, 11: 1, math.inf: 9}
    assert ours_hist(samples, "bcc_edges_l") == nonzero(theirs["@l"][""])


def test_a_bt_source_others_could_write_is_refused(tmp_path):
    script = tmp_path / "opens.bt"
    script.write_text("tracepoint:syscalls:sys_enter_openat { @[comm] = count(); }\n")
    script.chmod(0o666)
    path = tmp_path / "opens.yaml"
    path.write_text(yaml.safe_dump({"programs": [{"name": "opens", "source": "opens.bt"}]}))
    done = run_cli(f"--config.file={path}")
    assert done.returncode == 2
    assert f'{path}: program "opens": source: refusing it: ' in done.stderr
    assert "Traceback" not in done.stderr


def test_str_of_a_user_pointer_as_key_equals_bpftrace(daemon, write_config):
    script = (
        'tracepoint:syscalls:sys_enter_openat /comm == "COMM"/ '
        "{ @files[str(args->filename)] = count(); }"
    )
    # A short directory: str() reads 64 bytes (63 characters), as bpftrace does.
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        Path(directory, "there").write_text("x")
        _, theirs, samples = run_both(daemon, write_config, "files", script, opens(2, 3), directory)
    expected = {f"{directory}/missing": 2, f"{directory}/there": 3}
    assert {k: v for k, v in theirs["@files"].items() if k.startswith(directory)} == expected
    ours = ours_plain(samples, "bcc_files_files_total")
    named = {dict(labels)["filename"]: value for labels, value in ours.items()}
    assert {k: v for k, v in named.items() if k.startswith(directory)} == expected


def test_a_tracepoint_this_kernel_lacks_makes_the_program_unavailable_not_the_config(
    daemon, write_config
):
    text = yaml.safe_dump(
        {
            "programs": [
                {
                    "name": "here",
                    "bpftrace": "tracepoint:syscalls:sys_enter_getppid { @[comm] = count(); }",
                },
                {"name": "elsewhere", "bpftrace": "tracepoint:nope:none { @[comm] = count(); }"},
            ]
        }
    )
    exporter = daemon(f"--config.file={write_config('two', text)}")
    comm = workload.unique_comm()
    workload.run(comm, GETPPIDS)
    assert exporter.value("bcc_exporter_enabled_programs", program="here") == 1
    assert exporter.value("bcc_exporter_enabled_programs", program="elsewhere") == 0
    assert exporter.value("bcc_here_total", comm=comm) == 23
    assert "tracepoint:nope:none: no such tracepoint on this kernel" in exporter.log()


# -- user-space probes, sampling, control flow, snapshot (bpftrace programs, 2 of 2)

# Lines typed into bash, by length: 7 of at most 4 characters, 5 of 5 to 16, 3 longer; the
# edges (4 and 5, 16 and 17) on both sides.
SHORT_LINES = [":", ": a", ": ab", ":  a", "true", ": b", ": c"]
MEDIUM_LINES = [": abc", ": " + "m" * 14, "echo hi", ": 12345678", ": x y z"]
LONG_LINES = [": " + "l" * 15, ": " + "l" * 40, ": " + "l" * 61]
# str(p, n) holds up to n characters: equal to str(p) when p's line is that short.
READLINE = """
uretprobe:/bin/bash:readline /comm == "COMM" && retval/ {
    @lines[str(retval, 4) == str(retval) ? 4 : (str(retval, 16) == str(retval) ? 16 : 64)] =
        count();
}
"""


def test_bash_readline_uretprobe_by_line_length_equals_bpftrace(daemon, write_config, tmp_path):
    comm = workload.unique_comm()
    script = READLINE.replace("COMM", comm)
    exporter = daemon(f"--config.file={write_config('lines', config('lines', script))}")
    finish = workload.bpftrace(script)
    # bash through a symlink of the unique name: its comm; the uretprobe is on /bin/bash.
    (tmp_path / comm).symlink_to(BASH)
    type_into_bash(str(tmp_path / comm), SHORT_LINES + MEDIUM_LINES + LONG_LINES, tmp_path)
    theirs = bpftrace_maps(finish())["@lines"]
    assert theirs == {"4": 7, "16": 5, "64": 3}
    ours = ours_plain(exporter.scrape(), "bcc_lines_lines_total")
    assert {dict(labels)["key0"]: value for labels, value in ours.items()} == theirs


USDT_PROGRAM = r"""
#include <stdlib.h>
#include <sys/sdt.h>

int main(int argc, char **argv)
{
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++) {
        long v = i * 3 - 5;
        short s = -i;
        DTRACE_PROBE3(demo, tick, i, v, s);  /* -4@..., -8@..., -2@...: signed */
    }
    return 0;
}
"""


def test_usdt_probe_of_a_binary_built_here_equals_bpftrace(daemon, write_config, tmp_path):
    (tmp_path / "ticks.c").write_text(USDT_PROGRAM)
    binary = tmp_path / "ticks"
    subprocess.run(["cc", "-O1", "-o", str(binary), str(tmp_path / "ticks.c")], check=True)
    script = (
        f"usdt:{binary}:demo:tick {{ @ticks[arg0 % 3] = count(); @total = sum(arg1); "
        "@low = min(arg2); }"
    )
    exporter = daemon(f"--config.file={write_config('ticks', config('ticks', script))}")
    finish = workload.bpftrace(script)
    subprocess.run([str(binary), "23"], check=True)
    theirs = bpftrace_maps(finish())
    # i = 0..22 by i % 3; the sum of 3i - 5; the least of the short -i, widened with its sign.
    assert theirs == {"@ticks": {"0": 8, "1": 8, "2": 7}, "@total": {"": 644}, "@low": {"": -22}}
    samples = exporter.scrape()
    ticks = ours_plain(samples, "bcc_ticks_ticks_total")
    assert {dict(labels)["key0"]: value for labels, value in ticks.items()} == theirs["@ticks"]
    assert ours_plain(samples, "bcc_ticks_total_total") == {frozenset(): 644}
    assert ours_plain(samples, "bcc_ticks_low") == {frozenset(): -22}


PROFILE = 'profile:hz:99 /comm == "COMM"/ { @samples[comm] = count(); }'


def test_profile_99hz_samples_of_a_comm_within_what_both_tools_can_take(daemon, write_config):
    comm = workload.unique_comm()
    script = PROFILE.replace("COMM", comm)
    exporter = daemon(f"--config.file={write_config('cpu', config('cpu', script))}")
    # Attached once it holds a perf event per CPU for its output, and one per CPU sampling.
    finish = workload.bpftrace(script, probes=0, perf_events=2 * (os.cpu_count() or 1))
    cpu = max(os.sched_getaffinity(0))
    ticks = [cpu_ticks(cpu)]
    printed = workload.run(comm, workload.busy_second(cpu))
    ticks.append(cpu_ticks(cpu))
    theirs = bpftrace_maps(finish())["@samples"][comm]
    ours = exporter.value("bcc_cpu_samples_total", comm=comm)
    # Each tool's own perf event at 99 Hz on that CPU samples the child 99 times per second it
    # ran, give or take one per stretch it ran without a break and what interrupts and the
    # hypervisor took meanwhile: bounds from the child's own CPU time and switches, and the
    # CPU's irq/steal time, over the window both watched. Neither tool's count is the bound.
    least, most = workload.sampled(99, printed, most_time_in(*ticks, "irq", "softirq", "steal"))
    assert least <= theirs <= most, (least, theirs, most, printed)
    assert least <= ours <= most, (least, ours, most, printed)


CLASSIFIER = (
    SEEKS
    + """{
    if (args->offset < 0) {
        @negative = count();
    } else if (args->offset == 0) {
        @zero = count();
    } else {
        $size = args->offset > 100 ? 2 : 1;
        @positive[$size] = count();
    }
    @odd[(args->offset & 1) ? 1 : 0] = count();
    @size[$size] = count();
}"""
)


def test_if_else_and_ternary_classifier_equals_bpftrace(daemon, write_config):
    body = seeks(-7, -3, 0, 0, 0, 5, 50, 500, 1000, 7)
    _, theirs, samples = run_both(daemon, write_config, "sorts", CLASSIFIER, body)
    assert theirs == {
        "@negative": {"": 2},
        "@zero": {"": 3},
        "@positive": {"1": 3, "2": 2},
        "@odd": {"1": 4, "0": 6},
        "@size": {"0": 5, "1": 3, "2": 2},  # $size is 0 where its branch was not taken
    }
    assert ours_plain(samples, "bcc_sorts_negative_total") == {frozenset(): 2}
    assert ours_plain(samples, "bcc_sorts_zero_total") == {frozenset(): 3}
    for name in ("positive", "odd", "size"):
        ours = ours_plain(samples, f"bcc_sorts_{name}_total")
        by_key = {dict(labels)["key0"]: value for labels, value in ours.items()}
        assert by_key == theirs[f"@{name}"]


CURTASK = """tracepoint:syscalls:sys_enter_getppid /comm == "COMM"/ {
    @parent[curtask->real_parent->tgid] = count();
    @me[curtask->tgid] = count();
}"""


def test_curtask_fields_through_btf_equal_bpftrace(daemon, write_config):
    body = GETPPIDS + "print(os.getpid())\n"
    comm = workload.unique_comm()
    script = CURTASK.replace("COMM", comm)
    exporter = daemon(f"--config.file={write_config('task', config('task', script))}")
    finish = workload.bpftrace(script)
    pid = workload.run(comm, body).strip()
    theirs = bpftrace_maps(finish())
    # The workload is this test's child: its parent is this process.
    assert theirs == {"@parent": {str(os.getpid()): 23}, "@me": {pid: 23}}
    samples = exporter.scrape()
    parent = ours_plain(samples, "bcc_task_parent_total")
    assert parent == {frozenset({("tgid", str(os.getpid()))}): 23}
    assert ours_plain(samples, "bcc_task_me_total") == {frozenset({("tgid", pid)}): 23}


@pytest.mark.skipif(not kprobes_available(), reason="kernel has no kprobes (CONFIG_KPROBES off)")
def test_kprobe_and_kretprobe_equal_bpftrace(daemon, write_config):
    script = (
        'kprobe:__x64_sys_getppid /comm == "COMM"/ { @calls[comm] = count(); }\n'
        'kretprobe:__x64_sys_getppid /comm == "COMM"/ { @parent[retval] = count(); }'
    )
    comm, theirs, samples = run_both(daemon, write_config, "k", script, GETPPIDS)
    assert theirs["@calls"] == {comm: 23}
    assert ours_plain(samples, "bcc_k_calls_total") == {frozenset({("comm", comm)}): 23}
    ours = ours_plain(samples, "bcc_k_parent_total")
    assert {dict(labels)["retval"]: value for labels, value in ours.items()} == theirs["@parent"]


def test_kprobes_fail_clearly_where_the_kernel_has_none(tmp_path):
    if kprobes_available():
        pytest.skip("this kernel has kprobes; the refusal cannot be seen here")
    path = tmp_path / "k.yaml"
    path.write_text(config("k", "kretprobe:vfs_read { @[retval > 0] = count(); }"))
    done = run_cli("--config.check", f"--config.file={path}")
    assert done.returncode == 1
    assert (
        "FAIL k: function bt_probe_0: no probe could be attached (kretprobe:vfs_read: kernel "
        "has no kprobes: CONFIG_KPROBES is off"
    ) in done.stdout
    assert "Traceback" not in done.stderr


SNAPSHOT = (
    SEEKS
    + """{
    @h = hist(args->offset);
    @calls[args->fd] = count();
    @by_sign[args->offset < 0] = count();
    @mean = avg(args->offset);
}"""
)


def test_snapshot_prints_the_maps_as_bpftrace_prints_them(write_config):
    comm = workload.unique_comm()
    script = SNAPSHOT.replace("COMM", comm)
    path = write_config("seen", config("seen", script))
    finish = workload.bpftrace(script)
    snapshot = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "snapshot",
            "seen",
            f"--config.file={path}",
            "--duration=8s",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert snapshot.stderr is not None
    while "snapshot: watching" not in (line := snapshot.stderr.readline()):
        assert line, "snapshot did not start"
    workload.run(comm, seeks(-9, 1, 2, 3, 3, 1000, 1500, 70000))
    out, err = snapshot.communicate(timeout=60)
    assert snapshot.returncode == 0, err
    # After "Attaching 1 probe...", bpftrace prints two blank lines, then its maps.
    assert "\n\n" + out == finish()
    assert "@calls[99]: 8\n" in out and "@h: \n(..., 0)  " in out


def test_the_captured_bpftrace_exit_of_the_unit_test_is_what_bpftrace_prints():
    # tests/unit/bpftrace_exit.txt, which the snapshot's output is checked against.
    finish = workload.bpftrace(output_test.SCRIPT, probes=0)  # BEGIN: it may be done already
    assert "Attaching 1 probe...\n" + finish() == output_test.PRINTED
