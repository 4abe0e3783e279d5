"""The compile workers' narrowed /proc/kallsyms (exporter.compiler.kallsyms_view), on the real
kernel: a process that narrowed its view sees only the names BCC looks up, still compiles and
loads what BCC compiled before (the same probe-read helpers chosen), resolves any symbol through
the fd held before, and leaves every other process's /proc/kallsyms whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from exporter.compiler.kallsyms_view import looked_up

# In a child: narrow() needs a process with one thread, and it changes that process for good.
CHILD = r"""
import json, sys
import bcc
from bcc import BPF
from exporter import kallsyms
from exporter.compiler import kallsyms_view

def compiled():
    # bpf_probe_read_user: BCC picks the helper from a kallsyms lookup (b_frontend_action.cc).
    text = '''
    TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
        char name[16];
        bpf_probe_read_user(&name, sizeof(name), args->filename);
        return name[0] == 0;
    }'''
    b = BPF(text=text)
    fn = b.load_func(b"tracepoint__syscalls__sys_enter_openat", BPF.TRACEPOINT)
    source = b.disassemble_func(b"tracepoint__syscalls__sys_enter_openat")
    b.cleanup()
    return fn.fd >= 0, source

before_ok, before = compiled()
why = kallsyms_view.narrow(bcc.__version__)
after_ok, after = compiled()
print(json.dumps({
    "why": why,
    "lines": open("/proc/kallsyms", "rb").read().decode().splitlines(),
    "same_code": before == after, "loaded": before_ok and after_ok,
    "vfs_read": kallsyms.addresses(["vfs_read"]).get("vfs_read", 0),
    "raw_tp": BPF.support_raw_tracepoint(),
}))
"""


def test_a_narrowed_view_compiles_the_same_code_and_hides_only_from_its_process():
    out = subprocess.run(
        [sys.executable, "-c", CHILD], check=True, capture_output=True, text=True, timeout=120
    )
    seen = json.loads(out.stdout)
    assert seen["why"] is None
    names = {line.split()[2] for line in seen["lines"]}
    assert {"bpf_probe_read_kernel", "bpf_probe_read_user", "__x64_sys_bpf"} <= names
    assert sorted(looked_up("".join(f"{line}\n" for line in seen["lines"]).encode())) == sorted(
        f"{line}\n".encode() for line in seen["lines"]
    )
    assert len(seen["lines"]) < 100
    assert seen["loaded"] and seen["same_code"], "the view changed what BCC compiled"
    assert seen["raw_tp"], "bcc no longer finds raw tracepoint support through the view"
    real = {
        line.split()[2]: int(line.split()[0], 16)
        for line in Path("/proc/kallsyms").read_text().splitlines()
    }
    assert len(real) > 10_000, "this process's /proc/kallsyms was narrowed too"
    assert seen["vfs_read"] == real["vfs_read"] != 0
