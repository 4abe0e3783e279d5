"""Metrics stage: map contents -> Prometheus families, and the exporter's own metrics."""

# Series one metric may export; past it, series are dropped and counted (--metrics.max-series).
# Here, not in program.py: the command line reads it before the heavy imports (issue 18).
MAX_SERIES = 20_000
