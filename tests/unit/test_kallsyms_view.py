"""Which /proc/kallsyms lines a compile still sees, and the bcc versions the view is for."""

from __future__ import annotations

from pathlib import Path

from exporter.compiler.kallsyms_view import looked_up, narrow


def test_the_view_keeps_the_names_bcc_looks_up_and_nothing_else():
    kept = [
        b"ffffffff81234560 T bpf_probe_read_kernel\n",
        b"ffffffff81234570 T bpf_probe_read_user\n",
        b"ffffffff81234580 T __x64_sys_bpf\n",
        b"ffffffff81234590 T __arm64_sys_bpf\n",
        b"ffffffff812345a0 t bpf_trampoline_link_prog\n",
        b"ffffffff812345b0 T bpf_lsm_bpf\n",
        b"ffffffff812345c0 t bpf_find_raw_tracepoint\n",
    ]
    dropped = [
        b"ffffffff8137a0e0 T vfs_read\n",
        b"ffffffff8137a0f0 T bpf_probe_read_kernel_str\n",
        b"ffffffffc06d1010 t foo_init\t[foo]\n",
        b"garbage\n",
    ]
    mixed = [line for pair in zip(dropped, kept, strict=False) for line in pair] + kept[4:]
    assert sorted(looked_up(b"".join(mixed))) == sorted(kept)


def test_another_bcc_keeps_the_whole_file(tmp_path: Path):
    # Checked before anything is read or mounted: the path is never opened.
    why = narrow("0.30.0", tmp_path / "absent")
    assert why == "bcc 0.30.0 may look up other symbols than bcc 0.26.x"
