"""The entry point (`bcc_exporter`, `python -m exporter`): signals first, then the CLI."""

from __future__ import annotations

import sys

from .signals import Signals, Stop


def main() -> int:
    signals = Signals()
    signals.install()
    try:
        from .cli import main as cli

        return cli(signals=signals)
    except Stop as stop:
        # Whatever was attached is detached: the fds that held it closed as the stack unwound.
        print(f"bcc_exporter: stopped by {stop} during start-up", file=sys.stderr)
        return 0
