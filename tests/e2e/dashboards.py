"""The Grafana dashboards of deploy/grafana as data: their panels, their queries, and those
queries with the template variables expanded the way Grafana expands them for Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..conftest import REPO

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"

# Grafana's built-in intervals, fixed for a test that scrapes every second: $__rate_interval
# is at least four scrape intervals; 10 s leaves room for a late scrape under load.
BUILTINS = {"__rate_interval": "10s", "__interval": "2s", "__range": "1m"}

LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]")
REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}: {self.expr}"


def load() -> dict[str, dict[str, Any]]:
    """Every dashboard, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows are layout), those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def targets(name: str, dashboard: Mapping[str, Any]) -> Iterator[Target]:
    for panel in panels(dashboard):
        for t in panel["targets"]:
            yield Target(name, panel["title"], t["refId"], t["expr"], bool(t.get("instant")))


def query_variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def label_values_query(variable: Mapping[str, Any]) -> tuple[str, str]:
    """(series selector, label) of a `label_values(selector, label)` variable."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    found = LABEL_VALUES.match(text.strip())
    if found is None:
        raise ValueError(f"variable {variable['name']}: not label_values(selector, label): {text}")
    return found["selector"], found["label"]


def regex_escape(value: str) -> str:
    """Grafana's escape of one value of a multi-value variable in a Prometheus query: a regex
    special character gets a backslash, itself escaped for the PromQL string."""
    return REGEX_SPECIAL.sub(lambda m: "\\\\" + m[0], value.replace("\\", "\\\\\\\\"))


def format_values(variable: Mapping[str, Any], values: list[str]) -> str:
    """What Grafana puts in place of a variable with these values selected: a multi-value or
    All variable becomes a regex alternation, a single value stays as it is."""
    if variable.get("multi") or variable.get("includeAll"):
        if len(values) == 1:
            return regex_escape(values[0])
        return "(" + "|".join(regex_escape(v) for v in values) + ")"
    return values[0]


def expand(text: str, values: Mapping[str, str]) -> str:
    """`text` with every $name, ${name} and [[name]] replaced; an unknown name is an error."""

    def one(found: re.Match[str]) -> str:
        name = found[1] or found[2] or found[3]
        if name not in values:
            raise KeyError(f"no value for ${name} in {text}")
        return values[name]

    return VARIABLE.sub(one, text)


# Panels without data under the built-in default config (syslat and readline are off by
# default; no built-in program has a perf_map counter), with the words of their description
# that tell users so: the e2e test expects exactly these to be empty.
NO_DATA = {
    "Syscall latency": "off by default",
    "Syscall latency p99 by syscall (top 10)": "off by default",
    "Lines typed into bash": "off by default",
    "Perf events lost": "no built-in program",
}
