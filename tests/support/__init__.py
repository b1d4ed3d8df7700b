"""Helpers shared by every test tier, importable as `support` (pytest's pythonpath = ["tests"]).

Fixtures live in the conftest.py files; this package holds plain constants and functions.
"""
from __future__ import annotations

from .cli import run_cli
from .devices import devset, make_device, make_fake_sysfs
from .live import BDF, CXL, make_fake_tree
from .oracle import lspci_caps
from .paths import CXL_BDF, DATA, DUMPS, QEMU_CXL, QEMU_RP, ROOT, TESTS, all_dumps
from .procs import wait_loading

__all__ = [
    "BDF", "CXL", "CXL_BDF", "DATA", "DUMPS", "QEMU_CXL", "QEMU_RP", "ROOT", "TESTS",
    "all_dumps", "devset", "lspci_caps", "make_device", "make_fake_sysfs", "make_fake_tree", "run_cli",
    "wait_loading",
]
