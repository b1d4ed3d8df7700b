"""The live tier: root and bcc. It runs in `make test` and in CI here; it never writes to the
machine's real config space (writes go to fake sysfs/procfs trees of regular files).
Each tests/live/test_*.py marks itself with a module-level `pytestmark = pytest.mark.live`."""
from __future__ import annotations

import pytest

from cfgaudit.probes.syscalls import detect_syscalls
from support import make_fake_tree


@pytest.fixture(scope="session", autouse=True)
def live_ready() -> None:
    why = detect_syscalls()
    if why:
        # Not a skip: the live tier must run where the project says it runs (root, bcc).
        pytest.fail(f"live tier cannot run: {why} (run 'make deps' as root; make test does)")


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory) -> dict[str, str]:
    """A fake sysfs tree with the QEMU CXL device bound to cxl_pci, and a fake procfs tree."""
    return make_fake_tree(str(tmp_path_factory.mktemp("live")))
