"""Where the tests' data lives, and the devices the tests name most."""
from __future__ import annotations

import glob
import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
DATA = os.path.join(TESTS, "data")
DUMPS = os.path.join(DATA, "dumps")
QEMU_CXL = os.path.join(DUMPS, "qemu-6.1", "lspci-xxxx_0000_0d_00.0.txt")
QEMU_RP = os.path.join(DUMPS, "qemu-6.1", "lspci-xxxx_0000_0c_00.0.txt")
CXL_BDF = "0000:0d:00.0"


def all_dumps() -> list[str]:
    """Every lspci dump under tests/data/dumps, sorted."""
    return sorted(glob.glob(os.path.join(DUMPS, "**", "*.txt"), recursive=True))
