"""deploy/prometheus: promtool accepts the config and the rules, and the rules' own unit tests
(deploy/prometheus/tests, run by `promtool test rules`) pass: each alert fires on the input
that should fire it, after its `for`, and on nothing else."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent.parent
PROM = REPO / "deploy" / "prometheus"
CONFIG = PROM / "prometheus.yml"
RULES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
# Debian's prometheus is built without Kubernetes service discovery.
NO_KUBERNETES_SD = "field kubernetes_sd_configs not found"
KUBERNETES_SD_KEYS = {"role", "namespaces"}


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (scripts/bootstrap.sh installs prometheus)")
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    done = promtool("check", "config", str(CONFIG))
    if NO_KUBERNETES_SD in done.stdout + done.stderr:
        # This promtool cannot parse kubernetes_sd_configs: check everything else (relabel
        # rules included) with the discovery swapped for a static target, and the discovery
        # block's shape by hand.
        config = yaml.safe_load(CONFIG.read_text())
        for job in config["scrape_configs"]:
            for sd in job.pop("kubernetes_sd_configs", []):
                assert set(sd) <= KUBERNETES_SD_KEYS and sd["role"] in {"pod", "endpoints"}
                job.setdefault("static_configs", []).append({"targets": ["k8s.invalid:9474"]})
        copy = tmp_path / CONFIG.name
        copy.write_text(yaml.safe_dump(config))
        (tmp_path / "rules").symlink_to(PROM / "rules")
        done = promtool("check", "config", str(copy), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_config_loads_every_rules_file() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert sorted(PROM / f for f in config["rule_files"]) == RULES


@pytest.mark.parametrize("rules", RULES, ids=lambda p: p.name)
def test_promtool_accepts_the_rules(rules: Path) -> None:
    done = promtool("check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("tests", RULE_TESTS, ids=lambda p: p.name)
def test_the_rules_unit_tests_pass(tests: Path) -> None:
    done = promtool("test", "rules", str(tests), cwd=tests.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert alerts == tested


def test_every_recorded_histogram_is_a_built_in_metric_with_its_labels() -> None:
    """The recording rules group by the labels the histograms really have (README table)."""
    readme = (REPO / "README.md").read_text()
    for rule in _rules():
        if "record" in rule:
            metric = rule["record"].split(":")[1]
            assert f"`{metric}`" in readme, metric
            assert f"rate({metric}_bucket[5m])" in rule["expr"]


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULES
        for g in yaml.safe_load(path.read_text())["groups"]
        for rule in g["rules"]
    ]
