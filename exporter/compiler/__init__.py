"""The compile worker process (`python -I -m exporter.compiler`, started by the spawner): the only
code that imports bcc. It imports nothing of the config models, the HTTP front or the metrics:
each compile forks from it, so what it imports is start-up CPU and memory (worker.py)."""
