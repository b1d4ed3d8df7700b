#!/usr/bin/env python3
"""Do two versions of the BPF programs compile to the same bytecode? (root: bcc; nothing is
loaded or attached.)

    sudo .venv/bin/python bench/bpf_identity.py [--before REV|DIR] [--after DIR] [--reads] [--follow]

Compiles both programs (syscalls, kernel) from the bpf/ files of ``--before`` (a git revision,
read with ``git show``, default HEAD; or a directory) and of ``--after`` (default the working
tree's src/cfgaudit/bpf) with the same -D constants, and compares every function's instructions
with the map fds blanked (the fds differ from compile to compile). Prints, per program, the
compile time of each side and the functions whose instructions differ; exit 1 if any do.
Issue 10 used it to show that trimming the includes and renaming the read helpers changed no
instruction (BENCHMARKS.md, "Probes ready").
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from cfgaudit.probes import bpfcache  # noqa: E402
from cfgaudit.probes.bccutil import BPF_DIR, define_flags, import_bcc, program_text  # noqa: E402

PROGRAMS = {"syscalls": "cfgaudit_syscalls.bpf.c", "kernel": "cfgaudit_kernel.bpf.c"}
REL = "src/cfgaudit/bpf"


def bpf_dir_of(spec: str, tmp: str) -> str:
    """A directory holding the bpf/ files of ``spec`` (a directory, or a git revision)."""
    if os.path.isdir(spec):
        return os.path.abspath(spec)
    names = subprocess.run(["git", "-C", ROOT, "ls-tree", "--name-only", f"{spec}:{REL}"], check=True,
                           capture_output=True, text=True).stdout.split()
    d = os.path.join(tmp, "before")
    os.makedirs(d)
    for n in names:
        data = subprocess.run(["git", "-C", ROOT, "show", f"{spec}:{REL}/{n}"], check=True, capture_output=True).stdout
        with open(os.path.join(d, n), "wb") as fh:
            fh.write(data)
    return d


def compile_hashes(bcc, bpf_dir: str, program: str, consts: dict) -> tuple[float, dict[str, str]]:
    cflags = [f"-I{bpf_dir}", *define_flags(consts), "-Wno-macro-redefined"]
    t = time.perf_counter()
    b = bpfcache.compile_program(bcc, program_text(program, bpf_dir).encode(), cflags)
    dt = time.perf_counter() - t
    try:
        names = [bcc.lib.bpf_function_name(b.module, i).decode() for i in range(bcc.lib.bpf_num_functions(b.module))]
        return dt, {n: hashlib.sha256(bpfcache.program_instructions(b, n)[0]).hexdigest() for n in names}
    finally:
        b.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="HEAD")
    ap.add_argument("--after", default=BPF_DIR)
    ap.add_argument("--reads", action="store_true")
    ap.add_argument("--follow", action="store_true")
    args = ap.parse_args()
    bcc = import_bcc()
    consts = {"FOLLOW": args.follow, "TRACE_READS": args.reads, "RINGBUF_PAGES": 4096,
              "SYSFS_PATH": "/sys/bus/pci", "PROCFS_PATH": "/proc/bus/pci"}
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        before = bpf_dir_of(args.before, tmp)
        after = os.path.abspath(args.after)
        for name, program in PROGRAMS.items():
            tb, hb = compile_hashes(bcc, before, program, consts)
            ta, ha = compile_hashes(bcc, after, program, consts)
            changed = sorted(n for n in set(hb) | set(ha) if hb.get(n) != ha.get(n))
            differ += len(changed)
            print(f"{name}: {len(ha)} functions, compile {tb:.2f} s before, {ta:.2f} s after; "
                  f"identical: {'yes' if not changed else 'no'}" + (f" ({len(changed)} differ: {', '.join(changed)})"
                                                                    if changed else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
