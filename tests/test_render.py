"""Renderers of report/render.py: every format on a hand-built report, escaping, contracts."""
from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cfgaudit.errors import UsageError
from cfgaudit.report.frames import FINDING_COLUMNS, Report, empty_findings, summarize
from cfgaudit.report.render import FORMATS, KIND_COLORS, RENDERERS, render

CXL = "0000:0d:00.0"
RP = "0000:0c:00.0"
GPU = "0000:00:02.0"
NASTY_COMM = "x|y<z>%1"  # a pipe for Markdown, a tag for HTML, a percent for GitHub
T0 = 1_000_000_000  # ns

CONTRACT_KEYS = ["ts_ns", "pid", "comm", "bdf", "offset", "size", "via", "region_start", "region_length",
                 "owner", "kind", "rule", "kernel_taints", "kernel_logs"]


def _finding(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in FINDING_COLUMNS}
    row.update(ts_ns=T0, pid=1, tid=None, uid=0, comm="setpci", op="write", bdf=RP, offset=0, size=1,
               data=None, via="sysfs", ret=None, region_start=0, region_length=1, owner="owner",
               kind="managed", capability=None, rule="rule", source="src", kernel_taints=False,
               kernel_logs=False, event_index=0)
    row.update(kw)
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return empty_findings()
    return pd.DataFrame(rows, columns=list(FINDING_COLUMNS)).astype(FINDING_COLUMNS)


FINDINGS = [
    # exclusive, into a DOE mailbox, the kernel taints and logs
    _finding(ts_ns=T0, pid=4242, tid=4243, comm=NASTY_COMM, bdf=CXL, offset=0x198, size=4, data="01000000",
             ret=4, region_start=0x190, region_length=0x18, owner="cxl_pci", kind="exclusive",
             capability="DOE", rule="doe-mailbox", source="drivers/pci/doe.c: pci_doe_create_mb",
             kernel_taints=True, kernel_logs=True,
             kernel_message="pci 0000:0d:00.0: Unexpected user write to config space", severity="error",
             doe="DOE Control: Abort", event_index=0),
    # managed, no kernel verdict
    _finding(ts_ns=T0 + 123_000, pid=100, comm="setpci", bdf=RP, offset=0x50, size=2, data="4000",
             region_start=0x40, region_length=0x3c, owner="pcie_aspm", kind="managed", capability="Express",
             rule="pcie-lnkctl", source="drivers/pci/pcie/aspm.c", severity="warning", event_index=1),
    # managed but allowed by a user region
    _finding(ts_ns=T0 + 500_000, pid=100, comm="setpci", bdf=RP, offset=0x4, size=2,
             region_start=0x4, region_length=2, owner="PCI core", kind="managed", rule="pci-command",
             source="drivers/pci/pci.c", allowed_by="user:0x4+2 vfio-passthrough", severity="note",
             event_index=2),
    # a second exclusive write into the same mailbox
    _finding(ts_ns=T0 + 2_000_000, pid=4242, tid=4243, comm=NASTY_COMM, bdf=CXL, offset=0x19c, size=4,
             data="ffffffff", region_start=0x190, region_length=0x18, owner="cxl_pci", kind="exclusive",
             capability="DOE", rule="doe-mailbox", source="drivers/pci/doe.c: pci_doe_create_mb",
             kernel_taints=True, kernel_logs=False, severity="error", event_index=3),
]
REGIONS = pd.DataFrame([
    {"bdf": CXL, "start": 0x190, "length": 0x18, "owner": "cxl_pci", "kind": "exclusive", "capability": "DOE",
     "rule": "doe-mailbox", "source": "drivers/pci/doe.c"},
    {"bdf": RP, "start": 0x40, "length": 0x3c, "owner": "pcie_aspm", "kind": "managed", "capability": "Express",
     "rule": "pcie-lnkctl", "source": "drivers/pci/pcie/aspm.c"},
    {"bdf": RP, "start": 0x4, "length": 2, "owner": "vfio-passthrough", "kind": "user", "capability": None,
     "rule": "user", "source": "config"},
    {"bdf": GPU, "start": 0x4, "length": 2, "owner": "<b>core</b>", "kind": "managed", "capability": None,
     "rule": "pci-command", "source": "drivers/pci/pci.c"},
])
HIST = pd.DataFrame({"bdf": [CXL, CXL, RP, RP], "offset": [0x198, 0x19c, 0x50, 0x4], "writes": [3, 1, 1, 10]})
COUNTS = {"events": 40, "writes": 15, "reads": 25, "lost": 0, "skipped": 1}
META = {"kernel": "6.12.0-test", "iomem_relaxed": False, "traces": ["/tmp/a.jsonl", "/tmp/b.parquet"],
        "host": "builder", "backend": "replay"}


