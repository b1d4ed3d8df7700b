"""What the live tier (tests/live) writes through: a fake sysfs and procfs tree of regular files,
never this machine's real config space."""
from __future__ import annotations

import os

from cfgaudit.regions import load_lspci_dump

from .devices import make_fake_sysfs
from .paths import CXL_BDF, QEMU_CXL

BDF = CXL_BDF
CXL = QEMU_CXL


def make_fake_tree(root: str) -> dict[str, str]:
    """The QEMU CXL device bound to cxl_pci in a fake sysfs tree under root/sys, and a fake procfs tree
    under root/proc; returns the paths the live tests use."""
    (cs,) = load_lspci_dump(CXL)
    cs.driver, cs.config_size = "cxl_pci", 4096
    sysfs = make_fake_sysfs(os.path.join(root, "sys"), [cs])
    proc = os.path.join(root, "proc")
    os.makedirs(os.path.join(proc, "0d"), exist_ok=True)
    proc_file = os.path.join(proc, "0d", "00.0")
    with open(proc_file, "wb") as fh:
        fh.write(bytes(cs.data))
    return {"sysfs": sysfs, "procfs": proc, "config": os.path.join(sysfs, "devices", BDF, "config"),
            "proc_file": proc_file, "root": root}
