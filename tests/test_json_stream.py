"""The json format, streamed (report/jsonout.py's JsonSink, report/summary.py's FindingsSummary):
byte for byte what the json renderer (``render._render_json``, the oracle) writes for the same
analysis, in any chunking, whatever the strings hold."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfgaudit.audit import open_analysis, render_report, run_analysis
from cfgaudit.inventory import Sources
from cfgaudit.report.frames import FINDING_COLUMNS, Report, by_device, by_process, by_region, by_time, summarize
from cfgaudit.report.jsonout import JsonSink, findings_json, json_string_literals
from cfgaudit.report.render import RENDERERS, _plain, _records, _render_json
from cfgaudit.report.summary import FindingsSummary
from support import QEMU_CXL, ROOT, run_cli
from support.findings import finding_row

SCENARIOS = sorted(d for d in os.listdir(os.path.join(ROOT, "sample-traces"))
                   if os.path.isdir(os.path.join(ROOT, "sample-traces", d)))
NULLABLE = ("tid", "uid", "data", "via", "ret", "capability", "rule", "source", "kernel_message", "allowed_by",
            "severity", "old_value", "changed_bits", "doe", "verdict_note")
REGION_COLS = ("region_start", "region_length", "owner", "kind", "capability", "rule", "source")
SUMMARY_KEYS = ("findings", "writes_with_findings", "by_kind", "collision_events", "exclusive_writes",
                "managed_writes", "allowed", "kernel_taints", "kernel_logs", "devices", "processes")
# Every character JSON escapes, some it must not, and non-ASCII text.
SPECIAL = ['q"uote', "back\\slash", "\\\"", "line\nbreak", "cr\rhere", "t\tab", "bs\bff\f",
           "".join(chr(c) for c in range(32)), "del\x7f", "ünï ✓ 😀 \u2028\u2029 ß", "", " lead and trail ",
           "a,b;c/d<e>&'", "plain"]


# ----------------------------------------------------------------------------------------------
# Findings, a report of them, and their Arrow tables as the analyzer hands them to a sink
# ----------------------------------------------------------------------------------------------

def _finding(i: int, **kw: Any) -> dict[str, Any]:
    return finding_row(i, **{"ts_ns": 1_000_000_000 + 7 * i, "pid": 100 + i % 3, "tid": 100 + i % 3, **kw})


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(FINDING_COLUMNS)).astype(FINDING_COLUMNS)


def _report(rows: list[dict[str, Any]]) -> Report:
    """The non-streamed report of ``rows`` (the oracle's input), with the keys build_report adds."""
    f = _frame(rows) if rows else pd.DataFrame({c: pd.Series(dtype=t) for c, t in FINDING_COLUMNS.items()})
    summary = summarize(f, {"events": 10 + len(rows), "writes": 9, "reads": 1, "lost": 0, "skipped": 0})
    summary["unknown_device_writes"] = 2
    summary["unknown_devices"] = [{"bdf": "0000:ff:00.0", "writes": 2,
                                   "first": {"event_index": 3, "ts_ns": 5, "pid": 7, "comm": "x\"y", "offset": 0,
                                             "size": 4}}]
    return Report(findings=f, regions=pd.DataFrame(), write_hist=pd.DataFrame(), summary=summary,
                  meta={"traces": ["t\u00e9.jsonl"], "kernel": "6.2", "iomem_relaxed": None, "host": "h",
                        "backend": None})


def _arrow(rows: list[dict[str, Any]], encoding: str) -> pa.Table:
    """The findings as a table: ``plain``, ``dictionary`` (every string column encoded on its
    own) or ``shared`` (as the analyzer does: the region columns over one index array, one
    dictionary entry per distinct region; severity encoded on its own)."""
    t = pa.Table.from_pandas(_frame(rows), preserve_index=False)
    assert t.column_names == list(FINDING_COLUMNS)
    if encoding == "plain":
        return t
    cols = {n: t.column(n).combine_chunks() for n in t.column_names}
    if encoding == "dictionary":
        cols = {n: pc.dictionary_encode(c) if pa.types.is_string(c.type) else c for n, c in cols.items()}
    else:
        keys = [tuple(r[c] for c in REGION_COLS) for r in rows]
        uniq = list(dict.fromkeys(keys))
        idx = pa.array([uniq.index(k) for k in keys], pa.int32())
        for j, c in enumerate(REGION_COLS):
            vals = pa.array([u[j] for u in uniq], t.schema.field(c).type)
            cols[c] = pa.DictionaryArray.from_arrays(idx, vals)
        cols["severity"] = pc.dictionary_encode(cols["severity"])
    return pa.table(list(cols.values()), names=list(cols))


def _chunks(t: pa.Table, cuts: list[int]) -> list[pa.Table]:
    """``t`` cut before the rows ``cuts`` (plus an empty chunk, which sinks must take)."""
    edges = [0, *sorted(set(cuts)), t.num_rows]
    return [t.slice(a, b - a) for a, b in zip(edges, edges[1:]) if b > a] + [t.slice(0, 0)]


def _event_cuts(rows: list[dict[str, Any]], every: int) -> list[int]:
    """Cuts every ``every`` events (never inside one event's findings: chunks partition events)."""
    starts = [i for i in range(len(rows)) if i == 0 or rows[i]["event_index"] != rows[i - 1]["event_index"]]
    return starts[every::every]


def _stream(tables: list[pa.Table], rep: Report, out: io.TextIOBase | None = None,
            background: bool = True) -> tuple[str, JsonSink]:
    """What the json sink writes for ``tables``, finished with ``rep``'s summary and meta."""
    buf = out if out is not None else io.StringIO()
    sink = JsonSink(buf, background=background, plain=_plain)
    try:
        for t in tables:
            sink(t)
        sink.finish(rep.summary, rep.meta)
    finally:
        sink.close()
    return (buf.getvalue() if isinstance(buf, io.StringIO) else ""), sink


def _failing(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows if r["kind"] in ("exclusive", "managed") and r["allowed_by"] is None)


ROWS = [
    _finding(0, comm=SPECIAL[0], kernel_message="pci 0000:0d:00.0: Unexpected user write, \"quoted\"\n"),
    _finding(0, comm=SPECIAL[0], region_start=0x1a0, region_length=4, capability=None, rule=None, kind="managed",
             severity="warning"),
    _finding(1, comm=SPECIAL[7], tid=None, doe=SPECIAL[3], old_value="00000000", changed_bits="01000000"),
    _finding(2, comm=SPECIAL[9], kind="managed", severity="warning", kernel_taints=False, ret=-13,
             verdict_note=SPECIAL[1], source=SPECIAL[8]),
    _finding(3, comm="", kind="managed", allowed_by="user:0x198+4 lab", severity="note", verdict_note="",
             capability="", owner=SPECIAL[6], rule=SPECIAL[2]),
    _finding(4, **{c: None for c in NULLABLE}, comm=SPECIAL[4], kernel_taints=False),
    _finding(5, comm="plain", kind="exclusive", source=" lead and trail ", rule="r,1", bdf="0000:0c:00.0",
             data=SPECIAL[10], capability=None),
    _finding(6, comm=SPECIAL[5], pid=7, bdf="0000:0c:00.0", capability=None, rule=None, owner=SPECIAL[12],
             allowed_by=SPECIAL[9], doe=SPECIAL[11]),
]


# ----------------------------------------------------------------------------------------------
# The sink against the renderer
# ----------------------------------------------------------------------------------------------

def test_json_is_a_streaming_format() -> None:
    assert RENDERERS["json"].stream is not None
    sink = RENDERERS["json"].stream(io.StringIO())
    assert callable(getattr(sink, "finish", None))
    sink.close()


@pytest.mark.parametrize("encoding", ["plain", "dictionary", "shared"])
@pytest.mark.parametrize("every", [1, 2, 100])
def test_stream_equals_render_byte_for_byte(encoding: str, every: int) -> None:
    """Nulls in every nullable column, capability/rule nulls in by_region, every escape; in
    chunks of 1, 2 and all events."""
    rep = _report(ROWS)
    want = _render_json(rep)
    assert json.loads(want)["summary"]["by_region"][-1]["capability"] is None  # the case is in the oracle
    t = _arrow(ROWS, encoding)
    text, sink = _stream(_chunks(t, _event_cuts(ROWS, every)), rep)
    assert text == want
    assert (sink.rows, sink.failing) == (len(ROWS), _failing(ROWS))


def test_stream_without_a_worker_thread_equals_render() -> None:
    rep = _report(ROWS)
    text, _ = _stream(_chunks(_arrow(ROWS, "shared"), [2, 5]), rep, background=False)
    assert text == _render_json(rep)


def test_stream_through_a_utf8_file_equals_render() -> None:
    """A UTF-8 text file gets the findings' bytes written to its buffer (the fast path)."""
    rep = _report(ROWS)
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    _stream(_chunks(_arrow(ROWS, "shared"), [3]), rep, out=out)
    out.flush()
    assert raw.getvalue() == _render_json(rep).encode("utf-8")


def test_no_findings_is_an_empty_list() -> None:
    rep = _report([])
    text, sink = _stream([], rep)
    assert text == _render_json(rep)
    assert text.startswith('{\n "findings": [],\n "summary": {') and (sink.rows, sink.failing) == (0, 0)
    text, _ = _stream([_arrow(ROWS, "plain").slice(0, 0)], rep)
    assert text == _render_json(rep)


def test_without_finish_the_document_stays_open() -> None:
    """An analysis that failed (no finish) never reads as a complete document."""
    out = io.StringIO()
    sink = JsonSink(out, background=True)
    sink(_arrow(ROWS, "plain"))
    sink.close()
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.getvalue())
    assert out.getvalue().startswith('{\n "findings": [\n  {\n   "ts_ns": ')


