"""Writes to a device that is in none of the sources (issue 9, item 6): counted per BDF, shown by
every report format and the live summary, and failing ``--fail-on managed``."""
from __future__ import annotations

import json
import os
import random
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cfgaudit.analyze import Analyzer
from cfgaudit.audit import build_report, failing, open_analysis, run_analysis
from cfgaudit.events import FIELDS, event_table
from cfgaudit.inventory import Sources
from cfgaudit.regions import build_registry, load_devices
from cfgaudit.report.live import summary_lines
from cfgaudit.report.render import FORMATS, render
from support import CXL_BDF, QEMU_CXL, QEMU_RP, ROOT, run_cli

RP_BDF = "0000:0c:00.0"
FF, FE = "0000:ff:00.0", "0000:fe:01.2"
SRC = ("--lspci-dump", QEMU_CXL, "--driver", "0d:00.0=cxl_pci", "--kernel", "6.2.0")


def _ev(ts: int, bdf: str, off: int, size: int = 4, op: str = "write", pid: int = 7, comm: str = "setpci",
        via: str = "sysfs") -> dict:
    return {"ts_ns": ts, "pid": pid, "comm": comm, "op": op, "bdf": bdf, "offset": off, "size": size,
            "via": via, "data": "00" * size}


# three writes and a read to 0000:ff:00.0, one write to 0000:fe:01.2; nothing to a known device
UNKNOWN_ONLY = [
    _ev(1, FF, 0x198),
    _ev(2, FE, 0x10, pid=9, comm="fwtool"),
    _ev(3, FF, 0x04, 2, op="read"),
    _ev(4, FF, 0x1A0),
    _ev(5, FF, 0x1A4, pid=8, comm="other"),
]
FF_ENTRY = {"bdf": FF, "writes": 3,
            "first": {"event_index": 0, "ts_ns": 1, "pid": 7, "comm": "setpci", "offset": 0x198, "size": 4}}
FE_ENTRY = {"bdf": FE, "writes": 1,
            "first": {"event_index": 1, "ts_ns": 2, "pid": 9, "comm": "fwtool", "offset": 0x10, "size": 4}}
FF_LINE = ("Unknown device 0000:ff:00.0: 3 writes (first: pid 7 setpci at +0x198): not in the sources "
           "(snapshot, dumps, sysfs): its owned ranges are unknown")


def _jsonl(path, events: list[dict], header: dict | None = None) -> str:
    with open(path, "w") as fh:
        if header is not None:
            fh.write(json.dumps(header) + "\n")
        for e in events:
            fh.write(json.dumps(e) + "\n")
    return str(path)


def _table(events: list[dict]) -> pa.Table:
    return pa.table({f.name: pa.array([e.get(f.name) for e in events], type=f.arrow) for f in FIELDS})


@pytest.fixture
def trace(tmp_path) -> str:
    return _jsonl(tmp_path / "t.jsonl", UNKNOWN_ONLY)


def _registry():
    return build_registry(load_devices(lspci_dumps=[QEMU_CXL, QEMU_RP], drivers={CXL_BDF: "cxl_pci"}), kernel="6.2.0")


# ------------------------------------------------------------------------------------------
# The gate
# ------------------------------------------------------------------------------------------
def test_the_reported_case_is_shown_but_passes_at_exclusive(trace) -> None:
    code, out, err = run_cli("check", trace, *SRC)
    assert code == 0
    assert "No conflicting writes." not in out  # the old, misleading all-clear
    assert FF_LINE in " ".join(out.split())  # the table wraps it over two lines
    assert f"Warning: {FF_LINE}" in err.splitlines()


@pytest.mark.parametrize("level,want", [("exclusive", 0), ("managed", 1), ("never", 0)])
def test_unknown_device_writes_fail_at_managed(trace, level: str, want: int) -> None:
    code, _, err = run_cli("check", trace, *SRC, "--fail-on", level)
    assert code == want, err


def test_analyze_and_replay_fail_like_managed(trace) -> None:
    code, out, err = run_cli("analyze", trace, *SRC, "--format", "json")  # analyze fails at managed
    assert code == 1 and json.loads(out)["findings"] == [] and f"Warning: {FF_LINE}" in err
    code, out, err = run_cli("replay", trace, *SRC, "--speed", "0")
    assert code == 1 and f"Warning: {FF_LINE}" in err


