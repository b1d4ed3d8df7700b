"""Collisions as findings (issue 11, item 2): a user write into a DOE mailbox during the kernel's
own exchange, or the kernel starting one during a user's request, is a finding of kind
`collision` (severity error), naming the kernel's protocol, what the write does and how the
kernel's exchange ended; the same findings whatever the chunks (replay = live); failing the gate
above exclusive; in every report format. Events on the DOE sample's device (tests/support/kdoe.py)."""
from __future__ import annotations

import csv
import io
import json
import random

import pyarrow as pa
import pytest

import cfgaudit.analyze as analyze_mod
import cfgaudit.analyze.collisions as collisions_mod
from cfgaudit.analyze import Analyzer
from cfgaudit.analyze.findings import findings_frame
from cfgaudit.audit import open_analysis, render_report, run_analysis
from cfgaudit.report.render import render
from support import run_cli
from support.kdoe import CXL, DOE_CAP, doe_sample_trace, kend, kstart, uwrite

ABORT, GO, ZERO = "01000000", "00000080", "00000000"
OTHER = "0000:0c:00.0"  # the sample's root port: no DOE mailbox


def _events(tmp_path, rows: list[dict]) -> tuple[object, pa.Table]:
    """The registry of the sample trace with ``rows``, and the rows as one event table."""
    a = open_analysis([doe_sample_trace(tmp_path, rows)], kernel="6.8")
    return a.registry, pa.concat_tables(list(a.source.tables()), promote_options="permissive")


def _findings(res, t: pa.Table, cuts: list[int] | None = None) -> list[dict]:
    """Every finding of ``t`` fed in chunks cut at ``cuts``, then the analyzer's finish."""
    an = Analyzer(res)
    bounds = [0, *(cuts or []), t.num_rows]
    parts = [an.feed_arrow(t.slice(lo, hi - lo)) for lo, hi in zip(bounds, bounds[1:])] + [an.finish()]
    return [r for p in parts if p is not None for r in findings_frame(p).astype(object).to_dict("records")]


def _coll(rows: list[dict]) -> list[tuple]:
    return [(r["event_index"], r["op"], r["kernel_exchange"], r["kernel_ret"]) for r in rows
            if r["kind"] == "collision"]


def _clean(rows: list[dict]) -> list[dict]:
    """Rows comparable with ==: pandas' missing values as None."""
    return [{k: (None if v is None or (not isinstance(v, (str, list)) and v != v) or str(v) == "<NA>" else v)
             for k, v in r.items()} for r in rows]