def test_findings_text_is_the_documents() -> None:
    """Each finding exactly as json.dumps(indent=1) writes it inside the document's list."""
    rep = _report(ROWS)
    want = _render_json(rep)
    body = findings_json(_arrow(ROWS, "dictionary")).to_pybytes().decode("utf-8")
    assert want.startswith('{\n "findings": [' + body[1:] + "\n ],\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
                          st.sampled_from(SPECIAL)), max_size=20))
def test_string_literals_are_json_dumps(values: list[str | None]) -> None:
    want = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
    assert json_string_literals(pa.array(values, pa.string())).to_pylist() == want
    assert json_string_literals(pa.array(values, pa.large_string())).to_pylist() == want
    a = pa.array(values, pa.string())
    if len(a) > 2:  # an offset into shared buffers
        assert json_string_literals(a.slice(1)).to_pylist() == want[1:]


def test_every_character_below_0x80_is_escaped_as_json_dumps_does() -> None:
    values = [chr(c) for c in range(0x80)] + ["".join(chr(c) for c in range(0x80))]
    got = json_string_literals(pa.array(values)).to_pylist()
    assert got == [json.dumps(v, ensure_ascii=False) for v in values]


# ----------------------------------------------------------------------------------------------
# FindingsSummary against frames.summarize / by_* (random findings, random chunks)
# ----------------------------------------------------------------------------------------------