def test_failing_counts_unknown_writes_only_at_managed_and_only_from_a_report() -> None:
    an = Analyzer(_registry())
    events = [*UNKNOWN_ONLY, _ev(6, RP_BDF, 0x58, 2, via="procfs")]  # + a managed write (Link Control)
    f = an.feed(_table(events))
    rep = build_report(an, an.res, lambda: f, dict(an.counts), {})
    assert (f["kind"] == "managed").sum() == 1
    assert failing(rep, "managed") == 5 and failing(rep, "exclusive") == 0 and failing(rep, "never") == 0
    assert failing(rep.findings, "managed") == 1  # a findings frame alone: findings only


# ------------------------------------------------------------------------------------------
# The summary, and every format
# ------------------------------------------------------------------------------------------
def test_json_summary_fields_are_exact(trace) -> None:
    code, out, _ = run_cli("analyze", trace, *SRC, "--format", "json")
    s = json.loads(out)["summary"]
    assert s["unknown_device_writes"] == 4  # the read is not counted
    assert s["unknown_devices"] == [FE_ENTRY, FF_ENTRY]  # sorted by BDF
    assert s["findings"] == 0 and s["writes"] == 4 and s["reads"] == 1


def test_known_devices_only_give_empty_fields() -> None:
    code, out, _ = run_cli("analyze", os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "trace.jsonl"),
                           "--format", "json")
    s = json.loads(out)["summary"]
    assert (s["unknown_device_writes"], s["unknown_devices"]) == (0, [])


