"""The per-program error boundary: one collector failing never fails the others or the scrape."""

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from exporter.compiler.prelude import counted_maps
from exporter.errors import LoadError
from exporter.metrics.self_metrics import ExporterCollector
from exporter.targets import Target, TargetWatch


class Collector:
    def __init__(
        self, name: str, fail: bool, code: str = "", maps: dict[str, int] | None = None
    ) -> None:
        self.program = SimpleNamespace(
            name=name,
            compile_seconds=0.5,
            attachments=[],
            functions={},
            maps=maps or {},
            counted_maps=counted_maps(code),
            spec=SimpleNamespace(program=SimpleNamespace(namespace="bcc"), code=code),
        )
        self.readers: list[object] = []
        self.map_readers: list[object] = []
        self.events: list[object] = []
        self.evictions = SimpleNamespace(total={})
        self.fail = fail

    def collect(self):
        if self.fail:
            raise OSError("map vanished")
        family = CounterMetricFamily(f"bcc_{self.program.name}", "h", labels=[])
        family.add_metric([], 23)
        yield family


def scrape(exporter: ExporterCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    return generate_latest(registry).decode()


def test_a_failing_program_is_reported_and_the_others_still_served():
    exporter = ExporterCollector()
    exporter.set_programs(
        [Collector("broken", fail=True), Collector("fine", fail=False)],
        [LoadError("never_loaded", "compile failed")],
    )
    text = scrape(exporter)
    assert "bcc_fine_total 23.0" in text
    assert 'bcc_exporter_collect_success{program="broken"} 0.0' in text
    assert 'bcc_exporter_collect_success{program="fine"} 1.0' in text
    assert 'bcc_exporter_enabled_programs{program="fine"} 1.0' in text
    assert 'bcc_exporter_enabled_programs{program="never_loaded"} 0.0' in text
    assert "bcc_broken" not in text


def test_without_a_header_check_no_header_metrics():
    text = scrape(ExporterCollector())
    assert "bcc_exporter_build_info" in text
    assert "kernel_headers" not in text


COUNTING = """
BPF_HASH(counts, u32, u64, 4);
BPF_HASH(starts, u32, u64, 4);
BPF_HASH(silent, u32, u64, 4);
BPF_TABLE("lru_hash", u32, u64, idiom, 4);
    if (!count)
        EXPORTER_UPDATE_FAILED(counts);
    if (starts.update(&key, &ts))
        EXPORTER_UPDATE_FAILED( starts );
    // a name that is no map of the program, as in a comment: EXPORTER_UPDATE_FAILED(nothing)
    if (!slot && exporter_key_added(idiom.insert(&key, &zero), EXPORTER_MAP(idiom)))
        slot = idiom.lookup(&key);
    exporter_add(slot, 1, EXPORTER_MAP(idiom));
"""


def test_maps_a_program_counts_failures_of_are_shown_at_zero_from_the_start():
    exporter = ExporterCollector()
    maps = {"counts": 10, "starts": 11, "silent": 12, "idiom": 13}
    exporter.set_programs([Collector("prog", fail=False, code=COUNTING, maps=maps)], [])
    failures = {
        (s.labels["program"], s.labels["map"]): s.value
        for family in text_string_to_metric_families(scrape(exporter))
        for s in family.samples
        if s.name == "bcc_exporter_map_update_failures_total"
    }
    # The counter idiom names its map (EXPORTER_MAP): its failures are counted too.
    assert failures == {("prog", "counts"): 0, ("prog", "starts"): 0, ("prog", "idiom"): 0}


def test_a_deleted_probe_target_is_reported_once_and_looked_at_once_a_second(tmp_path, caplog):
    binary = tmp_path / "app"
    binary.write_text("v1")
    probe = f"uprobe:{binary}:main"
    collector = Collector("app", fail=False)
    collector.program.attachments = [
        SimpleNamespace(function="on_main", probe=probe, target=Target.of(str(binary)))
    ]
    now = [100.0]
    exporter = ExporterCollector()
    exporter.targets = TargetWatch(clock=lambda: now[0])
    exporter.set_programs([collector], [])

    def missing() -> float:
        [value] = [
            s.value
            for family in text_string_to_metric_families(scrape(exporter))
            for s in family.samples
            if s.name == "bcc_exporter_probe_target_missing"
            and s.labels == {"program": "app", "function": "on_main", "probe": probe}
        ]
        return value

    assert missing() == 0
    binary.unlink()
    assert missing() == 0  # not looked at again within the second
    now[0] += 1
    assert missing() == 1
    binary.write_text("v2")  # a new file at the path is not the probed one
    now[0] += 1
    assert missing() == 1
    assert caplog.text.count("was deleted or replaced") == 1
