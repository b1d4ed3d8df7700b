"""The sysfs source on fake trees (regular files) and on this machine's real tree (reads only)."""
from __future__ import annotations

import os

import pytest

from cfgaudit.regions import build_registry, load_devices, load_lspci_dump, load_sysfs, walk
from support import CXL_BDF, DUMPS, QEMU_CXL, lspci_caps, make_fake_sysfs, run_cli


@pytest.fixture
def fake(tmp_path):
    devs = load_lspci_dump(QEMU_CXL) + load_lspci_dump(f"{DUMPS}/qemu-6.1/lspci-xxxx_0000_00_00.0.txt")
    devs[0].driver = "cxl_pci"
    devs[0].config_size = 4096
    return make_fake_sysfs(str(tmp_path / "sys"), devs)


def test_fake_tree_equals_dump(fake) -> None:
    by_bdf = {cs.bdf: cs for cs in load_sysfs(fake)}
    (ref,) = load_lspci_dump(QEMU_CXL)
    cs = by_bdf[CXL_BDF]
    assert cs.data == ref.data and cs.driver == "cxl_pci" and cs.config_size == 4096
    assert by_bdf["0000:00:00.0"].config_size == 256
    res = build_registry(load_devices(sysfs_path=fake), kernel="6.2.0")
    assert [(r.start, r.length) for r in res.registry.regions(kind="exclusive")] == [(0x190, 0x18)]


def test_fake_tree_read_by_lspci_matches(fake, lspci) -> None:
    want = lspci_caps(lspci, ["-A", "linux-sysfs", "-O", f"sysfs.path={fake}"])
    for cs in load_sysfs(fake):
        assert [(c.space, c.offset) for c in walk(cs).caps] == [(s, o) for s, o, _ in want[cs.bdf]]


def test_short_read_is_reported_not_decoded(fake, monkeypatch) -> None:
    """Non-root readers of real sysfs get 64 bytes of a 4096-byte file."""
    cfg = os.path.join(fake, "devices", CXL_BDF, "config")
    with open(cfg, "r+b") as fh:
        head = fh.read(64)
        fh.seek(0)
        fh.truncate()
        fh.write(head)
    real_stat = os.stat

    def stat(path, *a, **k):
        st = real_stat(path, *a, **k)
        if str(path) == cfg:
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, 4096,
                                   st.st_atime, st.st_mtime, st.st_ctime))
        return st
    monkeypatch.setattr(os, "stat", stat)
    warnings: list[str] = []
    cs = next(c for c in load_sysfs(fake, warnings.append) if c.bdf == CXL_BDF)
    assert cs.is_known(0, 64) and not cs.is_known(64, 1)
    assert any("64 bytes" in w for w in warnings)
    assert "unknown-bytes" in [a.kind for a in walk(cs).anomalies]


def test_missing_tree_is_an_error(tmp_path) -> None:
    code, _, err = run_cli("devices", "--sysfs-path", str(tmp_path / "nope"))
    assert code == 2 and err.startswith("Error: ") and "nope" in err


def test_live_tree_knows_the_running_kernel() -> None:
    ds = load_devices()
    assert ds.kernel_release == os.uname().release
    assert ds.devices, "this machine has PCI devices"