REGIONS = [
    (0x190, 0x18, "cxl_pci", "exclusive", "DOE", "doe-mailbox", "drivers/pci/doe.c"),
    (0x190, 0x18, "cxl_pci", "exclusive", None, "doe-mailbox", "drivers/pci/doe.c"),
    (0x100, 0x38, "cxl_pci", "managed", "CXL Device@0x100", None, None),
    (0x100, 0x38, "cxl_pci", "managed", None, None, "x"),
    (0x10, 0x4, "pcieport", "managed", "PCIe", "pcie-lnkctl", "drivers/pci/pcie/aspm.c"),
    (0x10, 0x4, "lab", "user", "ü", "claim", None),
    (0x4, 0x2, "\u00e9t\u00e9", "exclusive", "", "z", None),
]

_event = st.fixed_dictionaries({
    "dt": st.integers(0, 3_000_000_000),
    "pid": st.sampled_from([1, 7, 42, 1000]),
    "comm": st.sampled_from(["setpci", "a\"b", "ünï", "lspci", ""]),
    "bdf": st.sampled_from(["0000:0d:00.0", "0000:0c:00.0", "0000:00:01.0"]),
    "regions": st.lists(st.tuples(st.sampled_from(REGIONS), st.sampled_from([None, None, "user:lab"]),
                                  st.booleans(), st.booleans()), min_size=1, max_size=3),
})


def _random_rows(events: list[dict[str, Any]], index_gap: int) -> list[dict[str, Any]]:
    rows = []
    ts = 5_000
    for i, e in enumerate(events):
        ts += e["dt"] if i % 3 else 0  # some events share their time
        for reg, allowed, taints, logs in e["regions"]:
            rows.append(_finding(0, ts_ns=ts, pid=e["pid"], tid=e["pid"], comm=e["comm"], bdf=e["bdf"],
                                 event_index=i * index_gap, allowed_by=allowed, kernel_taints=taints,
                                 kernel_logs=taints and logs, **dict(zip(REGION_COLS, reg))))
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_event, min_size=1, max_size=25), st.integers(1, 3), st.data())
def test_summary_matches_the_frames(events: list[dict[str, Any]], index_gap: int, data: st.DataObject) -> None:
    rows = _random_rows(events, index_gap)
    df = _frame(rows)
    encoding = data.draw(st.sampled_from(["plain", "dictionary", "shared"]))
    starts = [i for i in range(1, len(rows)) if rows[i]["event_index"] != rows[i - 1]["event_index"]]
    cuts = data.draw(st.lists(st.sampled_from(starts), max_size=6)) if starts else []
    tables = _chunks(_arrow(rows, encoding), cuts)

    s = FindingsSummary()
    for t in tables:
        s.feed(t)
    want = _plain(summarize(df, {}))
    got = s.summary()
    assert list(got) == list(SUMMARY_KEYS) == list(want)
    assert got == want
    assert s.by_device() == _records(by_device(df))
    assert s.by_region() == _records(by_region(df))
    assert s.by_process() == _records(by_process(df))
    assert s.by_time() == _records(by_time(df))
    # ... and the whole document
    rep = _report(rows)
    text, sink = _stream(tables, rep)
    assert text == _render_json(rep)
    assert (sink.rows, sink.failing) == (len(rows), _failing(rows))