def _report(rows: list[dict[str, Any]] = FINDINGS, **kw: Any) -> Report:
    f = _frame(rows)
    args: dict[str, Any] = {"findings": f, "regions": REGIONS, "write_hist": HIST,
                            "summary": summarize(f, dict(COUNTS)), "meta": dict(META)}
    args.update(kw)
    return Report(**args)


def _empty_report() -> Report:
    f = empty_findings()
    return Report(findings=f, regions=REGIONS.iloc[0:0], write_hist=HIST.iloc[0:0],
                  summary=summarize(f, dict(COUNTS)), meta=dict(META))


@pytest.fixture
def report() -> Report:
    return _report()


def test_fixture_has_the_declared_dtypes(report: Report) -> None:
    assert dict(report.findings.dtypes.astype(str)) == dict(empty_findings().dtypes.astype(str))
    assert len(report.findings) == 4


# ---------------------------------------------------------------------------------------------
# The table of renderers
# ---------------------------------------------------------------------------------------------

def test_renderer_table() -> None:
    assert FORMATS == ("table", "json", "csv", "markdown", "html", "github", "sarif", "junit")
    assert tuple(RENDERERS) == FORMATS
    for name, r in RENDERERS.items():
        assert r.name == name
        assert r.help and "\n" not in r.help
        assert r.file_ext and not r.file_ext.startswith(".")
        assert callable(r.render)


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_dispatches_to_the_table(report: Report, fmt: str) -> None:
    assert render(report, fmt) == RENDERERS[fmt].render(report)


def test_unknown_format_raises_usage_error(report: Report) -> None:
    with pytest.raises(UsageError, match="xml") as exc:
        render(report, "xml")
    assert "sarif" in str(exc.value)  # names the choices


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_report_renders(fmt: str) -> None:
    out = render(_empty_report(), fmt)
    assert out.endswith("\n") and out.strip()
    if fmt == "json":
        doc = json.loads(out)
        assert doc["findings"] == [] and doc["summary"]["by_device"] == [] and doc["summary"]["events"] == 40
    elif fmt == "csv":
        assert out == ",".join(FINDING_COLUMNS) + "\n"
    elif fmt == "github":
        assert out.count("\n") == 1 and out.startswith("::notice title=cfgaudit::0 findings")
    elif fmt == "sarif":
        assert json.loads(out)["runs"][0]["results"] == []
    elif fmt == "junit":
        suite = ET.fromstring(out).find("testsuite")
        assert suite is not None
        cases = suite.findall("testcase")
        assert [c.get("name") for c in cases] == ["no conflicting writes"]
        assert suite.get("tests") == "1" and suite.get("failures") == "0" and suite.find(".//failure") is None
    else:
        assert "No conflicting writes." in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_summary_and_meta_may_lack_keys(fmt: str) -> None:
    out = render(_report(summary={}, meta={}), fmt)
    assert out.strip()
    if fmt == "json":
        assert json.loads(out)["meta"] == {}


# ---------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------

