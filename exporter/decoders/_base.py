"""Types shared by the decoder modules (kept apart from __init__ to avoid an import cycle)."""

from collections.abc import Mapping
from typing import Any, Protocol

# The field size a non-first decoder is built with: its input is text from the previous
# decoder, not a raw field. Real fields are never 0 bytes wide, so the value is unambiguous.
TEXT_INPUT = 0


class DecoderError(ValueError):
    """Bad decoder config or unsupported field width, raised when a chain is built."""


class SkipSeries(Exception):
    """Raised while decoding to drop the whole series (e.g. no regexp matched)."""


class Unresolved(Exception):
    """Raised by a decoder whose host lookup missed (a cgroup or module newer than its last
    read, which is rate-limited): `value` is what to show for now, and the caller must ask
    again later instead of caching it for good."""

    def __init__(self, value: bytes) -> None:
        super().__init__(value)
        self.value = value


class Decoder(Protocol):
    def decode(self, data: bytes) -> bytes: ...


# The option the ebpf_exporter v1 translation (config/v1.py) sets on the decoders whose v1.2.5
# output differs from ours for the same bytes: with it, they give what v1 gave.
V1 = "v1"


def flag(options: Mapping[str, Any], key: str, decoder: str) -> bool:
    """A true/false option, false when absent."""
    value = options.get(key, False)
    if not isinstance(value, bool):
        raise DecoderError(f"{decoder} {key!r} must be true or false, not {value!r}")
    return value