def test_summary_of_nothing() -> None:
    s = FindingsSummary()
    s.feed(_arrow(ROWS, "plain").slice(0, 0))
    empty = _frame([])
    assert s.summary() == _plain(summarize(empty, {}))
    assert (s.by_device(), s.by_region(), s.by_process(), s.by_time()) == ([], [], [], [])


# ----------------------------------------------------------------------------------------------
# Whole analyses: the sample traces, several chunks, an empty trace, the CLI
# ----------------------------------------------------------------------------------------------

def _analysis(args: list[str], block_bytes: int | None = None, **kw: Any):
    a = open_analysis(args, **kw)
    if block_bytes:
        for r in a.source.readers:
            r.block_bytes = block_bytes
    return a


@pytest.mark.parametrize("block_bytes", [None, 400], ids=["whole", "chunks"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_samples_stream_equals_render(name: str, block_bytes: int | None, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    trace = f"sample-traces/{name}/trace.jsonl"
    want = _render_json(run_analysis(_analysis([trace])))
    a = _analysis([trace], block_bytes)
    out = io.StringIO()
    rep = render_report(a, "json", out)
    assert out.getvalue() == want
    doc = json.loads(want)
    assert rep.summary["findings"] == len(doc["findings"]) == doc["summary"]["findings"]
    assert "failing" in rep.summary and "failing" not in doc["summary"]


def test_several_chunks_are_several_chunks(monkeypatch) -> None:
    """The chunked case above does feed the sink several findings tables."""
    monkeypatch.chdir(ROOT)
    a = _analysis(["sample-traces/cxl-doe-6.2/trace.jsonl"], 400)
    n = sum(1 for t in a.source.tables() if (f := a.analyzer.feed_arrow(t)) is not None and f.num_rows)
    assert n > 3


def test_empty_trace(tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    src = Sources(lspci_dumps=[QEMU_CXL])
    want = _render_json(run_analysis(open_analysis([str(empty)], src, "6.2")))
    out = io.StringIO()
    render_report(open_analysis([str(empty)], src, "6.2"), "json", out)
    assert out.getvalue() == want and '"findings": [],' in want


@pytest.mark.parametrize("name", SCENARIOS)
def test_cli_json_file_equals_the_old_document(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    trace = f"sample-traces/{name}/trace.jsonl"
    out = tmp_path / "r.json"
    code, stdout, err = run_cli("analyze", trace, "--format", "json", "-o", str(out))
    assert code in (0, 1), err
    assert stdout == ""
    with open(out, encoding="utf-8", newline="") as fh:
        got = fh.read()
    assert got == _render_json(run_analysis(_analysis([trace])))
    with open(os.path.join(ROOT, "sample-traces", name, "expected.json"), encoding="utf-8") as fh:
        assert got == fh.read()


def test_streamed_json_loads_no_pandas(tmp_path) -> None:
    """Through the program's entry point, analyze --format json -o streams Arrow tables to the
    file (findings and summary): no DataFrame, so pandas is never loaded."""
    out = tmp_path / "r.json"
    child = ("import atexit, sys\n"
             "atexit.register(lambda: print('pandas' in sys.modules, file=sys.stderr))\n"
             "sys.argv = ['cfgaudit', 'analyze', 'sample-traces/cxl-doe-6.2/trace.jsonl', '--format', 'json',"
             f" '-o', {str(out)!r}]\n"
             "from cfgaudit.__main__ import console\n"
             "console()\n")
    p = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert p.returncode == 1 and p.stderr.strip().splitlines()[-1] == "False", p.stderr
    with open(os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "expected.json"), encoding="utf-8") as fh:
        assert out.read_text(encoding="utf-8") == fh.read()
