"""Shared constants and helpers for cfgaudit's tests (fixtures live in conftest.py)."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
DUMPS = os.path.join(DATA, "dumps")
QEMU_CXL = os.path.join(DUMPS, "qemu-6.1", "lspci-xxxx_0000_0d_00.0.txt")
QEMU_RP = os.path.join(DUMPS, "qemu-6.1", "lspci-xxxx_0000_0c_00.0.txt")
CXL_BDF = "0000:0d:00.0"


def all_dumps() -> list[str]:
    return sorted(glob.glob(os.path.join(DUMPS, "**", "*.txt"), recursive=True))


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run cfgaudit's CLI in-process; returns (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from cfgaudit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def lspci_caps(lspci_path: str, args: list[str]) -> dict[str, list[tuple[str, int, str]]]:
    """Run lspci -vvv -D and return {bdf: [(space, offset, text), ...]} for real capability lines."""
    p = subprocess.run([lspci_path, "-vvv", "-D", *args], capture_output=True, text=True, check=True)
    out: dict[str, list[tuple[str, int, str]]] = {}
    cur = None
    for line in p.stdout.splitlines():
        if line and not line[0].isspace():
            cur = line.split()[0]
            out[cur] = []
            continue
        s = line.strip()
        if cur is None or not s.startswith("Capabilities: ["):
            continue
        inside, _, rest = s[len("Capabilities: ["):].partition("]")
        if rest.strip().startswith("<"):
            continue  # <chain looped>, <chain broken>
        off_txt = inside.split()[0]
        space = "ext" if (len(off_txt) == 3 or " v" in inside) else "std"
        out[cur].append((space, int(off_txt, 16), rest.strip()))
    return out
