"""Privilege separation: the privileged spawner and the server's side of it.

- spawner.py: the only process that keeps capabilities. It reads the config files itself
  (safe_files.py), has them validated by a config worker, compiles what they say in compile
  workers and hands the server fds plus typed descriptions (exporter.workers.messages).
- selection.py: which files a command's config flags name, read safely and validated.
- client.py: the server's handle on the spawner: it can ask for a reload and a header check.
- drop.py: the server's privilege drop (user, group, capabilities, no new privileges).

Standard library only, as everything the spawner imports.
"""
