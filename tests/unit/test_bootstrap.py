"""The install/CI layer: scripts/bootstrap.sh, the Dockerfile and .ci/run agree with each other.

Pure: reads files and runs `bash -n` / `bootstrap.sh --list-packages` (which only prints).
"""

import os
import re
import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "scripts" / "bootstrap.sh"
DOCKERFILE = REPO / "Dockerfile"
CI_RUN = REPO / ".ci" / "run"


def _bootstrap_packages(array: str) -> list[str]:
    """The ARRAY=( ... ) of bootstrap.sh (RUNTIME_PACKAGES, DEV_PACKAGES), comments stripped."""
    m = re.search(rf"^{array}=\((.*?)^\)", BOOTSTRAP.read_text(), re.S | re.M)
    assert m, f"scripts/bootstrap.sh has no {array}=( ... ) array"
    words: list[str] = []
    for line in m.group(1).splitlines():
        words += shlex.split(line, comments=True)
    return words


def _dockerfile_stages() -> list[list[str]]:
    """The RUN instructions of each stage of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for ln in lines:
        if ln.startswith("FROM "):
            stages.append([])
        elif ln.startswith("RUN "):
            stages[-1].append(ln[len("RUN ") :])
    return stages


def _packages(runs: list[str]) -> set[str]:
    """Debian packages these RUNs install: explicit `apt-get install` args, plus the runtime
    list when one runs scripts/bootstrap.sh (the way the image is meant to get them)."""
    packages: set[str] = set()
    for run in runs:
        for cmd in re.split(r"&&|\|\||;", run):
            words = shlex.split(cmd)
            if "bash" in words and any(w.endswith("bootstrap.sh") for w in words):
                assert "BOOTSTRAP_IN_IMAGE=1" in words, f"needs BOOTSTRAP_IN_IMAGE=1: {cmd}"
                packages |= set(_bootstrap_packages("RUNTIME_PACKAGES"))
            if "apt-get" in words and "install" in words:
                args = words[words.index("install") + 1 :]
                packages |= {w for w in args if not w.startswith("-")}
    return packages


def test_bootstrap_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(BOOTSTRAP)], check=True)


def test_bootstrap_lists_the_packages_it_declares() -> None:
    out = subprocess.run(
        ["bash", str(BOOTSTRAP), "--list-packages"], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == _bootstrap_packages("RUNTIME_PACKAGES") + _bootstrap_packages("DEV_PACKAGES")
    assert {"python3-bpfcc", "python3-venv", "prometheus"} <= set(out)


def test_the_image_carries_the_runtime_packages_only() -> None:
    """The final stage gets the bootstrap's runtime list; a build stage may name a package of
    the development list (python3-venv), never one of no list."""
    *build, final = _dockerfile_stages()
    assert _packages(final) == set(_bootstrap_packages("RUNTIME_PACKAGES"))
    assert _packages([run for stage in build for run in stage]) <= set(
        _bootstrap_packages("DEV_PACKAGES")
    )
    assert "prometheus" not in _bootstrap_packages("RUNTIME_PACKAGES")


def test_dockerfile_venv_sees_debian_bcc() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM debian:bookworm-slim\b", text, re.M)
    assert "/usr/bin/python3 -m venv --system-site-packages" in text
    assert re.search(r"^ENTRYPOINT \[\"bcc_exporter\"\]", text, re.M)


def test_ci_run_requires_bpf_and_runs_make_test() -> None:
    text = CI_RUN.read_text()
    subprocess.run(["bash", "-n", str(CI_RUN)], check=True)
    assert text.startswith("#!/usr/bin/env bash\n")
    assert re.search(r"^set -euo pipefail$", text, re.M)
    assert re.search(r"^export REQUIRE_BPF=1$", text, re.M)
    assert re.search(r"^make test\b", text, re.M)
    assert os.access(CI_RUN, os.X_OK), ".ci/run must be executable"


def test_the_image_points_the_daemon_at_the_fallback_headers_the_bootstrap_makes() -> None:
    made = re.search(r"^FALLBACK_HEADERS=(\S+)$", BOOTSTRAP.read_text(), re.M)
    named = re.search(r"BCC_EXPORTER_FALLBACK_HEADERS=(\S+)", DOCKERFILE.read_text())
    assert made and named
    assert made.group(1) == named.group(1)
