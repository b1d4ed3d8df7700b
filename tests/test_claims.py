"""Claim files: valid claims become regions; every mistake is reported as FILE:LINE."""
from __future__ import annotations

import pytest

from cfgaudit.errors import InputError
from cfgaudit.regions import build_registry, load_claims, load_devices
from support import CXL_BDF, QEMU_CXL, run_cli


def _claims(tmp_path, text: str) -> str:
    p = tmp_path / "claims.toml"
    p.write_text(text)
    return str(p)


GOOD = """\
# site claims
[[claim]]
kind = "user"
owner = "spdm-tool"
bdf = "0d:00.0"
capability = "doe"

[[claim]]
kind = "exclusive"
owner = "acme_drv"
vendor = 0x8086
device = 0x0d93
capability = "dvsec:0x1e98:8"
offset = 0x0c
length = 8

[[claim]]
kind = "managed"
owner = "acme_drv"
class = 0x0502
offset = 0x40
length = 2
kernels = ">=6.4"
"""


def test_claims_become_regions(tmp_path) -> None:
    path = _claims(tmp_path, GOOD)
    ds = load_devices(lspci_dumps=[QEMU_CXL])
    regs = build_registry(ds, kernel="6.4.0", claims=load_claims(path)).registry
    got = {(r.kind, r.start, r.length, r.owner, r.rule) for r in regs.regions() if r.rule.startswith("claims:")}
    assert got == {("user", 0x190, 0x18, "spdm-tool", f"claims:{path}:2"),
                   ("exclusive", 0x138 + 0x0C, 8, "acme_drv", f"claims:{path}:8"),
                   ("managed", 0x40, 2, "acme_drv", f"claims:{path}:17")}
    old = build_registry(ds, kernel="6.2.0", claims=load_claims(path)).registry
    assert not any(r.start == 0x40 and r.rule.startswith("claims:") for r in old.regions())
    assert old.is_exclusive(CXL_BDF, 0x144, 4)


def test_exclusive_claim_overlapping_the_kernels_fails_like_the_kernel(tmp_path) -> None:
    path = _claims(tmp_path, '[[claim]]\nkind = "exclusive"\nowner = "rogue"\nbdf = "0d:00.0"\noffset = 0x1a0\nlength = 4\n')
    ds = load_devices(lspci_dumps=[QEMU_CXL], drivers={CXL_BDF: "cxl_pci"})
    res = build_registry(ds, kernel="6.2.0", claims=load_claims(path))
    assert [r.owner for r in res.registry.regions(kind="exclusive")] == ["cxl_pci"]
    assert any("rogue" in w and "overlaps" in w for w in res.warnings)


@pytest.mark.parametrize("text,line,what", [
    ('[[claim]]\nkind = "mine"\nowner = "x"\nbdf = "0d:00.0"\n', 2, "kind must be one of"),
    ('[[claim]]\nkind = "user"\nbdf = "0d:00.0"\n', 1, "owner is required"),
    ('[[claim]]\nkind = "user"\nowner = "x"\n', 1, "needs a device"),
    ('[[claim]]\nkind = "user"\nowner = "x"\nbdf = "zz:00.0"\n', 4, "not a PCI address"),
    ('\n[[claim]]\nkind = "user"\nowner = "x"\nbdf = "0d:00.0"\ncolour = 1\n', 6, "unknown key 'colour'"),
    ('[[claim]]\nkind = "user"\nowner = "x"\nbdf = "0d:00.0"\ncapability = "warp"\n', 5, "not known"),
    ('[[claim]]\nkind = "user"\nowner = "x"\nbdf = "0d:00.0"\n', 1, "length is required"),
    ('[[claim]]\nkind = "user"\nowner = "x"\nbdf = "0d:00.0"\noffset = 0xff0\nlength = 0x20\n', 6, "runs past 4096"),
    ('[[claim]]\nkind = "user"\nowner = "x"\nbdf = "0d:00.0"\nlength = "4"\n', 5, "must be an integer"),
    ('[[claim]]\nkind = "user"\nowner = "x"\nbdf = "0d:00.0"\nlength = 4\nkernels = "~6.2"\n', 6, "kernels"),
    ('[[claim]]\nkind = "user"\nowner = = "x"\n', 3, "not valid TOML"),
    ('[[claim]]\nkind = "user"\nowner = "x"\nbdf = "0d:00.0"\nlength = 4\n[[claim]]\nkind = 3\n', 7, "kind must be"),
])
def test_bad_claims_name_file_and_line(tmp_path, text, line, what) -> None:
    path = _claims(tmp_path, text)
    with pytest.raises(InputError) as ei:
        load_claims(path)
    assert str(ei.value).startswith(f"{path}:{line}: "), str(ei.value)
    assert what in str(ei.value)


def test_cli_reports_claim_errors_in_one_line(tmp_path) -> None:
    path = _claims(tmp_path, '[[claim]]\nkind = "mine"\nowner = "x"\nbdf = "0d:00.0"\n')
    code, out, err = run_cli("regions", "--lspci-dump", QEMU_CXL, "--kernel", "6.2", "--claims", path)
    assert code == 2 and out == ""
    assert err == f"Error: {path}:2: kind must be one of exclusive, managed, user, not 'mine'\n"
