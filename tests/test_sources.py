"""The SOURCES table: every row loads the same device alike, and the table drives load_devices.

docs/sources.md holds the table as generated here; ``python tests/test_sources.py`` rewrites it.
"""
from __future__ import annotations

import os
import sys

import pytest

from cfgaudit.errors import InputError, UsageError
from cfgaudit.hostpaths import HostPaths
from cfgaudit.regions import (
    SOURCES,
    DeviceSet,
    Source,
    build_registry,
    device_views,
    load_devices,
    load_lspci_dump,
    running_kernel,
    save_snapshot,
)
from support import CXL_BDF, QEMU_CXL, QEMU_RP, ROOT, devset, make_device, make_fake_sysfs
from support.docs import doc_block, md_table, rewrite_block

DOC = os.path.join(ROOT, "docs", "sources.md")
BEGIN = "<!-- SOURCES table: generated from cfgaudit.regions.SOURCES; python tests/test_sources.py rewrites it -->"
END = "<!-- end of SOURCES table -->"
LIVE = os.path.isdir("/sys/bus/pci/devices")


@pytest.fixture
def inputs(tmp_path) -> dict[str, str]:
    """The QEMU CXL device as each source's input: the dump, a snapshot of it, a fake sysfs tree."""
    ds = DeviceSet()
    for cs in load_lspci_dump(QEMU_CXL):
        ds.add(cs)
    ds.kernel_release, ds.host = "6.2.0", "builder"
    snap = str(tmp_path / "snap.json")
    save_snapshot(ds, snap)
    (cs,) = load_lspci_dump(QEMU_CXL)
    cs.config_size = 4096  # the fake tree's config file is as long as the kernel's cfg_size
    tree = make_fake_sysfs(str(tmp_path / "sys"), [cs])
    return {"lspci-dump": QEMU_CXL, "snapshot": snap, "sysfs": tree}


def _shape(ds: DeviceSet) -> list[tuple]:
    """What every source must agree on: bytes, which are known, driver, size, capabilities, regions."""
    views = device_views(ds)
    res = build_registry(ds, kernel="6.2.0")
    regions = [(r.bdf, r.start, r.length, r.owner, r.kind, r.rule) for r in res.registry.regions()]
    return [(v.cs.bdf, bytes(v.cs.data), bytes(v.cs.known), v.cs.driver, v.cs.config_size,
             [(c.space, c.id, c.offset) for c in v.caps.caps]) for v in views] + [tuple(regions)]


def test_every_row_has_a_test_input(inputs) -> None:
    assert set(inputs) == set(SOURCES), "give each SOURCES row an input in the 'inputs' fixture"


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_row_loads_the_cxl_device_identically(inputs, name: str) -> None:
    want = _shape(load_devices(lspci_dumps=[QEMU_CXL], drivers={CXL_BDF: "cxl_pci"}))
    ds = load_devices(sources={name: inputs[name]}, drivers={CXL_BDF: "cxl_pci"})
    assert list(ds.devices) == [CXL_BDF]
    assert _shape(ds) == want
    doe = [r for r in build_registry(ds, kernel="6.2.0").registry.regions(kind="exclusive")]
    assert [(r.start, r.length) for r in doe] == [(0x190, 0x18)]


def test_only_the_snapshot_carries_host_facts(inputs) -> None:
    for name, path in inputs.items():
        ds = load_devices(sources={name: path})
        facts = (ds.kernel_release, ds.host)
        assert facts == (("6.2.0", "builder") if name == "snapshot" else (None, None)), name


def test_keywords_are_the_rows_by_arg(inputs) -> None:
    for row in SOURCES.values():
        path = inputs[row.name]
        by_kw = load_devices(**{row.arg: [path] if row.repeatable else path})
        assert _shape(by_kw) == _shape(load_devices(sources={row.name: path}))


def test_rows_are_well_formed() -> None:
    for name, row in SOURCES.items():
        assert row.name == name and row.help and "\n" not in row.help
        assert row.flag.startswith("--") and row.metavar.isupper(), row.option
        assert row.arg.isidentifier() and callable(row.load)
    assert [r.name for r in SOURCES.values() if r.default] == ["sysfs"]


def test_a_new_source_is_one_row(monkeypatch) -> None:
    """A test-local row: its loader is all it takes for load_devices to read it."""
    seen: list[tuple[str, HostPaths]] = []

    def load_fixture(path: str, warn, paths: HostPaths) -> DeviceSet:
        seen.append((path, paths))
        warn(f"{path}: made up")
        ds = devset(make_device("0000:01:00.0", 0x8086, 0x1234, 0x020000))
        ds.kernel_release, ds.host = "6.12.0", "fixture-host"
        return ds

    monkeypatch.setitem(SOURCES, "fixture", Source("fixture", "devices made up by a test", "--fixture NAME",
                                                   "fixture", True, load_fixture))
    paths = HostPaths(sysfs="/nonexistent")
    ds = load_devices(lspci_dumps=[QEMU_CXL], sources={"fixture": ["a", "b"]}, paths=paths)
    assert sorted(ds.devices) == ["0000:01:00.0", CXL_BDF]
    assert seen == [("a", paths), ("b", paths)]
    assert (ds.kernel_release, ds.host) == ("6.12.0", "fixture-host")
    assert ds.warnings == ["a: made up", "b: made up"]


