"""The daemon as an operator meets it: isolation of failures, cleanup, exposition, process model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..conftest import REPO, bpftool_show, getppid_counter, run_cli, still_loaded

GOOD = getppid_counter()

BROKEN = """
programs:
  - name: broken
    code: |
      int broken(void *ctx) { return undeclared_thing; }
    probes:
      - {function: broken, attach: "tracepoint:syscalls:sys_enter_getppid"}
"""


def test_broken_program_costs_only_itself(daemon, write_config):
    exporter = daemon(
        f"--config.file={write_config('broken', BROKEN)}",
        f"--config.file={write_config('good', GOOD)}",
    )
    before = exporter.value("bcc_getppid_calls_total", slot="0")
    for _ in range(23):
        os.getppid()
    assert exporter.value("bcc_getppid_calls_total", slot="0") - before >= 23
    assert exporter.value("bcc_exporter_enabled_programs", program="good") == 1
    assert exporter.value("bcc_exporter_enabled_programs", program="broken") == 0
    assert (
        'program "broken": compile failed: /virtual/main.c:1:32: error: '
        "use of undeclared identifier 'undeclared_thing'"
    ) in exporter.log()
    page = exporter.get("/").decode()
    assert "undeclared_thing" in page and "good" in page


def test_sigkill_leaves_nothing_attached(daemon, write_config):
    exporter = daemon(
        f"--config.file={write_config('good', GOOD)}", "--config.names=syscalls,opens"
    )
    ours = exporter.program_ids()
    assert len(ours) == 3 and ours <= {prog["id"] for prog in bpftool_show("prog")}
    exporter.proc.send_signal(signal.SIGKILL)
    exporter.proc.wait()
    assert not still_loaded(ours, "prog")


def test_promtool_accepts_a_real_scrape(daemon, write_config, tmp_path):
    exporter = daemon("--config.names=syscalls,opens,biolatency")
    os.sync()  # some block I/O for the histogram
    scrape = exporter.get("/metrics")
    done = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True)
    assert (done.returncode, done.stdout + done.stderr) == (0, b"")


def test_openmetrics_and_gzip_on_request(daemon):
    exporter = daemon("--config.names=syscalls")
    om = exporter.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.endswith(b"# EOF\n") and b"bcc_syscalls_total" in om
    import gzip

    gz = exporter.get("/metrics", {"Accept-Encoding": "gzip"})
    assert b"bcc_syscalls_total" in gzip.decompress(gz)


def test_daemon_never_maps_bcc(daemon):
    exporter = daemon("--config.names=syscalls,opens,biolatency")
    maps = Path(f"/proc/{exporter.proc.pid}/maps").read_text()
    assert "libbcc" not in maps and "LLVM" not in maps
    rss_kb = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{exporter.proc.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
    )
    assert rss_kb < 150_000, "a daemon that had imported bcc would hold 75 MB+ of LLVM"


def test_daemon_modules_do_not_import_bcc():
    code = (
        "import sys, exporter.cli, exporter.loader, exporter.metrics.program, exporter.http; "
        "print('bcc' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "False"


def test_config_check_reports_each_program(write_config):
    ok = run_cli("--config.check", f"--config.file={write_config('good', GOOD)}")
    assert (ok.returncode, ok.stdout) == (0, "OK   good\n")
    bad = run_cli(
        "--config.check",
        f"--config.file={write_config('good', GOOD)}",
        f"--config.file={write_config('broken', BROKEN)}",
    )
    assert bad.returncode == 1
    assert "OK   good\n" in bad.stdout
    assert "FAIL broken: compile failed: /virtual/main.c:1:32: error" in bad.stdout


def test_bad_config_exits_2_with_one_line_and_no_traceback(write_config):
    path = write_config(
        "bad",
        GOOD.replace("counters:", "histograms:").replace(
            "- name: getppid_calls_total", "- bucket_type: exp3\n          name: lat"
        ),
    )
    done = run_cli(f"--config.file={path}")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        f'{path}: program "good": metrics.histograms[0].bucket_type: must be one of exp2, '
        "exp2zero, linear, fixed (got 'exp3')"
    ) in done.stderr


def test_headers_are_named_and_checked_against_btf(daemon):
    exporter = daemon("--config.names=syscalls")
    # Nothing waits for the check without a program that reads kernel structs.
    samples = exporter.headers_checked()
    info = [
        dict(labels)
        for (name, labels), _ in samples.items()
        if name == "bcc_exporter_kernel_headers_info"
    ]
    build = Path(f"/lib/modules/{os.uname().release}/build").resolve()
    assert [i["path"] for i in info] == [str(build)]
    assert info[0]["kernel"] == os.uname().release
    assert "compiling against kernel headers at " + str(build) in exporter.log()
    match = samples[("bcc_exporter_kernel_headers_match", frozenset())]
    # Headers of another kernel (this VM's case) must be caught, naming the fields.
    if info[0]["release"] != os.uname().release:
        assert match == 0
        assert "task_struct.pid at offset" in exporter.log()


def test_a_field_width_a_decoder_cannot_read_names_metric_and_label(write_config):
    config = GOOD.replace(
        "- {name: slot, size: 4, decoders: [{name: uint}]}",
        "- {name: slot, size: 4, decoders: [{name: ksym}]}",
    )
    path = write_config("width", config)
    done = run_cli("--config.check", f"--config.file={path}")
    # A config error, found when the file is read (exit 2), before anything compiles.
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[-1] == (
        f'bcc_exporter: {path}: program "good": metrics.counters[0].labels[0].decoders: '
        "metric getppid_calls_total, label slot: ksym decodes 8-byte addresses, not 4"
    )


def test_a_program_reading_kernel_structs_is_refused_while_headers_mismatch(daemon, write_config):
    reader = GOOD.replace("  - name: good\n", "  - name: good\n    reads_kernel_structs: test\n")
    exporter = daemon(f"--config.file={write_config('reader', reader)}")
    matched = exporter.value("bcc_exporter_kernel_headers_match")
    enabled = exporter.value("bcc_exporter_enabled_programs", program="good")
    assert enabled == matched  # served only where the headers describe this kernel
    if not matched:
        assert (
            'program "good": refused: it reads kernel structs (test) and the kernel headers '
            "do not lay them out as this kernel does"
        ) in exporter.log()


def test_bpf_run_time_stats_only_with_the_flag(daemon, write_config):
    """They cost every run of every BPF program of the node: off unless asked for."""

    def runs_of_23_calls(*flags: str) -> float:
        exporter = daemon(f"--config.file={write_config('good', GOOD)}", *flags)
        for _ in range(23):
            os.getppid()
        runs = sum(
            value
            for (name, _), value in exporter.scrape().items()
            if name == "bcc_exporter_program_run_count_total"
        )
        exporter.stop()
        return runs

    # The kernel's sysctl does not show an fd holding stats on: nobody else may hold one.
    assert Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() == "0"
    assert runs_of_23_calls() == 0
    assert runs_of_23_calls("--bpf.stats") >= 23
