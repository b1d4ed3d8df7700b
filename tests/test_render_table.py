"""RENDERERS as the one table of report formats: the docs list it, a row is all a format needs,
and a streaming hook writes what the renderer writes (CSV, byte for byte).

docs/formats.md holds the table as generated here; ``python tests/test_render_table.py``
rewrites it.
"""
from __future__ import annotations

import io
import json
import os
import re
import sys
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cfgaudit.errors import UsageError
from cfgaudit.report.csvout import CsvSink
from cfgaudit.report.frames import FINDING_COLUMNS, Report, empty_findings, summarize
from cfgaudit.report.render import FORMATS, RENDERERS, FindingsSink, Renderer, render
from support import ROOT, run_cli
from support.docs import doc_block, md_table, rewrite_block
from support.findings import finding_row

DOC = os.path.join(ROOT, "docs", "formats.md")
BEGIN = ("<!-- RENDERERS table: generated from cfgaudit.report.render.RENDERERS; "
         "python tests/test_render_table.py rewrites it -->")
END = "<!-- end of RENDERERS table -->"
SCENARIOS = sorted(d for d in os.listdir(os.path.join(ROOT, "sample-traces"))
                   if os.path.isdir(os.path.join(ROOT, "sample-traces", d)))


# ----------------------------------------------------------------------------------------------
# Findings with every kind of value CSV must get right
# ----------------------------------------------------------------------------------------------

def _finding(i: int, **kw: Any) -> dict[str, Any]:
    return finding_row(i, **kw)


ROWS = [
    _finding(0, comm="a,b", kernel_message="pci 0000:0d:00.0: Unexpected user write, \"quoted\""),
    _finding(1, comm='q"uote', tid=7, doe="line\nbreak", old_value="00000000", changed_bits="01000000"),
    _finding(2, comm="cr\rhere", kind="managed", severity="warning", kernel_taints=False, ret=-13),
    _finding(3, comm="t\tab ünï ✓", kind="managed", allowed_by="user:0x198+4 lab", severity="note",
             verdict_note="", capability=""),
    _finding(4, comm="", uid=None, data=None, via="procfs", kind="user", owner="lab", severity="note",
             kernel_taints=False, allowed_by="user:0x198+4 lab"),
    _finding(5, comm="plain", kind="exclusive", source=" lead and trail ", rule="r,1"),
]


def _report(rows: list[dict[str, Any]] = ROWS) -> Report:
    f = (pd.DataFrame(rows, columns=list(FINDING_COLUMNS)).astype(FINDING_COLUMNS) if rows
         else empty_findings())
    return Report(findings=f, regions=pd.DataFrame(), write_hist=pd.DataFrame(),
                  summary=summarize(f, {"events": len(rows), "writes": len(rows), "reads": 0}),
                  meta={"kernel": "6.2.0"})


def _arrow(df: pd.DataFrame, dictionary: bool) -> pa.Table:
    """The findings as the analyzer hands them to a sink (optionally with dictionary strings)."""
    t = pa.Table.from_pandas(df, preserve_index=False)
    assert t.column_names == list(FINDING_COLUMNS)
    if dictionary:
        cols = [pc.dictionary_encode(c) if pa.types.is_string(c.type) or pa.types.is_large_string(c.type) else c
                for c in t.columns]
        t = pa.table(cols, names=t.column_names)
    return t


def _stream(fmt: str, tables: list[pa.Table], out: IO[str]) -> FindingsSink:
    r = RENDERERS[fmt]
    assert r.stream is not None
    sink = r.stream(out)
    try:
        for t in tables:
            sink(t)
    finally:
        sink.close()
    return sink


def _failing(df: pd.DataFrame) -> int:
    return int((df["kind"].isin(["exclusive", "managed"]) & df["allowed_by"].isna()).sum())


# ----------------------------------------------------------------------------------------------
# (c) CSV: the streaming sink writes exactly what the renderer writes
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dictionary", [False, True], ids=["plain", "dictionary"])
@pytest.mark.parametrize("chunk", [1, 2, 100])
def test_csv_stream_equals_render_byte_for_byte(dictionary: bool, chunk: int) -> None:
    rep = _report()
    want = render(rep, "csv")
    t = _arrow(rep.findings, dictionary)
    tables = [t.slice(i, chunk) for i in range(0, t.num_rows, chunk)] + [t.slice(0, 0)]
    out = io.StringIO()
    sink = _stream("csv", tables, out)
    assert out.getvalue() == want
    assert (sink.rows, sink.failing) == (len(rep.findings), _failing(rep.findings))


def test_csv_stream_through_a_utf8_file_equals_render() -> None:
    """A UTF-8 text file gets the bytes written to its buffer (the fast path), after the header."""
    rep = _report()
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    _stream("csv", [_arrow(rep.findings, True)], out)
    out.flush()
    assert raw.getvalue() == render(rep, "csv").encode("utf-8")


def test_csv_stream_of_no_findings_is_the_header() -> None:
    out = io.StringIO()
    sink = _stream("csv", [], out)
    assert out.getvalue() == render(_report([]), "csv") == ",".join(FINDING_COLUMNS) + "\n"
    assert (sink.rows, sink.failing) == (0, 0)


