"""Every dashboard panel, evaluated by a real Prometheus server scraping a real exporter.

The exporter runs the built-in default config plus the by-pod programs, with --bpf.stats;
Debian's prometheus scrapes it every second (a static target with a `pod` label, honor_labels
as deploy/prometheus does, and the rules of deploy/prometheus/rules). A fake pod is made as
the kubelet would leave it: a container cgroup under the cgroup2 mount and its logs where the
built-in configs look (/var/log/pods, /var/log/containers), only its own entries, removed
after. A workload feeds every area for a while: O_DIRECT writes to a real disk and to a loop
device under mq-deadline, opens that succeed and fail, execs, threads, exits of each kind,
page faults, interrupts from virtio-rng, TCP connections, refused connects, SYN retransmits,
two OOM kills in a memory cgroup, and syscalls and sleeps of a process in the fake pod's
container. Then each dashboard's variables are resolved as Grafana would (label_values through
the series API; on pods.json they must name the fake pod) and each panel query is run with
them expanded over the workload's window: every one must return data and every panel a
non-zero value, except the panels listed below with the reason.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import config
from exporter.decoders.k8s import CONTAINER_LOGS, POD_LOGS
from exporter.metrics.self_metrics import PREFIX

from ..conftest import REPO, cannot_run, free_port
from ..k8s_pods import Pod, directories, kubelet_logs, real_node
from ..kernel import workload
from ..kernel.test_prog_oomkill import HOG, MemoryCgroup
from ..kernel.test_prog_tcp import SYN_RETRANSMITS
from .dashboards import (
    BUILTINS,
    NO_DATA,
    Target,
    expand,
    format_values,
    label_values_query,
    load,
    query_variables,
    regex_escape,
    targets,
)

POD = "bcc-exporter-e2e"  # the exporter's pod, a target label
BY_POD = {"runqlat_by_pod", "syscalls_by_pod"}  # off by default; pods.json shows them
PODS = "pods.json"
JOB = "bcc-exporter"  # what deploy/prometheus' alerts select
SECONDS = 15  # of workload: a few rate intervals
STEP = 2
RISES = 5  # rounds of an event that may go uncounted (until_risen)

# Panels that may show only zeros here, and why: they count trouble this run does not have.
ZERO_OK = {
    "Programs failed": "every default program attaches on this kernel",
    "Failed collections": "no collection fails",
    "Series dropped": "no metric reaches --metrics.max-series",
    "Map updates failed": "no map of the default programs fills up",
    "Decoder errors": "every key of the built-in programs decodes",
    "Recursion misses": "the kernel skips a program only when BPF programs nest on a CPU",
    "Kernel headers match": "0 where the headers are another kernel's (Debian's 6.1 on 6.18)",
}

WORKLOAD = """
import mmap, socket, subprocess, threading, time
seconds, device, direct_file = float(sys.argv[2]), sys.argv[3], sys.argv[4]
SIZE = 64 * 1024
buffer = mmap.mmap(-1, SIZE)  # O_DIRECT wants an aligned buffer
buffer.write(b"x" * SIZE)
disks = [os.open(device, os.O_WRONLY | os.O_DIRECT)] if device else []
disks.append(os.open(direct_file, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
try:
    rng = os.open("/dev/hwrng", os.O_RDONLY)  # each buffer it hands out is one interrupt
except OSError:
    rng = None
listener = socket.create_server(("127.0.0.1", 0))
closed = socket.socket()
closed.bind(("127.0.0.1", 0))  # bound, nobody listening: a connect gets a RST
deadline = time.monotonic() + seconds
i = 0
while time.monotonic() < deadline:
    for disk in disks:
        os.pwrite(disk, buffer, (i % 16) * 2 * SIZE)
    os.close(os.open("/etc/hostname", os.O_RDONLY))
    try:
        os.open("/nonexistent-bccx", os.O_RDONLY)
    except FileNotFoundError:
        pass
    subprocess.run(["/bin/true"])
    subprocess.run(["/bin/false"])
    child = subprocess.Popen(["/bin/sleep", "60"])
    child.kill()
    child.wait()
    thread = threading.Thread(target=time.sleep, args=(0,))
    thread.start()
    thread.join()
    pages = mmap.mmap(-1, 64 * mmap.PAGESIZE)
    for page in range(64):
        pages[page * mmap.PAGESIZE] = 1
    pages.close()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    client.close()
    server.close()
    try:
        socket.create_connection(closed.getsockname())
    except ConnectionRefusedError:
        pass
    if rng is not None:
        os.read(rng, 64)
    time.sleep(0.02)
    i += 1
for disk in disks:
    os.fsync(disk)  # a flush request
print(i)
"""

# Moves itself into the cgroup whose cgroup.procs is argv[2], then for argv[3] seconds makes
# syscalls (syscalls_by_pod) and sleeps, each wakeup a wait in a run queue (runqlat_by_pod).
IN_POD = """
import time
with open(sys.argv[2], "w") as procs:
    procs.write(str(os.getpid()))
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    os.getppid()
    time.sleep(0.005)
"""


class Prometheus:
    """Debian's prometheus on a free loopback port, scraping one target every second."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        rules = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rules],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_timeout": "1s",
                    # as deploy/prometheus: the by-pod series keep the workload's pod label
                    "honor_labels": True,
                    "static_configs": [{"targets": [target], "labels": {"pod": POD}}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.rules = rules
        self.target = target
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = tmp_path / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"prometheus not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: str | list[str]) -> Any:
        """GET /api/v1/PATH; its `data`, or an AssertionError quoting Prometheus' error."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
                body = json.load(r)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        assert body["status"] == "success", (path, params, body.get("error"))
        return body["data"]

    def last_scrape(self) -> float:
        """When the target was last scraped (0: not yet, or it failed). timestamp() of a bare
        selector: of any other expression it is the query's own time."""
        up = f'up{{job="{JOB}"}}'
        found = self.api("query", query=f"timestamp({up}) and {up} == 1")["result"]
        return float(found[0]["value"][1]) if found else 0.0

    def wait_scraped_after(self, moment: float, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.last_scrape() <= moment:
            assert time.monotonic() < deadline, f"no scrape after {moment}:\n{self.log()}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def maybe(request: pytest.FixtureRequest, fixture: str) -> tuple[Any, str | None]:
    """(a fixture's value, None), or (None, why it skipped): the panels it feeds are then
    excused, not the whole test."""
    try:
        return request.getfixturevalue(fixture), None
    except pytest.skip.Exception as why:
        return None, str(why)


@pytest.fixture
def prometheus(daemon, tmp_path: Path) -> Iterator[Prometheus]:
    if shutil.which("prometheus") is None:
        cannot_run("no prometheus (Debian's prometheus package)")
    exporter = daemon(
        f"--config.names={','.join(default_and_by_pod_configs())}",
        "--bpf.stats",  # the overview's run count and run time panels
    )
    server = Prometheus(tmp_path, exporter.url.removeprefix("http://"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def default_and_by_pod_configs() -> list[str]:
    """The built-in configs of the default set (what the daemon serves with no config flag),
    and the by-pod ones."""
    return sorted({spec.origin.stem for spec in config.select(None, None, [])} | BY_POD)


@pytest.fixture
def k8s_pod(tmp_path: Path) -> Iterator[tuple[Pod, Path]]:
    """A pod the built-in by-pod configs can name: (the pod, its container's cgroup)."""
    pod = Pod.make(f"bccx-e2e-{uuid.uuid4().hex[:8]}", "web-5d78c9869d-8tqzx", "app")
    with (
        real_node(tmp_path) as node,
        kubelet_logs(pod, Path(POD_LOGS), Path(CONTAINER_LOGS)),
        directories(node.cgroups, pod.cgroup("systemd-containerd-burstable")) as [cgroup],
    ):
        yield pod, cgroup


def until_risen(prom: Prometheus, counter: str, event: Callable[[], str | None]) -> str | None:
    """The event again until Prometheus has seen `counter` rise; returns why there was no
    event, if so. Once is not enough: a counter's series appears with its first count, which
    rate() cannot see as an increase; and the kernel skips a tracepoint program whose event
    interrupts another BPF program on its CPU (a recursion miss), as the retransmit timer's
    softirq may, so a whole round of events can go uncounted."""
    for _ in range(RISES):
        if why := event():
            return why
        prom.wait_scraped_after(time.time())
        if prom.api("query", query=f"sum(increase({counter}[1m])) > 0")["result"]:
            return None
    return None  # the panel shows only zeros: the test says so, with the misses


def oom_kill(cgroup: MemoryCgroup, comm: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as killed:
        workload.run(comm, HOG, str(cgroup.path / cgroup.procs_file))
    assert killed.value.returncode == -9, killed.value.stderr


def syn_retransmits() -> str | None:
    """The tcp test's unanswered SYNs, retransmitted; or why it could not make them."""
    return json.loads(workload.run(workload.unique_comm(), SYN_RETRANSMITS)).get("skip")


def run_workload(
    request: pytest.FixtureRequest, prom: Prometheus, tmp_path: Path, pod_cgroup: Path | None
) -> dict[str, str]:
    """Feeds every panel for SECONDS; returns the panels that could not be fed, and why."""
    excused = {}
    # The real disk's scheduler may be `none`: only the loop device's requests are queued.
    device, why = maybe(request, "loop_device")
    if why:
        excused["Queue latency"] = excused["Queue latency p50 / p99"] = why
    cgroup, why = maybe(request, "memory_cgroup")
    if why:
        excused["OOM kills"] = why
    with ThreadPoolExecutor(4) as pool:
        main = pool.submit(
            workload.run,
            workload.unique_comm(),
            WORKLOAD,
            str(SECONDS),
            f"/dev/{device}" if device else "",
            str(tmp_path / "direct"),
        )
        retransmits = pool.submit(until_risen, prom, "bcc_tcp_retransmits_total", syn_retransmits)
        in_pod = None
        if pod_cgroup is not None:
            procs = str(pod_cgroup / "cgroup.procs")
            in_pod = pool.submit(workload.run, workload.unique_comm(), IN_POD, procs, str(SECONDS))
        if cgroup is not None:
            victim = workload.unique_comm()
            pool.submit(
                until_risen, prom, "bcc_oom_kills_total", lambda: oom_kill(cgroup, victim)
            ).result()
        if why := retransmits.result():
            excused["Retransmits"] = why
        assert int(main.result()) > 10  # loops of the workload
        if in_pod is not None:
            in_pod.result()
    return excused


def resolve_variables(prom: Prometheus, dashboard: dict[str, Any], start: float) -> dict[str, str]:
    """Each query variable set to all its values, as Grafana's All would, in dashboard order
    (a variable may use the ones before it)."""
    values = dict(BUILTINS, datasource="prometheus")
    for variable in query_variables(dashboard):
        selector, label = label_values_query(variable)
        found = prom.api(
            f"label/{label}/values",
            **{"match[]": expand(selector, values), "start": str(start), "end": str(time.time())},
        )
        assert found, f"{dashboard['title']}: variable {variable['name']} has no values"
        values[variable["name"]] = format_values(variable, found)
    return values


def evaluate(prom: Prometheus, target: Target, values: dict[str, str], start: float) -> list:
    """The target's result: a matrix over the workload's window, or a vector now (instant)."""
    expr = expand(target.expr, values)
    if target.instant:
        return list(prom.api("query", query=expr)["result"])
    end = str(time.time())
    return list(
        prom.api("query_range", query=expr, start=str(start), end=end, step=str(STEP))["result"]
    )


def nonzero(result: list) -> bool:
    points = [s["value"] for s in result if "value" in s]
    points += [p for s in result for p in s.get("values", [])]
    return any(float(v) != 0 and not math.isnan(float(v)) for _, v in points)


def expected_variables(name: str, prom: Prometheus, pod: Pod | None) -> dict[str, str]:
    """What the variables of a dashboard must resolve to: this exporter, and the exporter's
    pod, or on pods.json the fake pod (its series alone are in a pod)."""
    expected = {"instance": regex_escape(prom.target)}
    if name == PODS:
        assert pod is not None
        expected.update(
            k8s_namespace=regex_escape(pod.namespace),
            k8s_pod=regex_escape(pod.name),
            k8s_container=regex_escape(pod.container),
        )
    else:
        expected["pod"] = POD
    return expected


def test_every_dashboard_panel_has_data(request, prometheus, tmp_path):
    # A node without cgroup2 has no pods to show: the other dashboards are tested all the same.
    found, no_pod = maybe(request, "k8s_pod")
    pod, pod_cgroup = found or (None, None)
    prometheus.wait_scraped_after(time.time())
    start = time.time()
    excused = run_workload(request, prometheus, tmp_path, pod_cgroup)
    prometheus.wait_scraped_after(time.time() + 1)  # the last increments are in the TSDB

    problems = []
    for name, dashboard in load().items():
        if name == PODS and no_pod:
            excused[PODS] = no_pod
            continue
        values = resolve_variables(prometheus, dashboard, start)
        expected = expected_variables(name, prometheus, pod)
        assert {k: values[k] for k in expected} == expected, values
        by_panel: dict[str, list[list]] = {}
        for target in targets(name, dashboard):
            result = evaluate(prometheus, target, values, start)
            by_panel.setdefault(target.panel, []).append(result)
        for panel, results in by_panel.items():
            if panel in NO_DATA:
                if any(results):
                    problems.append(f"{name}: {panel}: has data now: update NO_DATA")
            elif panel in excused:
                continue
            elif not all(results):
                problems.append(f"{name}: {panel}: a query returned no data")
            elif panel not in ZERO_OK and not any(nonzero(r) for r in results):
                problems.append(f"{name}: {panel}: only zeros")
    missed = prometheus.api("query", query=f"{PREFIX}_program_recursion_misses_total > 0")
    assert not problems, "\n".join(problems) + f"\nexcused: {excused}\nmisses: {missed}"

    rules = prometheus.api("rules")["groups"]
    assert {g["file"] for g in rules} == {str(p) for p in prometheus.rules}
    failing = [r for g in rules for r in g["rules"] if r["health"] == "err"]
    assert not failing, [(r["name"], r["lastError"]) for r in failing]
