"""bpftrace programs as metric sources: a subset of bpftrace translated into BCC C and a
native `metrics:` block (docs/bpftrace.md). bpftrace itself is the tests' oracle, never run here.

lexer -> parser (syntax tree) -> codegen (C, with runtime.py's helpers, typing expressions and
recording what each map is; tracefs.py expands wildcards and types `args`) -> metrics (which
maps are exported, and how); config.py ties it to the config file.
"""
