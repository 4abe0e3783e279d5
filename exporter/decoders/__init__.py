"""Decoders: turn the bytes of one key field into a label value.

A label has a chain of decoders, as in cloudflare/ebpf_exporter: the first gets the raw
field bytes, each next one the previous one's output (UTF-8 text as bytes), and the last
output is the label value.

One chain may serve concurrent scrapes: most decoders are pure, and those that keep a
snapshot of host state (ksym, cgroup) guard its refresh with a lock (_refresh.py).
Caching decoded values (by raw key bytes) is the caller's job, and so is guarding that cache.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import ksym
from ._base import TEXT_INPUT, Decoder, DecoderError, SkipSeries, Unresolved
from .cgroup import Cgroup
from .dname import Dname
from .errno import Errno
from .hex import Hex
from .ifname import Ifname
from .inet_ip import InetIp
from .k8s import K8sContainer, K8sNamespace, K8sPod
from .ksym import Ksym
from .majorminor import MajorMinor
from .regexp import Regexp
from .static_map import StaticMap
from .string import String
from .syscall import Syscall
from .tracepoint import Tracepoint
from .uint import Uint

__all__ = [
    "REGISTRY",
    "Chain",
    "Decoder",
    "DecoderError",
    "SkipSeries",
    "Unresolved",
    "build_chain",
]

# name -> factory(options, field_size); options is the decoder's config dict, "name" included.
REGISTRY: dict[str, Callable[[Mapping[str, Any], int], Decoder]] = {
    "cgroup": Cgroup,
    "dname": Dname,
    "errno": Errno,
    "hex": Hex,
    "ifname": Ifname,
    "inet_ip": InetIp,
    "k8s_container": K8sContainer,
    "k8s_namespace": K8sNamespace,
    "k8s_pod": K8sPod,
    "ksym": Ksym,
    "majorminor": MajorMinor,
    "regexp": Regexp,
    "static_map": StaticMap,
    "string": String,
    "syscall": Syscall,
    "tracepoint": Tracepoint,
    "uint": Uint,
}


class Chain:
    """A label's decoders, validated when built so that decode() only decodes."""

    def __init__(self, decoders: Sequence[Decoder]) -> None:
        self._steps = tuple(d.decode for d in decoders)

    def decode(self, data: bytes) -> str:
        """The label value of one raw field; raises SkipSeries to drop the series,
        Unresolved (with the whole chain's value) when a step could not resolve it yet, and
        ValueError when the field cannot be decoded (text that is not a number for errno):
        the collector counts that as a decoder error."""
        unresolved = False
        for step in self._steps:
            try:
                data = step(data)
            except Unresolved as provisional:
                data, unresolved = provisional.value, True
        if unresolved:
            raise Unresolved(data)
        # "replace" only matters when static_map/regexp come first and pass raw bytes through.
        return data.decode("utf-8", "replace")


def warm(options: Mapping[str, Any]) -> object | None:
    """Start reading the host state a decoder made with `options` looks up (ksym's kallsyms:
    ~0.1 s), before the decoder is made: the spawner describes a program's labels before its
    compile, its decoders are made once it is loaded, and its first scrape would otherwise
    wait for the read (issue 18). Hold the returned handle until the decoder is made: the
    read is shared with it."""
    if options.get("name") != "ksym":
        return None
    try:
        snapshot = ksym.table(options)
    except DecoderError:
        return None  # the decoder will say so when it is made
    snapshot.warm()
    return snapshot


def build_chain(options_list: Sequence[Mapping[str, Any]], size: int) -> Chain:
    """Build the chain for a field of `size` bytes; raises DecoderError on bad config."""
    if not options_list:
        raise DecoderError("a label needs at least one decoder")
    if size < 1:
        raise DecoderError(f"a field is at least 1 byte wide, not {size}")
    decoders: list[Decoder] = []
    for options in options_list:
        if not isinstance(options, Mapping):
            raise DecoderError(f"a decoder is a mapping with a 'name', not {options!r}")
        name = options.get("name")
        factory = REGISTRY.get(name) if isinstance(name, str) else None
        if factory is None:
            raise DecoderError(f"unknown decoder {name!r}, known: {', '.join(sorted(REGISTRY))}")
        try:
            # Only the first decoder sees the raw field; the others get text.
            decoders.append(factory(options, TEXT_INPUT if decoders else size))
        except (TypeError, ValueError, OverflowError) as err:
            if isinstance(err, DecoderError):
                raise
            # An option of the wrong type (a number where a path goes, a huge regexp repeat).
            raise DecoderError(f"{name}: bad options: {err}") from None
    return Chain(decoders)