CASES = {
    # the ABORT during the exchange collides (the exchange failed); the write after its end does not
    "overlapping": ([kstart(10), uwrite(20, 8, ABORT), kend(30, -5), uwrite(40, 8, ABORT)], [(1, "write", 0, -5)]),
    # a write right after one exchange's end and right before the next's start is free
    "back-to-back": ([kstart(10), kend(20), uwrite(21, 0xC, ZERO), kstart(30), uwrite(31, 0x14, ZERO), kend(40),
                      uwrite(41, 0x14, ZERO)], [(4, "write", 3, 12)]),
    # two devices: an exchange on one, writes at the same offsets of another device do not collide
    "two-devices": ([kstart(10), uwrite(11, 8, ABORT, bdf=OTHER), uwrite(12, 0x10, ZERO), kend(13)],
                    [(2, "write", 0, 12)]),
    # the kernel starts while a user's request is in progress (the other way round)
    "reverse": ([uwrite(10, 0x10, "01000000"), uwrite(11, 0x10, "02000000"), kstart(20), kend(30, -5)],
                [(2, "doe_start", 2, -5)]),
    # a request sent with GO (or discarded with ABORT) before the kernel's start is not in progress
    "reverse-after-go": ([uwrite(10, 0x10, "01000000"), uwrite(11, 8, GO), kstart(20), kend(30),
                          uwrite(31, 0x10, "01000000"), uwrite(32, 8, ABORT), kstart(40), kend(50)], []),
    # the kernel's GO sends the user's dwords: a second kernel start finds no request in progress
    "reverse-once": ([uwrite(10, 0x10, "01000000"), kstart(20), kend(30), kstart(40), kend(50)],
                     [(1, "doe_start", 1, 12)]),
    # a dword written during the kernel's exchange (a collision) is gone when it ends (the device
    # took it, or the kernel aborted): the next kernel start finds no user request (seen in the e2e
    # guest: the kernel's timeout abort cleared it); one written after the end is a request
    "reverse-not-after-end": ([kstart(10), uwrite(11, 0x10, "01000000"), kend(20, -5), kstart(30), kend(40),
                               uwrite(41, 0x10, "01000000"), kstart(50), kend(60, -5)],
                              [(1, "write", 0, -5), (6, "doe_start", 6, -5)]),
    # a write that failed (the guard's EPERM) never reached the mailbox: no collision, no request
    "failed-writes": ([kstart(10), {**uwrite(11, 8, ABORT), "ret": -1}, kend(20, 4),
                       {**uwrite(21, 0x10, "01000000"), "ret": -1}, kstart(30), kend(40)], []),
    # the trace ends before the exchange does
    "unfinished": ([kstart(10), uwrite(11, 0x10, ZERO), uwrite(12, 0x98 - 0x90, "00", size=1)],
                   [(1, "write", 0, None), (2, "write", 0, None)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_collision_rows(tmp_path, name: str) -> None:
    rows, want = CASES[name]
    res, t = _events(tmp_path, rows)
    got = _clean(_findings(res, t))
    assert _coll(got) == want
    for r in got:
        if r["kind"] == "collision":
            assert (r["severity"], r["allowed_by"], r["kernel_protocol"]) == ("error", None, "CXL table access (CDAT)")


@pytest.mark.parametrize("name", list(CASES))
def test_chunks_change_nothing(tmp_path, name: str) -> None:
    """Replay = live: the same findings, in the same order, one chunk or any cuts."""
    rows, _ = CASES[name]
    res, t = _events(tmp_path, rows)
    want = _clean(_findings(res, t))
    assert _clean(_findings(res, t, list(range(1, t.num_rows)))) == want
    rng = random.Random(name)
    for _ in range(10):
        cuts = sorted(rng.sample(range(1, t.num_rows), rng.randint(1, t.num_rows - 1)))
        assert _clean(_findings(res, t, cuts)) == want, cuts


def test_the_findings_wait_for_the_exchange_and_keep_trace_order(tmp_path) -> None:
    """A finding after a collision is held back with it until the exchange ends: the output is in
    trace order; nothing is lost at the end."""
    rows = [kstart(10), uwrite(11, 8, ABORT), uwrite(12, 0x100 - DOE_CAP, "0000", size=2), kend(13, -5),
            uwrite(14, 0x10, ZERO)]
    res, t = _events(tmp_path, rows)
    an = Analyzer(res)
    first = an.feed_arrow(t.slice(0, 3))
    assert first is None  # all held: the collision waits for its result
    rest = an.feed_arrow(t.slice(3))
    assert an.finish() is None
    got = findings_frame(rest)
    assert got["event_index"].tolist() == sorted(got["event_index"].tolist()) and 1 in got["event_index"].tolist()


def test_descriptions(tmp_path) -> None:
    rows = [kstart(10), uwrite(11, 8, GO), uwrite(12, 8, "02000000"), uwrite(13, 0xC, "02000000"),
            uwrite(14, 0, ZERO), uwrite(15, 8, None), uwrite(16, 0x10, ZERO), uwrite(17, 0x14, ZERO), kend(20, -5)]
    res, t = _events(tmp_path, rows)
    texts = [r["collision"] for r in _findings(res, t) if r["kind"] == "collision"]
    assert len(texts) == 7
    expect = ["sets GO mid-exchange", "without ABORT or GO (INT_EN set)", "clears the DOE interrupt status",
              "read-only DOE header/capabilities", "ABORT or GO not known: no data in the trace",
              "appends a dword to the kernel's request", "takes a response dword the kernel was going to read"]
    for text, part in zip(texts, expect):
        assert part in text, text
        assert "during the kernel's CXL table access (CDAT) exchange on PCI core's mailbox (pid 97 kworker/u8:2, " \
               "event 0); the kernel's exchange then failed: -5 (EIO)" in text


def test_unknown_protocol_and_the_trace_ending_first(tmp_path) -> None:
    res, t = _events(tmp_path, [kstart(10, vendor=0x1234, type_=7), uwrite(11, 8, ABORT)])
    [r] = [r for r in _findings(res, t) if r["kind"] == "collision"]
    assert r["kernel_protocol"] == "vendor-defined (vendor 0x1234 type 0x7)"
    assert r["collision"].endswith("the trace ends before the kernel's exchange finished")


def test_result_window(tmp_path, monkeypatch) -> None:
    """An exchange that has not ended RESULT_WINDOW events after its first collision: its
    collisions are released without the result, the same whatever the chunks."""
    monkeypatch.setattr(analyze_mod, "RESULT_WINDOW", 3)
    monkeypatch.setattr(collisions_mod, "RESULT_WINDOW", 3)
    rows = [kstart(10), uwrite(11, 8, ABORT)] + [uwrite(12 + i, 0x100 - DOE_CAP, "0000", size=2) for i in range(4)] \
        + [uwrite(20, 0x14, ZERO), kend(30, -5)]
    res, t = _events(tmp_path, rows)
    want = _clean(_findings(res, t))
    coll = [r for r in want if r["kind"] == "collision"]
    assert len(coll) == 2 and all("had not finished 3 events after" in r["collision"] for r in coll)
    assert all(r["kernel_ret"] is None for r in coll)
    for k in (1, 2, 3):
        assert _clean(_findings(res, t, list(range(k, t.num_rows, k)))) == want


# ---- the gate, the formats, what cannot be seen: through the command line ----
BUSY = [kstart(10), uwrite(20, 8, ABORT), kend(30, -5)]


def test_the_gate(tmp_path) -> None:
    busy = doe_sample_trace(tmp_path, BUSY)
    for level, code in (("collision", 1), ("exclusive", 1), ("managed", 1), ("never", 0)):
        assert run_cli("check", busy, "--kernel", "6.8", "--fail-on", level)[0] == code, level
    # 6.8: the idle mailbox's write is managed: only collisions fail at `collision`
    idle = doe_sample_trace(tmp_path, [kstart(10), kend(15), uwrite(20, 8, ABORT)], name="idle.jsonl")
    assert run_cli("check", idle, "--kernel", "6.8", "--fail-on", "collision")[0] == 0
    assert run_cli("check", idle, "--kernel", "6.8", "--fail-on", "managed")[0] == 1
    assert run_cli("analyze", busy, "--kernel", "6.8")[0] == 1


def test_every_format_has_the_collision(tmp_path) -> None:
    busy = doe_sample_trace(tmp_path, BUSY)
    code, out, _ = run_cli("analyze", busy, "--kernel", "6.8", "--format", "csv")
    recs = list(csv.DictReader(io.StringIO(out)))
    [r] = [r for r in recs if r["kind"] == "collision"]
    assert (r["severity"], r["kernel_exchange"], r["kernel_ret"]) == ("error", "0", "-5") and code == 1
    assert "failed: -5 (EIO)" in r["collision"]
    out_json = tmp_path / "r.json"
    assert run_cli("analyze", busy, "--kernel", "6.8", "--format", "json", "-o", str(out_json))[0] == 1
    doc = json.loads(out_json.read_text())
    assert [f["kind"] for f in doc["findings"]] == ["collision"]
    assert doc["summary"]["by_kind"] == {"collision": 1, "exclusive": 0, "managed": 0, "user": 0}
    assert doc["summary"]["by_device"][0]["collision"] == 1
    sarif = json.loads(run_cli("analyze", busy, "--kernel", "6.8", "--format", "sarif")[1])
    run = sarif["runs"][0]
    assert [(x["ruleId"], x["level"]) for x in run["results"]] == [("doe-collision", "error")]
    assert run["tool"]["driver"]["rules"][0]["properties"]["kind"] == "collision"
    gh = run_cli("analyze", busy, "--kernel", "6.8", "--format", "github")[1]
    assert "::error title=cfgaudit collision::pid 812 (doe-tool) wrote 4 bytes at 0x198" in gh
    junit = run_cli("analyze", busy, "--kernel", "6.8", "--format", "junit")[1]
    assert 'type="collision"' in junit
    for fmt in ("markdown", "html", "table"):
        assert "COLLISION" in run_cli("analyze", busy, "--kernel", "6.8", "--format", fmt)[1], fmt


def test_the_reverse_direction_through_the_cli(tmp_path) -> None:
    p = doe_sample_trace(tmp_path, [uwrite(10, 0x10, "01000000"), kstart(20), kend(30, -5)])
    code, out, _ = run_cli("check", p, "--kernel", "6.8", "--fail-on", "collision")
    text = " ".join(out.split())
    assert code == 1
    assert ("the kernel (pid 97 kworker/u8:2) started a CXL table access (CDAT) exchange on PCI core's mailbox "
            "while pid 812 (doe-tool) had a request of 1 dword in progress") in text
    assert "the kernel's exchange then failed: -5 (EIO)" in text
    gh = run_cli("check", p, "--kernel", "6.8", "--format", "github")[1]
    assert "::error title=cfgaudit collision::COLLISION on the DOE mailbox at 0x190 of 0000:0d:00.0" in gh


def test_syscall_traces_say_collisions_are_not_visible(tmp_path) -> None:
    p = doe_sample_trace(tmp_path, [uwrite(10, 8, ABORT)], backend="syscalls")
    out = run_cli("analyze", p, "--kernel", "6.8")[1]
    assert "collision detection needs the kernel backend" in " ".join(out.split()[:40])
    rp = tmp_path / "r.json"
    run_cli("analyze", p, "--kernel", "6.8", "--format", "json", "-o", str(rp))
    assert json.loads(rp.read_text())["summary"]["collisions_visible"] is False
    seen = doe_sample_trace(tmp_path, BUSY, name="k.jsonl")
    run_cli("analyze", seen, "--kernel", "6.8", "--format", "json", "-o", str(rp))
    assert json.loads(rp.read_text())["summary"]["collisions_visible"] is True
    md = run_cli("analyze", p, "--kernel", "6.8", "--format", "markdown")[1]
    assert "collision detection needs the kernel backend" in md


def test_device_without_the_mailbox_region_still_reports(tmp_path) -> None:
    """A collision in a mailbox no region covers (an older release: no DOE rule) is one row with no region."""
    res, t = _events(tmp_path, BUSY)
    an = Analyzer(open_analysis([doe_sample_trace(tmp_path, BUSY, name="old.jsonl")], kernel="5.15").registry)
    parts = [an.feed_arrow(t), an.finish()]
    rows = [r for p in parts if p is not None for r in findings_frame(p).to_dict("records")]
    coll = [r for r in rows if r["kind"] == "collision"]
    assert len(coll) == 1 and coll[0]["bdf"] == CXL


@pytest.mark.parametrize("kernel", ["6.8", "5.15"])  # 5.15: no DOE rule, a collision row without a region
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_streamed_equals_rendered_with_collisions(tmp_path, kernel: str, fmt: str) -> None:
    rows = [kstart(10), uwrite(11, 8, ABORT), uwrite(12, 0x100 - DOE_CAP, "0000", size=2), kend(13, -5),
            uwrite(20, 0x10, "01000000"), kstart(30)]
    t = doe_sample_trace(tmp_path, rows)
    out = io.StringIO()
    render_report(open_analysis([t], kernel=kernel), fmt, out)
    assert out.getvalue() == render(run_analysis(open_analysis([t], kernel=kernel)), fmt)
    assert out.getvalue().count("collision") >= 3
