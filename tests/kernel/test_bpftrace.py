"""bpftrace programs (exporter/bpftrace/): the exporter runs the script translated into BCC C,
bpftrace 0.17 runs the same script over the same workload window, and every value of the
workload's unique comm must be equal (counts, sums, and each histogram bucket)."""

from __future__ import annotations

import math
import re

import yaml

from . import workload

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
    """The `le` a bpftrace bucket is exported as: its exclusive upper bound."""
    if bucket.endswith("...)"):
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


FAILED_OPENS = "tracepoint:syscalls:sys_exit_openat /args->ret < 0/ { @failed[comm] = count(); }"


def test_failed_opens_per_comm_count_equals_bpftrace(daemon, write_config, tmp_path):
    body = """
    for _ in range(13):
        try:
            open(sys.argv[2] + "/missing")
        except FileNotFoundError:
            pass
    for _ in range(5):
        open(sys.argv[2] + "/there").close()
    """
    (tmp_path / "there").write_text("x")
    comm, theirs, samples = run_both(
        daemon, write_config, "failed_opens", FAILED_OPENS, body, str(tmp_path)
    )
    ours = ours_plain(samples, "bcc_failed_opens_failed_total")
    assert theirs["@failed"][comm] == 13
    assert ours[frozenset({("comm", comm)})] == 13
