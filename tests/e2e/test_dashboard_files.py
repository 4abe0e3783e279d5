"""The dashboards as files: importable JSON, every panel on the datasource variable with a unit
and a description, every query valid PromQL, every built-in program metric on a panel."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO, cannot_run
from .dashboards import BUILTINS, NO_DATA, expand, load, panels, query_variables, targets

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana unit ids the dashboards use; anything else is most likely a typo Grafana would show
# as a bare number.
UNITS = {"s", "bytes", "Bps", "ops", "iops", "cps", "percentunit", "short", "none"}
METRIC = re.compile(r"\b(bcc_[a-z0-9_]+)")
WORKLOAD_LABELS = ("namespace", "pod", "container")

DASHBOARDS = load()


def test_there_is_an_overview_and_one_dashboard_per_area():
    assert set(DASHBOARDS) == {
        "overview.json",
        "disk-io.json",
        "cpu.json",
        "syscalls.json",
        "tcp.json",
        "processes.json",
        "irqs.json",
        "pods.json",
    }
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    titles = [p["title"] for d in DASHBOARDS.values() for p in panels(d)]
    assert len(set(titles)) == len(titles), "panel titles key the e2e test's allow-lists"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_is_importable_with_datasource_instance_and_pod_variables(name):
    dashboard = DASHBOARDS[name]
    assert dashboard["schemaVersion"] == 39
    assert dashboard["id"] is None  # import creates it
    assert "bcc_exporter" in dashboard["tags"]  # the dashboards' links find each other by tag
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["definition"].startswith("label_values(bcc_exporter_build_info")
    if name == "pods.json":
        # The by-pod series carry the workload's namespace/pod/container (honor_labels), not the
        # exporter's pod. Not named `pod`: the dashboard links carry variables over by name.
        assert "pod" not in variables
        for label in WORKLOAD_LABELS:
            assert variables[f"k8s_{label}"]["definition"].startswith(
                "label_values(bcc_pod_syscalls_total{"
            )
            assert variables[f"k8s_{label}"]["definition"].endswith(f", {label})")
    else:
        assert variables["pod"]["definition"].startswith("label_values(bcc_exporter_build_info")
        assert variables["pod"]["allValue"] == ".*"  # All also matches targets with no pod label
    for variable in query_variables(dashboard):
        assert variable["datasource"] == DATASOURCE, variable["name"]
        assert variable["query"]["query"] == variable["definition"], variable["name"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_has_datasource_unit_and_description(name):
    for panel in panels(DASHBOARDS[name]):
        where = f"{name}: {panel['title']}"
        assert panel["datasource"] == DATASOURCE, where
        assert len(panel.get("description", "")) > 20, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit in UNITS, (where, unit)
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, (where, prop)
        if panel["type"] == "heatmap":
            assert panel["options"]["yAxis"]["unit"] in UNITS, where
            assert panel["options"]["calculate"] is False, where  # Prometheus has the buckets
            (target,) = panel["targets"]
            assert target["format"] == "heatmap", where
            assert re.fullmatch(
                r"sum by \(le\) \(increase\(\w+_bucket\{.*\}\[\$__rate_interval\]\)\)",
                target["expr"],
            ), where


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_do_not_overlap(name):
    taken: dict[tuple[int, int], str] = {}
    for panel in DASHBOARDS[name]["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, (panel["title"], taken[(x, y)])
                taken[(x, y)] = panel["title"]


def test_panels_without_data_by_default_say_why():
    described = {p["title"]: p["description"] for d in DASHBOARDS.values() for p in panels(d)}
    for title, words in NO_DATA.items():
        assert words in described[title], title


def program_metrics() -> set[str]:
    """Every metric the built-in programs export (config/*.yaml)."""
    names = set()
    for path in (REPO / "config").glob("*.yaml"):
        for program in yaml.safe_load(path.read_text())["programs"]:
            namespace = program.get("namespace", "bcc")
            for kind in ("counters", "gauges", "histograms"):
                for metric in program["metrics"].get(kind, []):
                    names.add(f"{namespace}_{metric['name']}")
    return names


def test_every_built_in_metric_is_on_a_panel_and_every_panel_metric_exists():
    used = set()
    for name, dashboard in DASHBOARDS.items():
        for target in targets(name, dashboard):
            used.update(METRIC.findall(target.expr))
    used_programs = {
        re.sub(r"_(bucket|sum|count)$", "", m) for m in used if not m.startswith("bcc_exporter_")
    }
    assert used_programs == program_metrics()


def test_every_query_is_valid_promql(tmp_path: Path):
    """promtool parses each query (variables expanded) as a recording rule's expression."""
    promtool = shutil.which("promtool")
    if promtool is None:
        cannot_run("no promtool (Debian's prometheus package)")
    values = dict(BUILTINS, datasource="prometheus", instance="a:1", pod="p", device="vda", op="r")
    values.update({f"k8s_{label}": "w" for label in WORKLOAD_LABELS})
    rules = [
        {"record": f"dashboard:query:{i}", "expr": expand(t.expr, values)}
        for i, t in enumerate(t for n, d in DASHBOARDS.items() for t in targets(n, d))
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