def test_csv_sink_without_header_writes_rows_only() -> None:
    rep = _report()
    out = io.StringIO()
    sink = CsvSink(out)
    sink(_arrow(rep.findings, False))
    sink.close()
    assert out.getvalue() == render(rep, "csv").split("\n", 1)[1]


@pytest.mark.parametrize("name", SCENARIOS)
def test_cli_csv_equals_csv_of_the_json_findings(name: str, monkeypatch) -> None:
    """End to end: the CLI's (streamed) CSV is the csv renderer's text for the same findings."""
    monkeypatch.chdir(ROOT)
    trace = f"sample-traces/{name}/trace.jsonl"
    code, out, err = run_cli("analyze", trace, "--format", "csv")
    assert code in (0, 1), err
    code, doc, err = run_cli("analyze", trace, "--format", "json")
    assert code in (0, 1), err
    rows = json.loads(doc)["findings"]
    assert out == render(_report(rows), "csv")


# ----------------------------------------------------------------------------------------------
# (b) a row is all a format needs
# ----------------------------------------------------------------------------------------------

class _CountSink:
    """A test-local streaming format: one line at the end, the same as its renderer's."""

    def __init__(self, out: IO[str]) -> None:
        self.out, self.rows, self.failing = out, 0, 0
        self._kinds: list[str] = []

    def __call__(self, findings: pa.Table) -> None:
        self.rows += findings.num_rows
        self._kinds += [str(k) for k in findings.column("kind").to_pylist()]

    def close(self) -> None:
        self.out.write(f"{self.rows} findings: {' '.join(sorted(self._kinds))}\n")


def _render_count(report: Report) -> str:
    kinds = sorted(str(k) for k in report.findings["kind"])
    return f"{len(report.findings)} findings: {' '.join(kinds)}\n"


def test_a_new_row_is_renderable_and_a_choice(monkeypatch) -> None:
    rep = _report()
    assert "count" not in FORMATS
    monkeypatch.setitem(RENDERERS, "count", Renderer("count", "how many findings, by kind", _render_count, "txt",
                                                     stream=_CountSink))
    assert "count" in FORMATS and FORMATS[-1] == "count" and len(FORMATS) == len(RENDERERS)
    assert tuple(FORMATS) == tuple(RENDERERS)
    assert render(rep, "count") == "6 findings: exclusive exclusive exclusive managed managed user\n"
    out = io.StringIO()
    _stream("count", [_arrow(rep.findings, True).slice(0, 2), _arrow(rep.findings, False).slice(2)], out)
    assert out.getvalue() == render(rep, "count")
    with pytest.raises(UsageError, match="count"):
        render(rep, "nope")


def test_formats_follow_the_table_after_the_row_goes() -> None:
    assert "count" not in FORMATS and tuple(FORMATS) == tuple(RENDERERS)
    assert FORMATS == tuple(RENDERERS)


def test_only_streaming_formats_have_a_stream() -> None:
    assert [n for n, r in RENDERERS.items() if r.stream] == ["json", "csv"]


def _doc_code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_docs_worked_example_adds_a_format() -> None:
    """docs/formats.md's example row, run as written, makes a working format."""
    with open(DOC) as fh:
        (block,) = [b for b in _doc_code_blocks(fh.read()) if "RENDERERS[" in b and "import" in b]
    saved = dict(RENDERERS)
    try:
        exec(compile(block, DOC, "exec"), {"__name__": "formats_doc_example"})
        (new,) = set(RENDERERS) - set(saved)
        assert new in FORMATS
        out = render(_report(), new)
        lines = out.split("\n")
        assert len(lines) == len(ROWS) + 2 and lines[-1] == ""  # header, a line per finding, final newline
        assert lines[0].split("\t") == list(FINDING_COLUMNS)
        assert all(len(line.split("\t")) == len(FINDING_COLUMNS) for line in lines[1:-1])
    finally:
        RENDERERS.clear()
        RENDERERS.update(saved)
    assert tuple(FORMATS) == tuple(saved)


# ----------------------------------------------------------------------------------------------
# (a) docs/formats.md lists every row
# ----------------------------------------------------------------------------------------------

def formats_table_md() -> str:
    """docs/formats.md's table, from RENDERERS (in table order)."""
    return md_table(["format", "file", "streamed", "what it writes"],
                    ([f"`{r.name}`", f"`.{r.file_ext}`", "yes" if r.stream else "no", r.help]
                     for r in RENDERERS.values()))


def test_formats_doc_lists_every_renderer() -> None:
    block = doc_block(DOC, BEGIN, END)
    assert block == formats_table_md(), "run: python tests/test_render_table.py"
    listed = re.findall(r"^\| `([^`]+)` \|", block, re.M)
    assert listed == list(RENDERERS) == list(FORMATS)


if __name__ == "__main__":
    rewrite_block(DOC, BEGIN, END, formats_table_md())
    sys.exit(0)