def test_a_row_with_a_default_loads_when_no_source_is_named(tmp_path, monkeypatch) -> None:
    tree = make_fake_sysfs(str(tmp_path / "sys"), load_lspci_dump(QEMU_RP))
    monkeypatch.setitem(SOURCES, "fixture", Source(
        "fixture", "one made-up device by default", "--fixture NAME", "fixture", False,
        lambda path, warn, paths: devset(make_device("0000:01:00.0", 0x8086, 0x1234, 0x020000)),
        default=lambda paths: "builtin"))
    ds = load_devices(paths=HostPaths(sysfs=tree))
    assert sorted(ds.devices) == ["0000:01:00.0", "0000:0c:00.0"]
    assert ds.kernel_release is None  # a fake tree is not this machine


def test_default_source_is_paths_sysfs(tmp_path) -> None:
    tree = make_fake_sysfs(str(tmp_path / "sys"), load_lspci_dump(QEMU_RP))
    ds = load_devices(paths=HostPaths(sysfs=tree))
    assert list(ds.devices) == ["0000:0c:00.0"] and ds.kernel_release is None
    with pytest.raises(InputError):
        load_devices(paths=HostPaths(sysfs=str(tmp_path / "nope")))


def test_later_rows_win(inputs, tmp_path) -> None:
    """Table order is load order: the dump's bytes beat the snapshot's, with a warning."""
    ds = DeviceSet()
    for cs in load_lspci_dump(QEMU_CXL):
        cs.data[0x40] ^= 0xFF
        ds.add(cs)
    snap = str(tmp_path / "changed.json")
    save_snapshot(ds, snap)
    got = load_devices(snapshot=snap, lspci_dumps=[QEMU_CXL])
    (ref,) = load_lspci_dump(QEMU_CXL)
    assert got.devices[CXL_BDF].data == ref.data
    assert any("given twice with different bytes" in w for w in got.warnings)


def test_bad_source_arguments() -> None:
    with pytest.raises(UsageError, match="--snapshot takes one FILE"):
        load_devices(sources={"snapshot": ["a.json", "b.json"]})
    with pytest.raises(UsageError, match="unknown config-space source 'nope'"):
        load_devices(sources={"nope": "x"})
    with pytest.raises(UsageError, match="no such device"):
        load_devices(lspci_dumps=[QEMU_CXL], drivers={"0000:99:00.0": "x"})


def _fake_proc(tmp_path) -> HostPaths:
    proc = tmp_path / "proc"
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "sys" / "kernel" / "osrelease").write_text("6.1.0-56-amd64\n")
    (proc / "version").write_text("Linux version 6.1.0-56-amd64 (gcc-12 (Debian 12.2.0-14) 12.2.0) "
                                  "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2025-01-01)\n")
    (proc / "cmdline").write_text("root=/dev/vda1 iomem=relaxed quiet\n")
    return HostPaths(proc=str(proc))


def test_running_kernel_reads_paths_proc(tmp_path) -> None:
    paths = _fake_proc(tmp_path)
    assert running_kernel(paths) == ("6.1.0-56-amd64", "6.1.192", True)
    ds = load_devices(lspci_dumps=[QEMU_CXL])
    res = build_registry(ds, paths=paths)
    assert (res.kernel.major, res.kernel.minor, res.kernel.patch) == (6, 1, 192)
    assert any("6.1.0-56-amd64" in w for w in res.warnings)


@pytest.mark.skipif(not LIVE, reason="this machine has no /sys/bus/pci")
def test_live_tree_facts_come_from_paths_proc(tmp_path) -> None:
    """Reads this machine's /sys/bus/pci (never writes); the kernel facts from a fake proc."""
    ds = load_devices(paths=_fake_proc(tmp_path))
    assert ds.devices and ds.host
    assert (ds.kernel_release, ds.kernel_version, ds.iomem_relaxed) == ("6.1.0-56-amd64", "6.1.192", True)


# ----------------------------------------------------------------------------------------------
# docs/sources.md
# ----------------------------------------------------------------------------------------------

def sources_table_md() -> str:
    """docs/sources.md's table, from SOURCES (in load order)."""
    return md_table(["source", "option", "repeatable", "default (no source named)", "help"],
                    ([f"`{r.name}`", f"`{r.option}`", "yes" if r.repeatable else "no",
                      f"`{r.default(HostPaths())}`" if r.default else "", r.help] for r in SOURCES.values()))


def test_sources_doc_is_current() -> None:
    assert doc_block(DOC, BEGIN, END) == sources_table_md(), "run: python tests/test_sources.py"


if __name__ == "__main__":
    rewrite_block(DOC, BEGIN, END, sources_table_md())
    sys.exit(0)
