"""bcc_exporter: BPF programs compiled with BCC, their maps served as Prometheus metrics."""

__version__ = "0.1.0"