def test_table_layout(report: Report) -> None:
    out = render(report, "table")
    lines = out.splitlines()
    assert max(len(l) for l in lines) <= 100
    assert "6.12.0-test" in lines[0] and "builder" in lines[0] and "iomem strict" in lines[0]
    assert "/tmp/a.jsonl" in lines[1]
    head = next(i for i, l in enumerate(lines) if l.split()[:2] == ["TIME", "PID"])
    assert lines[head].split() == ["TIME", "PID", "COMM", "BDF", "OFF", "SZ", "VALUE", "KIND", "OWNER", "KERNEL"]
    first = lines[head + 1].split()
    assert first[:8] == ["0.000000", "4242", NASTY_COMM, CXL, "0x198", "4", "00000001", "exclusive"]  # the value, as setpci shows it
    assert first[-1] == "taint+log"
    # DOE sense and the kernel's message on indented continuation lines
    assert lines[head + 2].startswith("    doe: DOE Control: Abort")
    assert lines[head + 3].startswith("    kernel: pci 0000:0d:00.0: Unexpected")
    managed = next(l for l in lines if "0x50" in l).split()
    assert managed[0] == "0.000123" and managed[6] == "0040" and managed[-1] == "-"
    allowed = next(l for l in lines if " 0x4 " in l).split()
    assert allowed[6] == "-"  # no data
    assert any(l.strip() == "allowed by user:0x4+2 vfio-passthrough" for l in lines)
    last_write = next(l for l in lines if "0x19c" in l).split()
    assert last_write[0] == "0.002000" and last_write[-1] == "taint"
    for block in ("By device:", "By region:", "By process:", "Totals:"):
        assert block in lines
    dev = lines[lines.index("By device:") + 2].split()
    assert dev == [RP, "2", "2", "0", "0", "2", "0"]  # sorted by bdf; 2 findings, both managed
    assert "4 findings (0 collision, 2 exclusive, 2 managed, 0 user)" in out
    assert "40 events" in out and "1 skipped" in out


def test_table_truncates_long_fields_to_100_columns() -> None:
    long_owner = "a-very-long-owner-name-" * 6
    rows = [dict(FINDINGS[0], owner=long_owner, comm="c" * 40, data="ab" * 64,
                 doe="word " * 60, kernel_message="k" * 300)]
    meta = dict(META, traces=[f"/very/long/path/trace-{i}.jsonl" for i in range(20)])
    out = render(_report(rows, meta=meta), "table")
    lines = out.splitlines()
    assert max(len(l) for l in lines) <= 100
    assert "\u2026" in out  # truncation is marked
    assert long_owner not in out
    # the long DOE text and kernel message are wrapped, not cut
    assert out.count("word") == 60
    i = next(i for i, l in enumerate(lines) if l.startswith("    kernel: "))
    wrapped = [lines[i][len("    kernel: "):]]
    wrapped += [l.strip() for l in lines[i + 1:] if l.startswith("      ") and set(l.strip()) == {"k"}]
    assert "".join(wrapped) == "k" * 300


def test_table_escapes_control_characters() -> None:
    out = render(_report([dict(FINDINGS[0], comm="a\nb\x1b[31m")]), "table")
    assert "\x1b" not in out and "a\\nb" in out


def test_table_without_findings_says_so_with_counts() -> None:
    out = render(_empty_report(), "table")
    assert "No conflicting writes." in out
    assert "0 findings" in out and "40 events" in out and "15 writes" in out
    assert "TIME" not in out and "By device:" not in out


def test_table_warns_about_lost_events() -> None:
    f = _frame(FINDINGS)
    out = render(_report(summary=summarize(f, dict(COUNTS, lost=7))), "table")
    assert "possibly lost 7 events" in out


# ---------------------------------------------------------------------------------------------
# json
# ---------------------------------------------------------------------------------------------

