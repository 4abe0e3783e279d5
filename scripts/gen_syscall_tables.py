#!/usr/bin/env python3
"""Generate exporter/decoders/syscall_tables.py from the kernel's own syscall definitions.

    python3 scripts/gen_syscall_tables.py                  # newest /usr/src/linux-headers-*-amd64
    python3 scripts/gen_syscall_tables.py --headers DIR    # that arch headers dir (or source tree)
    python3 scripts/gen_syscall_tables.py --check          # exit 1 if its tables differ

Sources, read through the C preprocessor (`cpp -dM`) so that the kernel's own #if logic decides:
- x86_64: arch/x86/entry/syscalls/syscall_64.tbl when the tree has it (a kernel source tree;
  ABIs `common` and `64`), else the uapi header generated from it,
  arch/x86/include/generated/uapi/asm/unistd_64.h (Debian's linux-headers-*-amd64).
- arm64: arch/arm64/include/uapi/asm/unistd.h, which sets arm64's __ARCH_WANT_* and includes
  the generic table include/uapi/asm-generic/unistd.h (the common headers); __NR_xxx defined as
  __NR3264_xxx (64-bit variants of the 32/64 split) are resolved. Kernels from 6.11 on generate
  arm64's header from scripts/syscall.tbl at build time: use headers older than that, or a
  built tree.

Debian splits headers in two directories: the arch one (--headers, with the generated files)
and the common one (--common, found from the arch one's Makefile when not given).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "exporter" / "decoders" / "syscall_tables.py"

X86_TBL = "arch/x86/entry/syscalls/syscall_64.tbl"
X86_UNISTD = "arch/x86/include/generated/uapi/asm/unistd_64.h"
ARM64_UNISTD = "arch/arm64/include/uapi/asm/unistd.h"
GENERIC_UNISTD = "include/uapi/asm-generic/unistd.h"
# Markers of the generic table, not system calls.
NOT_SYSCALLS = {"syscalls", "arch_specific_syscall"}


class GenError(Exception):
    pass


def newest_headers() -> Path:
    found = sorted(
        Path("/usr/src").glob("linux-headers-*-amd64"),
        key=lambda p: [int(n) if n.isdigit() else n for n in re.split(r"(\d+)", p.name)],
    )
    if not found:
        raise GenError("no /usr/src/linux-headers-*-amd64: install linux-headers-amd64")
    return found[-1]


def common_of(headers: Path) -> Path:
    """Debian's arch headers Makefile is one line: include <common dir>/Makefile."""
    makefile = headers / "Makefile"
    if makefile.exists():
        m = re.match(r"include (\S+)/Makefile\s*$", makefile.read_text())
        if m:
            return Path(m.group(1))
    return headers  # a full source tree holds both


