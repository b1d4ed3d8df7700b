"""lspci dump parsing: pciutils' format, -vvv/-k text between, and mail damage."""
from __future__ import annotations

import pytest

from cfgaudit.errors import InputError
from cfgaudit.regions import load_lspci_dump, walk
from support import DUMPS, QEMU_CXL

HOST_K = f"{DUMPS}/host/lspci-vvv-xxxx-k-host.txt"


def _write(tmp_path, text: str) -> str:
    p = tmp_path / "d.txt"
    p.write_text(text)
    return str(p)


def test_qemu_cxl_dump_is_fully_known() -> None:
    (cs,) = load_lspci_dump(QEMU_CXL)
    assert cs.bdf == "0000:0d:00.0"
    assert (cs.vendor, cs.device, cs.class_code) == (0x8086, 0x0D93, 0x050210)
    assert cs.is_known(0, 4096)
    assert cs.dword(0x190) == 0x0001002E  # DOE header, as the QEMU README records


def test_vvv_and_driver_lines_between(tmp_path) -> None:
    devs = load_lspci_dump(HOST_K)
    assert devs and all(cs.is_known(0, 64) for cs in devs)
    assert any(cs.driver == "virtio-pci" for cs in devs)


def test_mail_quoted_wrapped_and_crlf(tmp_path) -> None:
    with open(QEMU_CXL) as fh:
        lines = fh.read().splitlines()
    mangled = ["> " + ln for ln in lines[:3]]
    row = lines[3].split()  # "20: f4 ..." wrapped after 8 bytes
    mangled += ["> " + " ".join(row[:9]), "> " + " ".join(row[9:])]
    mangled += ["> " + ln for ln in lines[4:]]
    warnings: list[str] = []
    (cs,) = load_lspci_dump(_write(tmp_path, "\r\n".join(mangled) + "\r\n"), warnings.append)
    (ref,) = load_lspci_dump(QEMU_CXL)
    assert cs.data == ref.data and cs.known == ref.known
    assert any("quoted" in w for w in warnings) and any("wrapped" in w for w in warnings)
    assert all(":" in w.split()[0] for w in warnings), "warnings name FILE:LINE"


@pytest.mark.parametrize("text,line,what", [
    ("0d:00.0 x\n00: 86 80 zz 0d\n", 2, "not a two-digit hex byte"),
    ("00: 86 80 93 0d\n", 1, "before any device line"),
    ("0d:00.0 x\nff0: " + " ".join(["00"] * 17) + "\n", 2, "at most 16"),
    ("0d:00.0 x\n00: 86 80\nfff: 00 00\n", 3, "past the 4096 bytes"),
])
def test_malformed_lines_name_file_and_line(tmp_path, text: str, line: int, what: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as ei:
        load_lspci_dump(path)
    assert str(ei.value).startswith(f"{path}:{line}: ") and what in str(ei.value)


def test_missing_file_is_an_input_error() -> None:
    with pytest.raises(InputError, match="/nonexistent/dump.txt"):
        load_lspci_dump("/nonexistent/dump.txt")


def test_anomalies_are_data() -> None:
    (cs,) = load_lspci_dump(f"{DUMPS}/odd/std-loop.txt")
    kinds = [a.kind for a in walk(cs).anomalies]
    assert kinds == ["loop"]
    (cs,) = load_lspci_dump(f"{DUMPS}/odd/ext-aliased.txt")
    assert "aliased" in [a.kind for a in walk(cs).anomalies]
    assert not any(c.kernel_visible for c in walk(cs).caps if c.space == "ext")
    (cs,) = load_lspci_dump(f"{DUMPS}/odd/std-header-pointer.txt")
    m = walk(cs)
    assert [(c.offset, c.kernel_visible) for c in m.caps] == [(0x40, True), (0x10, False)]
    (cs,) = load_lspci_dump(f"{DUMPS}/odd/ext-256-byte-dump.txt")
    assert "no-ext-space" in [a.kind for a in walk(cs).anomalies]
    (cs,) = load_lspci_dump(f"{DUMPS}/odd/x-64-byte-dump.txt")
    assert "unknown-bytes" in [a.kind for a in walk(cs).anomalies]


def test_std_48_slot_chain_is_all_kernel_visible() -> None:
    (cs,) = load_lspci_dump(f"{DUMPS}/odd/std-48-slots.txt")
    caps = walk(cs).caps
    assert len(caps) == 48 and all(c.kernel_visible for c in caps)  # TTL 48 reaches every slot
