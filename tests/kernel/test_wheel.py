"""A wheel a user can take as it is: built from a copy of the tree, installed into a fresh venv,
it finds its built-in programs (package data) and checks the default set from any directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from exporter import config

from ..conftest import REPO

# What a checkout holds that a build must not see or leave behind.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "wheelhouse"
)


def _run(*argv: str | Path, cwd: Path = Path("/")) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_the_installed_wheel_checks_the_default_set_from_the_root_directory(tmp_path):
    # A copy, as `docker build` or an sdist sees the tree: the links to config/ and programs/
    # are copied as links, and the build leaves nothing in the checkout.
    tree = tmp_path / "tree"
    shutil.copytree(REPO, tree, symlinks=True, ignore=NOT_SOURCE)
    built = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path, tree)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("bcc_exporter-*.whl")

    venv = tmp_path / "venv"
    made = _run("/usr/bin/python3", "-m", "venv", "--system-site-packages", venv)
    assert made.returncode == 0, made.stderr
    installed = _run(venv / "bin" / "pip", "install", "-q", wheel)
    assert installed.returncode == 0, installed.stderr

    # The installed package reads its own copy, not this checkout.
    where = _run(
        venv / "bin" / "python", "-c", "from exporter import config; print(config.BUILTIN_DIR)"
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    checked = _run(venv / "bin" / "bcc_exporter", "--config.check", "--loader.jobs=2")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    default_set = sorted(spec.name for spec in config.select(None, None, []))
    assert checked.stdout.splitlines() == [f"OK   {name}" for name in default_set]
