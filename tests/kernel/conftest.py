"""Kernel tests share the `daemon` and `write_config` fixtures of tests/conftest.py, and
`node`: a Kubernetes node whose pods' cgroups are real (tests/k8s_pods.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import REPO, Daemon, free_port
from ..k8s_pods import Node, real_node

__all__ = ["REPO", "Daemon", "free_port"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with real_node(tmp_path) as made:
        yield made
