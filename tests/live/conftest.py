"""The live tier: root and bcc. It runs in `make test` and in CI here; it never writes to the
machine's real config space (writes go to fake sysfs/procfs trees of regular files)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cfgaudit.probes.live import detect_syscalls  # noqa: E402
from cfgaudit.regions import load_lspci_dump  # noqa: E402
from helpers import make_fake_sysfs  # noqa: E402

from livecommon import BDF, CXL  # noqa: E402,F401



def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.live)


@pytest.fixture(scope="session", autouse=True)
def live_ready() -> None:
    why = detect_syscalls()
    if why:
        # Not a skip: the live tier must run where the project says it runs (root, bcc).
        pytest.fail(f"live tier cannot run: {why} (run 'make deps' as root)")


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory) -> dict[str, str]:
    """A fake sysfs tree with the QEMU CXL device bound to cxl_pci, and a fake procfs tree."""
    root = tmp_path_factory.mktemp("live")
    (cs,) = load_lspci_dump(CXL)
    cs.driver, cs.config_size = "cxl_pci", 4096
    sysfs = make_fake_sysfs(str(root / "sys"), [cs])
    proc = root / "proc"
    (proc / "0d").mkdir(parents=True)
    (proc / "0d" / "00.0").write_bytes(bytes(cs.data))
    return {"sysfs": sysfs, "procfs": str(proc), "config": os.path.join(sysfs, "devices", BDF, "config"),
            "proc_file": str(proc / "0d" / "00.0"), "root": str(root)}
