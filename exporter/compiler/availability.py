"""Does this kernel have a probe? Answered from tracefs and sysfs, without bcc, so that the
compile worker (before attaching) and `bcc_exporter list` (without compiling) say the same."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from ..probes import Probe
from ..tracefs import TRACEFS

EVENT_SOURCES = Path("/sys/bus/event_source/devices")
# BCC's own attach macros, which attach while compiling: what they attach to is part of the code.
_AUTO_ATTACH = re.compile(
    r"\b(TRACEPOINT_PROBE|RAW_TRACEPOINT_PROBE)\s*\(\s*(\w+)\s*(?:,\s*(\w+))?"
)


class ProbeUnavailable(Exception):
    """This kernel cannot provide the probe; the next alternative may."""


def tracepoints(probe: Probe, tracefs: Path = TRACEFS) -> list[Path]:
    """The tracefs event directories a (possibly wildcard) tracepoint probe names."""
    pattern = f"{probe.field('category')}/{probe.field('event')}"
    events = sorted(
        d
        for d in tracefs.glob("events/*/*")
        if fnmatch.fnmatchcase(f"{d.parent.name}/{d.name}", pattern) and (d / "id").exists()
    )
    if not events:
        if not (tracefs / "events").is_dir():
            raise ProbeUnavailable(f"tracefs is not mounted at {tracefs}")
        raise ProbeUnavailable("no such tracepoint on this kernel")
    return events


def check(probe: Probe, tracefs: Path = TRACEFS, sources: Path = EVENT_SOURCES) -> None:
    """Raise ProbeUnavailable with the reason when this kernel cannot provide the probe."""
    if probe.kind == "tracepoint":
        tracepoints(probe, tracefs)
    elif probe.kind == "raw_tracepoint":
        if not list(tracefs.glob(f"events/*/{probe.field('event')}")):
            raise ProbeUnavailable(_missing_tracepoint(tracefs))
    elif probe.kind in ("kprobe", "kretprobe"):
        if not (sources / "kprobe").exists() and not (tracefs / "kprobe_events").exists():
            raise ProbeUnavailable(
                "kernel has no kprobes: CONFIG_KPROBES is off "
                f"(no {sources}/kprobe, no {tracefs}/kprobe_events)"
            )
    elif probe.kind in ("uprobe", "uretprobe", "usdt"):
        if not os.path.exists(probe.field("path")):
            raise ProbeUnavailable(f"{probe.field('path')} does not exist")
    elif probe.kind == "hardware" and not (sources / "cpu").exists():
        raise ProbeUnavailable(
            f"no hardware perf events on this machine (no CPU PMU at {sources}/cpu; common in VMs)"
        )


def _missing_tracepoint(tracefs: Path) -> str:
    if not (tracefs / "events").is_dir():
        return f"tracefs is not mounted at {tracefs}"
    return "no such tracepoint on this kernel"


def auto_attached(code: str) -> list[str]:
    """The probes BCC's TRACEPOINT_PROBE/RAW_TRACEPOINT_PROBE macros in `code` attach to."""
    probes = []
    for macro, first, second in _AUTO_ATTACH.findall(code):
        if macro == "TRACEPOINT_PROBE" and second:
            probes.append(f"tracepoint:{first}:{second}")
        elif macro == "RAW_TRACEPOINT_PROBE":
            probes.append(f"raw_tracepoint:{first}")
    return probes
