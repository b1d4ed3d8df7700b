"""The bundled scenarios: golden reports, and the facts each one is there to show."""
from __future__ import annotations

import json
import os

import pytest

from support import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = sorted(d for d in os.listdir(os.path.join(ROOT, "sample-traces"))
                   if os.path.isdir(os.path.join(ROOT, "sample-traces", d)))
GOLDEN = {"table": "expected.txt", "json": "expected.json", "github": "expected.github"}


@pytest.fixture(autouse=True)
def at_root(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)


def test_at_least_five_scenarios() -> None:
    assert len(SCENARIOS) >= 5


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("fmt", sorted(GOLDEN))
def test_golden_reports(name: str, fmt: str) -> None:
    code, out, err = run_cli("analyze", f"sample-traces/{name}/trace.jsonl", "--format", fmt)
    assert code in (0, 1), err
    with open(os.path.join(ROOT, "sample-traces", name, GOLDEN[fmt])) as fh:
        assert out == fh.read(), f"{name}: rerun 'python3 sample-traces/make_samples.py --expected' and review"


def _doc(name: str) -> tuple[int, dict]:
    code, out, _ = run_cli("analyze", f"sample-traces/{name}/trace.jsonl", "--format", "json")
    return code, json.loads(out)


def test_doe_on_6_2_kernel_warns_once_cfgaudit_reports_every_write() -> None:
    code, d = _doc("cxl-doe-6.2")
    f = d["findings"]
    assert code == 1 and len(f) == 12 and all(x["kind"] == "exclusive" and x["kernel_taints"] for x in f)
    assert [x["kernel_logs"] for x in f].count(True) == 1 and f[0]["kernel_logs"]
    assert any("started a CXL compliance request" in (x["doe"] or "") for x in f)
    assert any("started a DOE discovery request" in (x["doe"] or "") for x in f)


def test_doe_through_procfs_on_6_2_the_kernel_is_silent() -> None:
    code, d = _doc("cxl-doe-procfs-6.2")
    f = d["findings"]
    assert code == 1 and len(f) == 12 and all(x["via"] == "procfs" for x in f)
    assert not any(x["kernel_taints"] or x["kernel_logs"] for x in f)


def test_ryzenadj_smn_on_6_15() -> None:
    code, d = _doc("amd-smn-6.15")
    f = d["findings"]
    assert code == 1 and sorted({x["offset"] for x in f}) == [0xB8, 0xBC]
    ex = [x for x in f if x["kind"] == "exclusive"]
    assert len(ex) == 4 and all(x["owner"] == "amd_node" and x["kernel_taints"] for x in ex)
    assert ex[0]["kernel_message"].endswith("ryzenadj: Unexpected write to kernel-exclusive config offset b8")


def test_aspm_tweak_is_managed_and_silent() -> None:
    code, d = _doc("aspm-setpci-6.12")
    (f,) = d["findings"]
    assert code == 1 and (f["kind"], f["rule"], f["kernel_taints"]) == ("managed", "pcie-lnkctl", False)
    assert (f["old_value"], f["changed_bits"]) == ("0000", "0200")  # ASPM L1 enable, bit 1 (LE bytes)


def test_lspci_scan_is_clean() -> None:
    code, d = _doc("lspci-scan-6.12")
    assert code == 0 and d["findings"] == [] and d["summary"]["reads"] > 100
    code, _, _ = run_cli("check", "sample-traces/lspci-scan-6.12/trace.jsonl", "--fail-on", "managed")
    assert code == 0


def test_check_levels_on_the_aspm_scenario() -> None:
    t = "sample-traces/aspm-setpci-6.12/trace.jsonl"
    assert run_cli("check", t, "--fail-on", "exclusive")[0] == 0
    assert run_cli("check", t, "--fail-on", "managed")[0] == 1
    assert run_cli("check", t, "--fail-on", "never")[0] == 0


def test_every_format_renders_every_scenario() -> None:
    for name in SCENARIOS:
        for fmt in ("markdown", "html", "sarif", "junit", "csv"):
            code, out, err = run_cli("analyze", f"sample-traces/{name}/trace.jsonl", "--format", fmt)
            assert code in (0, 1) and out, (name, fmt, err)
