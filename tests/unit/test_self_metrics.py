"""The per-program error boundary: one collector failing never fails the others or the scrape."""

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily

from exporter.errors import LoadError
from exporter.metrics.self_metrics import ExporterCollector


class Collector:
    def __init__(self, name: str, fail: bool) -> None:
        self.program = SimpleNamespace(
            name=name,
            compile_seconds=0.5,
            attachments=[],
            functions={},
            spec=SimpleNamespace(program=SimpleNamespace(namespace="bcc")),
        )
        self.readers: list[object] = []
        self.map_readers: list[object] = []
        self.events: list[object] = []
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