def test_json_contract(report: Report) -> None:
    doc = json.loads(render(report, "json"), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert list(doc) == ["findings", "summary", "meta"]
    assert len(doc["findings"]) == 4
    for obj in doc["findings"]:
        assert list(obj) == list(FINDING_COLUMNS)
        assert set(CONTRACT_KEYS) <= set(obj)
    a = doc["findings"][0]
    for k in ("ts_ns", "pid", "offset", "size", "region_start", "region_length", "event_index", "tid", "ret"):
        assert type(a[k]) is int, k
    assert a["kernel_taints"] is True and a["kernel_logs"] is True
    assert a["comm"] == NASTY_COMM and a["offset"] == 0x198 and a["allowed_by"] is None
    assert doc["findings"][1]["tid"] is None and doc["findings"][2]["data"] is None
    assert doc["findings"][1]["kernel_taints"] is False
    assert doc["findings"][2]["allowed_by"] == "user:0x4+2 vfio-passthrough"


def test_json_summary_and_meta(report: Report) -> None:
    doc = json.loads(render(report, "json"))
    s = doc["summary"]
    for k, v in report.summary.items():
        assert s[k] == v, k
    assert s["events"] == 40 and s["findings"] == 4 and s["exclusive_writes"] == 2
    assert [d["bdf"] for d in s["by_device"]] == [RP, CXL]
    assert all(type(d["findings"]) is int for d in s["by_device"])
    assert len(s["by_region"]) == 3 and all(type(r["first_ts_ns"]) is int for r in s["by_region"])
    assert any(r["capability"] is None for r in s["by_region"])
    assert {(p["pid"], p["comm"]) for p in s["by_process"]} == {(100, "setpci"), (4242, NASTY_COMM)}
    assert sum(t["findings"] for t in s["by_time"]) == 4
    assert doc["meta"] == META


def test_json_converts_numpy_values_in_summary_and_meta() -> None:
    rep = _report(summary={"events": np.int64(5), "ratio": np.float64("nan"), "flag": np.bool_(True)},
                  meta={"kernel": "x", "traces": (np.str_("t"),), "iomem_relaxed": None})
    doc = json.loads(render(rep, "json"))
    assert type(doc["summary"]["events"]) is int and doc["summary"]["events"] == 5
    assert doc["summary"]["ratio"] is None and doc["summary"]["flag"] is True
    assert doc["meta"]["traces"] == ["t"]


# ---------------------------------------------------------------------------------------------
# csv
# ---------------------------------------------------------------------------------------------

def test_csv(report: Report) -> None:
    out = render(report, "csv")
    assert len(out.splitlines()) == len(report.findings) + 1
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == list(FINDING_COLUMNS)
    assert len(rows) == len(report.findings) + 1
    a = dict(zip(rows[0], rows[1]))
    assert a["comm"] == NASTY_COMM and a["offset"] == "408" and a["kernel_taints"] == "true"
    assert a["allowed_by"] == "" and a["doe"] == "DOE Control: Abort"
    back = pd.read_csv(io.StringIO(out))
    assert list(back["event_index"]) == [0, 1, 2, 3]
    assert list(back["kernel_taints"]) == [True, False, False, True]


def test_csv_keeps_one_record_per_finding_with_newlines_in_fields() -> None:
    rows = [dict(FINDINGS[0], comm="a\nb,c\"d")] + FINDINGS[1:]
    out = render(_report(rows), "csv")
    recs = list(csv.reader(io.StringIO(out)))
    assert len(recs) == len(rows) + 1
    assert recs[1][list(FINDING_COLUMNS).index("comm")] == "a\nb,c\"d"


# ---------------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------------

def _md_cells(line: str) -> list[str]:
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_markdown(report: Report) -> None:
    out = render(report, "markdown")
    lines = out.splitlines()
    assert lines[0].startswith("# ")
    assert any("6.12.0-test" in l and "builder" in l for l in lines[1:4])
    for h in ("## Findings", "## By device", "## By region", "## By process"):
        assert h in lines
    assert "x\\|y\\<z\\>%1" in out  # the pipe and the tag are escaped
    assert NASTY_COMM not in out
    # every table keeps its shape: rows split on unescaped pipes into as many cells as the header
    tables: list[list[str]] = []
    for l in lines:
        if l.startswith("|"):
            if tables and tables[-1]:
                tables[-1].append(l)
            else:
                tables.append([l])
        elif tables and tables[-1]:
            tables.append([])
    tables = [t for t in tables if t]
    assert len(tables) == 4
    for t in tables:
        n = len(_md_cells(t[0]))
        assert all(len(_md_cells(l)) == n for l in t), t
    findings_table = tables[0]
    assert len(findings_table) == 2 + len(report.findings)
    assert any("0x198" in l and "taint+log" in l and "DOE Control: Abort" in l for l in findings_table)


# ---------------------------------------------------------------------------------------------
# html
# ---------------------------------------------------------------------------------------------

class _Checker(HTMLParser):
    """Collects tags and checks every opened non-void element is closed in order."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "rect", "line", "path", "circle"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def _svgs(out: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(r'<svg [^>]*data-bdf="([^"]+)".*?</svg>', out, re.S)}


def test_html_is_self_contained_and_well_formed(report: Report) -> None:
    out = render(report, "html")
    assert "http://" not in out and "https://" not in out
    assert "<script" not in out.lower() and "<link" not in out.lower() and "@import" not in out
    assert "<style>" in out
    p = _Checker()
    p.feed(out)
    p.close()
    assert p.stack == []
    assert "x|y&lt;z&gt;%1" in out and "<z>" not in out
    assert "&lt;b&gt;core&lt;/b&gt;" in out and "<b>core" not in out
    assert "6.12.0-test" in out and "Unexpected user write" in out


def test_html_plots_each_device(report: Report) -> None:
    out = render(report, "html")
    svgs = _svgs(out)
    assert sorted(svgs) == sorted([CXL, RP, GPU])
    assert out.count("<svg") == 3
    cxl = svgs[CXL]
    assert "writes over config offsets" in cxl
    region = re.search(r'<rect class="region exclusive"[^>]*fill="([^"]+)"', cxl)
    assert region and region.group(1) == KIND_COLORS["exclusive"]
    assert 'class="region managed"' not in cxl
    assert cxl.count('class="writes"') == 2  # two offsets in the write histogram
    assert ">0x1000<" in cxl  # extended config space: offsets >= 0x100
    rp = svgs[RP]
    assert ">0x100<" in rp and ">0x1000<" not in rp  # 256-byte axis
    assert re.search(rf'<rect class="region managed"[^>]*fill="{KIND_COLORS["managed"]}"', rp)
    assert re.search(rf'<rect class="region user"[^>]*fill="{KIND_COLORS["user"]}"', rp)
    for kind in ("exclusive", "managed", "user"):
        assert f">{kind}</text>" in rp  # legend
    assert 'class="writes"' not in svgs[GPU]


def test_html_region_position_scales_with_offset(report: Report) -> None:
    rp = _svgs(render(report, "html"))[RP]
    xs = {m.group(1): float(m.group(2)) for m in
          re.finditer(r'<rect class="region (\w+)"[^>]*x="([\d.]+)"', rp)}
    assert xs["user"] < xs["managed"]  # 0x4 is left of 0x40
    w = {m.group(1): float(m.group(2)) for m in
         re.finditer(r'<rect class="region (\w+)"[^>]*width="([\d.]+)"', rp)}
    assert w["managed"] > 10 * w["user"]  # 0x3c bytes against 2


def test_html_findings_rows_are_classed_by_level(report: Report) -> None:
    p = _Checker()
    p.feed(render(report, "html"))
    classes = [a.get("class") for t, a in p.tags if t == "tr" and a.get("class")]
    assert classes == ["error", "warning", "note", "error"]


# ---------------------------------------------------------------------------------------------
# github
# ---------------------------------------------------------------------------------------------

def test_github_annotations(report: Report) -> None:
    lines = render(report, "github").splitlines()
    failing = report.findings["allowed_by"].isna().sum()
    assert len(lines) == failing + 1 == 4
    assert lines[0] == ("::error title=cfgaudit exclusive::pid 4242 (x|y<z>%251) wrote 4 bytes at 0x198 of "
                        f"{CXL} via sysfs: owned by cxl_pci (exclusive, doe-mailbox); the kernel would taint")
    assert lines[1] == ("::warning title=cfgaudit managed::pid 100 (setpci) wrote 2 bytes at 0x50 of "
                        f"{RP} via sysfs: owned by pcie_aspm (managed, pcie-lnkctl)")
    assert lines[2].startswith("::error title=cfgaudit exclusive::") and "0x19c" in lines[2]
    assert lines[3].startswith("::notice title=cfgaudit::4 findings")
    assert not any("0x4 " in l or "allowed by" in l for l in lines[:-1])


def test_github_escapes_percent_and_newlines() -> None:
    rows = [dict(FINDINGS[0], comm="a%b\r\nc")] + FINDINGS[1:]
    out = render(_report(rows), "github")
    lines = out.splitlines()
    assert len(lines) == 4
    assert "(a%25b%0D%0Ac)" in lines[0]
    assert "\r" not in out


# ---------------------------------------------------------------------------------------------
# sarif
# ---------------------------------------------------------------------------------------------

def test_sarif(report: Report) -> None:
    doc = json.loads(render(report, "sarif"))
    assert doc["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert doc["version"] == "2.1.0" and len(doc["runs"]) == 1
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "cfgaudit"
    assert not str(driver.get("informationUri", "")).startswith("http")
    ids = [r["id"] for r in driver["rules"]]
    assert ids == ["doe-mailbox", "pcie-lnkctl", "pci-command"]
    assert len(set(ids)) == len(ids)
    rule = driver["rules"][0]
    assert rule["fullDescription"]["text"] == "drivers/pci/doe.c: pci_doe_create_mb"
    assert "cxl_pci" in rule["shortDescription"]["text"] and "exclusive" in rule["shortDescription"]["text"]
    assert [r["defaultConfiguration"]["level"] for r in driver["rules"]] == ["error", "warning", "warning"]
    res = run["results"]
    assert [r["ruleId"] for r in res] == ["doe-mailbox", "pcie-lnkctl", "pci-command", "doe-mailbox"]
    assert [r["level"] for r in res] == ["error", "warning", "note", "error"]
    assert all(driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"] for r in res)
    assert [r["properties"]["ts_ns"] for r in res] == list(report.findings["ts_ns"])
    loc = res[0]["locations"][0]["logicalLocations"][0]
    assert loc == {"name": f"{CXL}+0x198", "kind": "resource", "fullyQualifiedName": f"pci/{CXL}/config@0x198"}
    p = res[0]["properties"]
    assert p["pid"] == 4242 and type(p["pid"]) is int and p["comm"] == NASTY_COMM
    assert p["kernel_taints"] is True and p["kernel_logs"] is True
    assert res[0]["message"]["text"].endswith("the kernel would taint")
    assert "suppressions" in res[2] and "suppressions" not in res[0]


# ---------------------------------------------------------------------------------------------
# junit
# ---------------------------------------------------------------------------------------------

def test_junit(report: Report) -> None:
    root = ET.fromstring(render(report, "junit"))
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "cfgaudit"
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases)) == "3"
    failures = [c for c in cases if c.find("failure") is not None]
    assert suite.get("failures") == str(len(failures)) == "2"
    names = {c.get("name"): c for c in cases}
    assert set(names) == {f"{CXL} 0x190+24 cxl_pci", f"{RP} 0x40+60 pcie_aspm", f"{RP} 0x4+2 PCI core"}
    assert all(c.get("classname") in (CXL, RP) for c in cases)
    doe = names[f"{CXL} 0x190+24 cxl_pci"].find("failure")
    assert doe is not None and doe.get("message", "").startswith("2 writes into exclusive range")
    assert doe.text is not None and "0x198" in doe.text and "0x19c" in doe.text and NASTY_COMM in doe.text
    assert names[f"{RP} 0x4+2 PCI core"].find("failure") is None  # allowed


def test_junit_survives_control_characters() -> None:
    rows = [dict(FINDINGS[0], comm="bad\x01\x7f<&")]
    root = ET.fromstring(render(_report(rows), "junit"))
    text = root.find("testsuite/testcase/failure").text  # type: ignore[union-attr]
    assert "bad\\x01" in text and "<&" in text
