"""exporter.terminal.printable: what reaches a terminal from `snapshot` and `list`."""

import pytest

from exporter.terminal import printable


@pytest.mark.parametrize(
    "text, shown",
    [
        ("bash", "bash"),
        ("kworker/0:1", "kworker/0:1"),
        ("é ü 日本", "é ü 日本"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),  # NUL, DEL, the 8-bit CSI
        ("\u202eevil", "\\u202eevil"),  # right-to-left override
        ("a\u2028b", "a\\u2028b"),  # line separator
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_list_prints_every_line_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe names and reasons come from tracefs, binaries and errors (not from us)."""
    from exporter import listing

    monkeypatch.setattr(listing, "_program", lambda spec: f"{spec}: available\n  f: usdt:\x1b[2J")
    assert listing.describe(["a", "b"]) == (  # type: ignore[list-item]
        "a: available\n  f: usdt:\\x1b[2J\nb: available\n  f: usdt:\\x1b[2J\n"
    )