def cpp_defines(header: Path, includes: list[Path]) -> dict[str, str]:
    """Every macro `header` defines, as the preprocessor sees it, without any host header."""
    if shutil.which("cpp") is None:
        raise GenError("cpp not found: apt-get install cpp")
    done = subprocess.run(
        ["cpp", "-dM", "-undef", "-nostdinc", *(f"-I{d}" for d in includes), str(header)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise GenError(f"cpp {header} failed:\n{done.stderr}")
    defines = {}
    for line in done.stdout.splitlines():
        m = re.match(r"#define (\w+) (.+)$", line)
        if m:
            defines[m.group(1)] = m.group(2).strip()
    return defines


def syscalls_of(defines: dict[str, str]) -> dict[int, str]:
    """__NR_name -> number, following macro references (__NR_fcntl -> __NR3264_fcntl -> 25)."""
    table: dict[int, str] = {}
    for macro in defines:
        if not macro.startswith("__NR_") or macro[5:] in NOT_SYSCALLS:
            continue
        value, seen = defines[macro], {macro}
        while value in defines and value not in seen:
            seen.add(value)
            value = defines[value]
        if not value.isdigit():
            raise GenError(f"{macro} is {defines[macro]!r}, not a number")
        number, name = int(value), macro[5:]
        if number in table:
            raise GenError(f"{number} is both {table[number]} and {name}")
        table[number] = name
    return dict(sorted(table.items()))


def x86_64_table(headers: Path, common: Path) -> tuple[dict[int, str], Path]:
    for tree in (headers, common):
        tbl = tree / X86_TBL
        if tbl.exists():
            table = {}
            for line in tbl.read_text().splitlines():
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 3 and fields[1] in ("common", "64"):
                    table[int(fields[0])] = fields[2]
            return dict(sorted(table.items())), tbl
    unistd = headers / X86_UNISTD
    if not unistd.exists():
        raise GenError(f"neither {headers / X86_TBL} nor {unistd} exists")
    return syscalls_of(cpp_defines(unistd, [])), unistd


def arm64_table(common: Path) -> tuple[dict[int, str], Path]:
    unistd = common / ARM64_UNISTD
    if not unistd.exists():
        raise GenError(f"{unistd} does not exist")
    includes = [common / "arch/arm64/include/uapi", common / "include/uapi"]
    defines = cpp_defines(unistd, includes)
    if defines.get("__BITS_PER_LONG") != "64":
        raise GenError(f"{unistd}: __BITS_PER_LONG is {defines.get('__BITS_PER_LONG')}, not 64")
    return syscalls_of(defines), unistd


def kernel_version(headers: Path, common: Path) -> str:
    makefile = (common / "Makefile").read_text()
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL) = (\S*)", makefile, re.M))
    version = "Linux {VERSION}.{PATCHLEVEL}.{SUBLEVEL}".format_map(fields)
    uts = headers / "include/generated/utsrelease.h"
    m = re.search(r'UTS_RELEASE "([^"]+)"', uts.read_text()) if uts.exists() else None
    return f"{version} (release {m.group(1)})" if m else version


def render(headers: Path, common: Path, command: str) -> str:
    x86_64, x86_source = x86_64_table(headers, common)
    arm64, arm64_source = arm64_table(common)
    kernel = kernel_version(headers, common)
    out = [
        '"""System call numbers -> names, for the syscall decoder. GENERATED: do not edit.',
        "",
        f"Generated by: {command}",
        f"Kernel: {kernel}",
        f"x86_64: {x86_source}",
        f"arm64: {arm64_source}",
        f"    (with {GENERIC_UNISTD} through cpp)",
        "",
        "Numbers added by later kernels are missing: regenerate from newer headers to get them.",
        '"""',
        "",
        f'KERNEL = "{kernel}"',
        "",
    ]
    for var, table in (("X86_64", x86_64), ("ARM64", arm64)):
        out.append(f"{var}: dict[int, str] = {{")
        out.extend(f'    {number}: "{name}",' for number, name in table.items())
        out.extend(["}", ""])
    return "\n".join(out[:-1]) + "\n"


def tables(text: str) -> str:
    """The generated tables of a rendered file, from `X86_64: dict` on."""
    return text.partition("\nX86_64: dict")[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--headers", type=Path, help="arch headers dir or kernel source tree")
    parser.add_argument("--common", type=Path, help="Debian's common headers dir")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    try:
        headers = args.headers or newest_headers()
        common = args.common or common_of(headers)
        command = f"python3 scripts/gen_syscall_tables.py --headers {headers}"
        if args.common:
            command += f" --common {common}"
        text = render(headers, common, command)
    except GenError as err:
        print(f"gen_syscall_tables: {err}", file=sys.stderr)
        return 2
    if args.check:
        # The tables only: the lines above them name the headers' build, which Debian replaces
        # (6.1.0-56 by -57) without changing a system call.
        if args.output.exists() and tables(args.output.read_text()) == tables(text):
            return 0
        print(
            f"gen_syscall_tables: the tables of {args.output} are not {headers}'s", file=sys.stderr
        )
        return 1
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
