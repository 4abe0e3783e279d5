"""The built-in biolatency program on a loop device of the test's own: every request on it is
the workload's, so latency, queue time and size counts are exact; bitesize agrees."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import TOOL_EXIT_SECONDS, cannot_run
from . import workload

N = 23  # bcc's rule for tools: a prime number of events, matched exactly
SIZE = 64 * 1024

DIRECT_WRITES = f"""
import json, mmap, time
buffer = mmap.mmap(-1, {SIZE})  # O_DIRECT wants an aligned buffer
buffer.write(b"x" * {SIZE})
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_DIRECT)
took = []
for i in range({N}):
    start = time.perf_counter_ns()
    os.pwrite(fd, buffer, i * 2 * {SIZE})  # a gap between writes: no two merge
    took.append(time.perf_counter_ns() - start)
os.fsync(fd)  # one flush request
os.close(fd)
print(json.dumps(took))
"""


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    """A fresh loop device under the mq-deadline scheduler (so requests are inserted into a
    queue, and block_rq_insert fires), detached afterwards."""
    if shutil.which("losetup") is None:
        cannot_run("no losetup")
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(4 * N * SIZE)
    attached = subprocess.run(
        ["losetup", "-f", "--show", str(image)], capture_output=True, text=True
    )
    if attached.returncode != 0:
        cannot_run(f"cannot attach a loop device: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    name = Path(device).name
    scheduler = Path(f"/sys/block/{name}/queue/scheduler")
    try:
        if "mq-deadline" not in scheduler.read_text():
            pytest.skip(f"{name} has no mq-deadline scheduler: {scheduler.read_text().strip()}")
        scheduler.write_text("mq-deadline")
        yield name
    finally:
        try:
            scheduler.write_text("none")
        finally:
            subprocess.run(["losetup", "-d", device], check=True)


def by_le(samples: dict, name: str, **labels: str) -> dict[str, float]:
    """{le: cumulative count} of one histogram series."""
    out = {}
    for (sample, sample_labels), value in samples.items():
        found = dict(sample_labels)
        le = found.pop("le", None)
        if sample == name + "_bucket" and found == labels and le is not None:
            out[le] = value
    return out


def test_direct_writes_on_a_loop_device(daemon, loop_device):
    bitesize = subprocess.Popen(
        ["/usr/sbin/bitesize-bpfcc"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),  # its "Tracing..." line, once attached
    )
    try:
        exporter = daemon("--config.names=biolatency")  # compiles while bitesize does
        assert bitesize.stdout is not None
        assert "Tracing" in bitesize.stdout.readline()  # attached
        comm = workload.unique_comm()
        took_ns = json.loads(workload.run(comm, DIRECT_WRITES, f"/dev/{loop_device}"))
    finally:
        bitesize.send_signal(signal.SIGINT)
        tool_output, tool_errors = bitesize.communicate(timeout=TOOL_EXIT_SECONDS)
    samples = exporter.scrape()

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    write = {"device": loop_device, "op": "write"}
    flush = {"device": loop_device, "op": "flush"}

    # Size at issue: exactly 64 KiB each, in le="65536" (ceil(log2)), nothing below.
    sizes = by_le(samples, "bcc_bio_size_bytes", **write)
    assert sizes["32768.0"] == 0
    assert sizes["65536.0"] == sizes["+Inf"] == N
    assert value("bcc_bio_size_bytes_count", **write) == N
    assert value("bcc_bio_size_bytes_sum", **write) == N * SIZE
    # fsync of the block device: one data-less flush request, in the first bucket.
    assert by_le(samples, "bcc_bio_size_bytes", **flush)["512.0"] == 1
    assert value("bcc_bio_size_bytes_sum", **flush) == 0

    # Latency: one per request, the flush included (it completes with sector -1, issued with 0).
    # Each write was issued and completed inside its synchronous pwrite(2), so its latency is
    # below that call's duration: bucket le=2^k us holds at least the calls shorter than 2^k us.
    assert value("bcc_bio_latency_seconds_count", **write) == N
    assert value("bcc_bio_latency_seconds_count", **flush) == 1
    assert value("bcc_bio_latency_seconds_sum", **write) <= sum(took_ns) / 1e9
    latencies = by_le(samples, "bcc_bio_latency_seconds", **write)
    for le, count in latencies.items():
        bound = float(le)
        assert count >= sum(1 for ns in took_ns if ns / 1e9 < bound), (le, latencies, took_ns)

    # Queue time (insert -> issue): every write went through mq-deadline. Flushes bypass it.
    assert value("bcc_bio_queue_latency_seconds_count", **write) == N
    assert value("bcc_bio_queue_latency_seconds_count", **flush) == 0
    assert value("bcc_bio_queue_latency_seconds_sum", **write) <= sum(took_ns) / 1e9

    # bitesize-bpfcc, same window, by process name: the workload's 23 requests in 64 -> 127 KB.
    # (It buckets bpf_log2l(bytes / 1024): a 64 KiB request is its "64 -> 127" row.)
    assert bitesize.returncode == 0, tool_errors
    section = tool_output.split(f"Process Name = {comm}\n", 1)[1].split("\n\n", 1)[0]
    rows = {
        line.split(":")[0].strip(): int(line.split(":")[1].split("|")[0])
        for line in section.splitlines()
        if "->" in line
    }
    assert rows.pop("64 -> 127") == N == sizes["65536.0"] - sizes["32768.0"]
    assert not any(rows.values()), rows
