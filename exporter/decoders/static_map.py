"""static_map: replace the text of the previous decoder (e.g. "1") by a configured name."""

from collections.abc import Mapping
from typing import Any

from ._base import DecoderError, flag


def _text(value: Any, what: str) -> bytes:
    # YAML reads `1: read` with an int key; the input is the text "1", so compare as text.
    # bool is an int subclass, but `yes:` meaning "True" would only ever be a mistake.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DecoderError(f"static_map {what} must be a string or an integer, not {value!r}")
    return str(value).encode()


class StaticMap:
    def __init__(self, options: Mapping[str, Any], size: int) -> None:
        table = options.get("static_map")
        if not isinstance(table, Mapping) or not table:
            raise DecoderError(f"static_map needs a non-empty 'static_map' mapping, got {table!r}")
        allow_unknown = flag(options, "allow_unknown", "static_map")
        # Inputs are compared as bytes: equal to comparing text for the UTF-8 that decoders emit,
        # and it also covers raw bytes when static_map comes first.
        self._table = {_text(k, "key"): _text(v, "value") for k, v in table.items()}
        self._allow_unknown = allow_unknown

    def decode(self, data: bytes) -> bytes:
        value = self._table.get(data)
        if value is not None:
            return value
        return data if self._allow_unknown else b"unknown:" + data