@pytest.fixture
def report(trace):
    return run_analysis(open_analysis([trace], Sources(lspci_dumps=[QEMU_CXL], drivers=["0d:00.0=cxl_pci"]),
                                      kernel="6.2.0"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_shows_the_unknown_devices(report, trace, fmt: str) -> None:
    text = render(report, fmt)
    if fmt == "csv":  # findings rows only: the CLI warns on stderr instead
        assert text.count("\n") == 1
        code, out, err = run_cli("analyze", trace, *SRC, "--format", "csv")
        assert code == 1 and out == text and f"Warning: {FF_LINE}" in err
        return
    assert FF in text and FE in text
    if fmt == "json":
        assert json.loads(text)["summary"]["unknown_devices"] == [FE_ENTRY, FF_ENTRY]
    elif fmt == "github":
        assert f"::warning title=cfgaudit unknown device::{FF_LINE}" in text.splitlines()
    elif fmt == "sarif":
        run = json.loads(text)["runs"][0]
        res = [r for r in run["results"] if r["ruleId"] == "unknown-device"]
        assert [r["level"] for r in res] == ["warning", "warning"]
        assert res[1]["message"]["text"] == FF_LINE and res[1]["properties"]["writes"] == 3
        rule = run["tool"]["driver"]["rules"][res[0]["ruleIndex"]]
        assert rule["id"] == "unknown-device" and rule["defaultConfiguration"]["level"] == "warning"
    elif fmt == "junit":
        suite = ET.fromstring(text).find("testsuite")
        assert suite is not None and suite.get("failures") == "2"
        fails = [c.find("failure") for c in suite.findall("testcase") if c.get("name") == f"{FF} unknown device"]
        assert fails and fails[0] is not None and fails[0].get("type") == "unknown-device"
        assert fails[0].text == FF_LINE
    else:  # table, markdown, html
        flat = " ".join(text.split())
        assert FF_LINE in flat
        assert "No conflicting writes." not in text
        assert "4 writes to 2 devices not in the sources" in flat


def test_live_summary_lines_name_them(report) -> None:
    lines = summary_lines(report.summary)
    assert FF_LINE in lines and any(FE in line for line in lines)


def test_escape_sequences_in_comm_are_escaped(tmp_path) -> None:
    t = _jsonl(tmp_path / "t.jsonl", [_ev(1, FF, 0x198, comm="evil\x1b[31m")])
    code, out, err = run_cli("check", t, *SRC, "--format", "github")
    assert "\x1b" not in out and "\x1b" not in err and "evil\\x1b[31m" in err


# ------------------------------------------------------------------------------------------
# Known devices are unaffected
# ------------------------------------------------------------------------------------------
def test_mixed_trace_gives_the_same_findings_for_known_devices() -> None:
    rng = random.Random(9)
    hot = [0x04, 0x10, 0x3C, 0x40, 0x58, 0x90, 0x18E, 0x190, 0x198, 0x19C, 0x1A0, 0x1A4]
    known, mixed, where = [], [], []
    for i in range(4000):
        e = _ev(i, rng.choice([CXL_BDF, RP_BDF]), rng.choice(hot), rng.choice([1, 2, 4]),
                op=rng.choice(["write"] * 4 + ["read"]), pid=rng.randrange(1, 4))
        e["data"] = "".join(rng.choice("0123456789abcdef") for _ in range(2 * e["size"]))
        while rng.random() < 0.4:  # unknown-device accesses in between
            mixed.append(_ev(i, rng.choice([FF, FE]), rng.choice(hot), op=rng.choice(["write", "read"])))
        where.append(len(mixed))
        known.append(e)
        mixed.append(e)
    res = _registry()
    a, b = Analyzer(res), Analyzer(res)
    fa = pd.concat([a.feed(_table(known[k:k + 500])) for k in range(0, len(known), 500)], ignore_index=True)
    fb = pd.concat([b.feed(_table(mixed[k:k + 700])) for k in range(0, len(mixed), 700)], ignore_index=True)
    assert len(fa) > 300 and (fa["kind"] == "exclusive").any()
    assert list(fb["event_index"]) == [where[i] for i in fa["event_index"]]
    pd.testing.assert_frame_equal(fa.drop(columns="event_index"), fb.drop(columns="event_index"))
    assert a.unknown_writes == 0 and b.unknown_writes == sum(1 for e in mixed if e["bdf"] in (FF, FE)
                                                             and e["op"] == "write")
    assert (a.write_hist == b.write_hist).all()


def test_null_bdf_is_an_unknown_device() -> None:
    an = Analyzer(_registry())
    an.feed(_table([_ev(1, CXL_BDF, 0x04, 2), {**_ev(2, FF, 0x10), "bdf": None}]))
    assert an.unknown_writes == 1 and an.unknown_devices()[0]["bdf"] == "?"


# ------------------------------------------------------------------------------------------
# A header whose snapshot has no devices
# ------------------------------------------------------------------------------------------
def test_header_snapshot_without_devices_warns_and_counts(tmp_path) -> None:
    with open(os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "trace.jsonl")) as fh:
        header = json.loads(fh.readline())
    header["snapshot"]["devices"] = []
    t = _jsonl(tmp_path / "e.jsonl", [_ev(1, CXL_BDF, 0x198), _ev(2, CXL_BDF, 0x1A0)], header)
    code, out, err = run_cli("check", t, "--format", "json")
    assert code == 0
    assert "Warning: the trace's snapshot has no devices" in err
    s = json.loads(out)["summary"]
    assert s["unknown_device_writes"] == 2 and [d["bdf"] for d in s["unknown_devices"]] == [CXL_BDF]
    assert run_cli("check", t, "--fail-on", "managed")[0] == 1


# ------------------------------------------------------------------------------------------
# Many events: whole-array work, exact
# ------------------------------------------------------------------------------------------
def test_large_trace_exact_counts_and_first_writes() -> None:
    n = 200_000
    rng = np.random.default_rng(5)
    bdfs = np.array([CXL_BDF, RP_BDF, FF, FE, "0000:aa:00.0"])
    dev = np.where(rng.random(n) < 0.5, rng.integers(0, 2, n), rng.integers(2, 5, n))
    is_write = rng.random(n) < 0.9
    size = rng.choice(np.array([1, 2, 4]), n)
    t = event_table({
        "ts_ns": pa.array(np.arange(n, dtype=np.int64) * 10 + 5),
        "pid": pa.array(rng.integers(1, 50, n)),
        "comm": pa.array(np.array(["a", "bb", "ccc"])[rng.integers(0, 3, n)]),
        "op": pa.array(np.where(is_write, "write", "read")),
        "bdf": pa.array(bdfs[dev]),
        "offset": pa.array((rng.integers(0, 0x1000, n) // size) * size),
        "size": pa.array(size),
        "tid": pa.nulls(n, pa.int64()), "uid": pa.nulls(n, pa.int64()),
        "data": pa.array(np.where(size == 4, "00000000", np.where(size == 2, "0000", "00"))),
        "via": pa.array(np.array(["sysfs", "procfs"])[rng.integers(0, 2, n)]),
        "ret": pa.nulls(n, pa.int64()),
    }, n)
    an = Analyzer(_registry())
    for k in range(0, n, 1 << 15):  # several chunks: counts and first writes carry over
        an.feed_arrow(t.slice(k, 1 << 15))
    df = t.to_pandas()
    unk = df[df["bdf"].isin([FF, FE, "0000:aa:00.0"]) & (df["op"] == "write")]
    want = []
    for bdf, g in unk.groupby("bdf", sort=True):
        i = int(g.index[0])
        r = df.loc[i]
        want.append({"bdf": bdf, "writes": len(g), "first": {
            "event_index": i, "ts_ns": int(r.ts_ns), "pid": int(r.pid), "comm": r.comm, "offset": int(r.offset),
            "size": int(r["size"])}})
    assert an.unknown_devices() == want
    assert an.unknown_writes == len(unk) and 85_000 < len(unk) < 95_000
    assert an.counts["writes"] == int(is_write.sum())
