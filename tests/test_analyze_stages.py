"""The analyzer's stages on their own: the hex toolkit, the DOE decoder across chunk boundaries,
the known bytes, the findings field table, and the package's import rules."""
from __future__ import annotations

import ast
import os
import random
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cfgaudit.analyze import Analyzer, findings_frame
from cfgaudit.analyze import findings as findings_mod
from cfgaudit.analyze.findings import (
    FINDING_COLUMNS,
    FINDING_FIELDS,
    SEVERITY,
    assemble,
    empty_findings,
    findings_schema,
)
from cfgaudit.events import FIELDS
from cfgaudit.hexarrow import HexColumn, encode_rows, encode_runs, is_hex
from cfgaudit.regions import build_registry, load_devices
from support import CXL_BDF, QEMU_CXL

SRC = os.path.join(os.path.dirname(__file__), "..", "src", "cfgaudit")
HEX = re.compile(r"^(?:[0-9a-f]{2})*$")


def _table(events: list[dict]) -> pa.Table:
    return pa.table({f.name: pa.array([e.get(f.name) for e in events], type=f.arrow) for f in FIELDS})


# ---- hexarrow ---------------------------------------------------------------------------------
def _rows(rng: random.Random, n: int) -> list[bytes]:
    return [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 3, 4, 8, 33]))) for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encode_runs_is_bytes_hex(seed: int) -> None:
    rows = _rows(random.Random(seed), 300)
    flat = np.frombuffer(b"".join(rows), dtype=np.uint8)
    got = encode_runs(flat, np.array([len(r) for r in rows]))
    assert got.type == pa.string()
    assert got.to_pylist() == [r.hex() for r in rows]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hex_column_round_trip_is_bytes_fromhex(seed: int) -> None:
    rng = random.Random(seed)
    rows = _rows(rng, 400)
    texts: list[str | None] = [r.hex() for r in rows]
    for i in rng.sample(range(len(texts)), 40):
        texts[i] = None
    hc = HexColumn(pa.array(texts, pa.string()))
    for i, s in enumerate(texts):
        want = bytes.fromhex(s) if s else b""
        assert hc.valid[i]
        assert hc.nbytes[i] == len(want) and hc.present[i] == bool(want)
        assert bytes(hc.flat[hc.start[i]:hc.start[i] + hc.nbytes[i]]) == want
    rows_with = np.flatnonzero(hc.present)
    assert list(hc.dword(rows_with)) == [int.from_bytes(bytes.fromhex(texts[i])[:4], "little") for i in rows_with]
    k = np.zeros(rows_with.size, dtype=np.int64)
    assert list(hc.byte(rows_with, k)) == [bytes.fromhex(texts[i])[0] for i in rows_with]


def test_hex_column_invalid_rows_count_as_no_data() -> None:
    texts = ["0a0b", None, "", "abc", "AB", "zz", "éé", "0g", " 0a", "ff00ff", "0A0b", "deadbeef"]
    hc = HexColumn(pa.array(texts, pa.string()))
    ok = [s is None or bool(HEX.match(s)) for s in texts]
    assert list(hc.valid) == ok
    for i, s in enumerate(texts):
        want = bytes.fromhex(s) if s and ok[i] else b""
        assert hc.nbytes[i] == len(want)
        assert bytes(hc.flat[hc.start[i]:hc.start[i] + hc.nbytes[i]]) == want
    # is_hex (the readers' check) agrees with the decoder on every non-null value
    want = [None if s is None else ok[i] for i, s in enumerate(texts)]
    assert is_hex(pa.array(texts, pa.string())).to_pylist() == want


def test_hex_column_takes_slices_chunks_and_dictionaries() -> None:
    texts = ["00", "0102", None, "a0b0c0", "ffff", "x1", "1234"]
    want = [bytes.fromhex(s) if s and HEX.match(s) else b"" for s in texts]
    arr = pa.array(["zz"] + texts, pa.string()).slice(1)  # an offset into the buffers
    chunked = pa.chunked_array([pa.array(texts[:3], pa.string()), pa.array(texts[3:], pa.string())])
    for col in (arr, chunked, pa.array(texts, pa.string()).dictionary_encode(), pa.array(texts, pa.large_string())):
        hc = HexColumn(col)
        assert [bytes(hc.flat[hc.start[i]:hc.start[i] + hc.nbytes[i]]) for i in range(len(texts))] == want


def test_encode_rows_is_bytes_hex_or_null() -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, size=(50, 8), dtype=np.uint8)
    lens = rng.integers(0, 9, size=50)
    got = encode_rows(data, lens).to_pylist()
    assert got == [bytes(data[i, :lens[i]]).hex() if lens[i] else None for i in range(50)]


# ---- the DOE decoder and known bytes across chunks ----------------------------------------------
@pytest.fixture(scope="module")
def cxl62():
    ds = load_devices(lspci_dumps=[QEMU_CXL], drivers={CXL_BDF: "cxl_pci"})
    return build_registry(ds, kernel="6.2.0")


def _w(off: int, v: int | str | None, size: int = 4, pid: int = 812, comm: str = "doe-tool") -> dict:
    data = v.to_bytes(size, "little").hex() if isinstance(v, int) else v
    return dict(pid=pid, comm=comm, op="write", bdf=CXL_BDF, offset=off, size=size, data=data, via="sysfs", ret=size)


DOE_EVENTS = [
    _w(0x1A0, 0x00001E98), _w(0x1A0, 3), _w(0x1A0, 0), _w(0x198, 0x80000000),  # a 3-dword CXL compliance object
    _w(0x1A4, 0),                                                              # read mailbox acknowledge
    _w(0x1A0, 0x00020001), _w(0x198, 0x1),                                     # one dword, aborted
    _w(0x198, 0x80000000),                                                     # GO with nothing written
    _w(0x1A0, None), _w(0x1A0, "zzzzzzzz"), _w(0x1A0, "AB12CD34"),              # no (usable) data
    _w(0x19C, 0), _w(0x1A0, 0xBEEF, size=2),                                   # other registers and widths
    _w(0x1A0, 0x00BB1234, pid=901, comm="setpci"), _w(0x1A0, 5), _w(0x198, 0x80000000),
    _w(0x1A0, 0x00000001), _w(0x1A0, 0), _w(0x198, 0x80000000),                # length 0 means 2^18 dwords
    _w(0x18E, 0),                                                              # starts before the mailbox
]
M = "cxl_pci's mailbox"
DOE_SENTENCES = [
    f"pid 812 (doe-tool) wrote dword 1 of a CXL compliance data object into {M}",
    f"pid 812 (doe-tool) wrote dword 2 of a CXL compliance data object into {M}",
    f"pid 812 (doe-tool) wrote dword 3 of a CXL compliance data object into {M}",
    f"pid 812 (doe-tool) started a CXL compliance request (3 dwords) on {M}",
    f"pid 812 (doe-tool) took a response dword from {M} (read mailbox acknowledge)",
    f"pid 812 (doe-tool) wrote dword 1 of a secured CMA/SPDM data object into {M}",
    f"pid 812 (doe-tool) aborted the DOE exchange on {M} (1 dwords discarded)",
    f"pid 812 (doe-tool) started a empty request (0 dwords) on {M}",
    "DOE register +0x10 written (no data in the trace)",
    "DOE register +0x10 written (no data in the trace)",
    "DOE register +0x10 written (no data in the trace)",
    f"pid 812 (doe-tool) wrote DOE register +0xc of {M}",
    f"pid 812 (doe-tool) wrote DOE register +0x10 of {M}",
    f"pid 901 (setpci) wrote dword 1 of a vendor-defined (vendor 1234 type 0xbb) data object into {M}",
    f"pid 812 (doe-tool) wrote dword 2 of a vendor-defined (vendor 1234 type 0xbb) data object into {M}",
    f"pid 812 (doe-tool) started a vendor-defined (vendor 1234 type 0xbb) request (2 dwords; header says 5 dwords) "
    f"on {M}",
    f"pid 812 (doe-tool) wrote dword 1 of a DOE discovery data object into {M}",
    f"pid 812 (doe-tool) wrote dword 2 of a DOE discovery data object into {M}",
    f"pid 812 (doe-tool) started a DOE discovery request (2 dwords; header says 262144 dwords) on {M}",
    None,
]


def _events(evs: list[dict]) -> list[dict]:
    return [dict(e, ts_ns=i) for i, e in enumerate(evs)]


def _feed(res, events: list[dict], cuts: list[int], reads: bool = False) -> pd.DataFrame:
    an = Analyzer(res, reads=reads)
    t = _table(events)
    bounds = [0, *cuts, len(events)]
    parts = [an.feed(t.slice(a, b - a)) for a, b in zip(bounds, bounds[1:])]
    return pd.concat(parts, ignore_index=True)


def test_doe_sentences(cxl62) -> None:
    f = _feed(cxl62, _events(DOE_EVENTS), [])
    by_event = f.groupby("event_index")["doe"].first()
    got = [None if pd.isna(by_event.get(i)) else by_event.get(i) for i in range(len(DOE_EVENTS))]
    assert got == DOE_SENTENCES


@pytest.mark.parametrize("split", ["every-row", "pairs", "threes", "random-1", "random-2"])
def test_doe_and_known_bytes_same_in_one_chunk_or_many(cxl62, split: str) -> None:
    rng = random.Random(split)
    evs = list(DOE_EVENTS)
    # reads that carry data update the bytes known for old values, across chunks too
    evs += [dict(_w(0x90, "4000", size=2, comm="setpci"), op="read"), _w(0x90, "4200", size=2),
            dict(_w(0x90, "zzzz", size=2), op="read"), _w(0x90, "4300", size=2),
            dict(_w(0x1000, "00000000"), op="read"), _w(0x3C, "0b", size=1)]
    evs += [rng.choice(evs) for _ in range(120)]
    events = _events(evs)
    n = len(events)
    cuts = {"every-row": list(range(1, n)), "pairs": list(range(2, n, 2)), "threes": list(range(3, n, 3)),
            "random-1": sorted(rng.sample(range(1, n), 15)), "random-2": sorted(rng.sample(range(1, n), 40))}[split]
    for reads in (False, True):
        one = _feed(cxl62, events, [], reads=reads)
        many = _feed(cxl62, events, cuts, reads=reads)
        pd.testing.assert_frame_equal(one, many)
        assert one["doe"].notna().sum() > 30 and one["old_value"].notna().sum() > 5


def test_known_bytes_reads_update_invalid_reads_do_not(cxl62) -> None:
    dump = cxl62.views[0].cs.data
    evs = _events([dict(_w(0x90, "4000", size=2), op="read"), _w(0x90, "4200", size=2),
                   dict(_w(0x90, "zzzz", size=2), op="read"), _w(0x90, "4300", size=2)])
    an = Analyzer(cxl62)
    f1 = an.feed(_table(evs[:2]))
    f2 = an.feed(_table(evs[2:]))
    r1, r2 = f1[f1["offset"] == 0x90].iloc[0], f2[f2["offset"] == 0x90].iloc[0]
    assert (r1.old_value, r1.changed_bits) == ("4000", "0200")
    # writes do not update the known bytes; the invalid read is no data: the read of chunk 1 holds
    assert (r2.old_value, r2.changed_bits) == ("4000", "0300")
    fresh = Analyzer(cxl62).feed(_table(evs[2:]))
    r3 = fresh[fresh["offset"] == 0x90].iloc[0]
    assert r3.old_value == bytes(dump[0x90:0x92]).hex()


# ---- the findings field table -------------------------------------------------------------------
TODAY = [("ts_ns", "int64"), ("pid", "int64"), ("tid", "Int64"), ("uid", "Int64"), ("comm", "string"),
         ("op", "string"), ("bdf", "string"), ("offset", "int64"), ("size", "int64"), ("data", "string"),
         ("via", "string"), ("ret", "Int64"), ("guard", "string"), ("region_start", "Int64"), ("region_length", "Int64"),
         ("owner", "string"), ("kind", "string"), ("capability", "string"), ("rule", "string"),
         ("source", "string"), ("kernel_taints", "bool"), ("kernel_logs", "bool"), ("kernel_message", "string"),
         ("allowed_by", "string"), ("severity", "string"), ("old_value", "string"), ("changed_bits", "string"),
         ("doe", "string"), ("collision", "string"), ("kernel_protocol", "string"), ("kernel_exchange", "Int64"),
         ("kernel_ret", "Int64"), ("verdict_note", "string"), ("event_index", "int64")]


def test_finding_columns_derive_from_the_field_table() -> None:
    assert list(FINDING_COLUMNS.items()) == [(f.name, f.pandas) for f in FINDING_FIELDS] == TODAY
    assert all(f.doc for f in FINDING_FIELDS)
    events = {f.name: f.arrow for f in FIELDS}
    for f in FINDING_FIELDS:
        assert f.origin in ("event", "region", "kernel", "known", "doe", "trace", "collision"), f
        if f.origin == "event":
            assert f.arrow == events[f.name], f
    assert findings_schema().names == list(FINDING_COLUMNS)
    assert dict(empty_findings().dtypes.astype(str)) == FINDING_COLUMNS
    assert SEVERITY == {"collision": "error", "exclusive": "error", "managed": "warning", "user": "note"}


def test_report_frames_reexports_the_same_objects() -> None:
    from cfgaudit.report import frames
    assert frames.FINDING_COLUMNS is FINDING_COLUMNS and frames.SEVERITY is SEVERITY
    assert frames.empty_findings is empty_findings


def test_feed_arrow_matches_the_schema(cxl62) -> None:
    an = Analyzer(cxl62)
    t = an.feed_arrow(_table(_events(DOE_EVENTS)))
    assert t is not None and t.column_names == list(FINDING_COLUMNS)
    schema = findings_schema()
    for name, col in zip(t.column_names, t.columns):
        typ = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        assert typ == schema.field(name).type, name
    df = findings_frame(t)
    assert dict(df.dtypes.astype(str)) == FINDING_COLUMNS
    assert set(df["severity"]) == {"error"} and set(df["kind"]) == {"exclusive"}


def test_assemble_wants_every_computed_column() -> None:
    t = _table(_events([_w(0x198, 0)]))
    with pytest.raises(KeyError, match="region_start"):
        assemble(t, np.array([0]), {})


def test_severity_column_notes_allowed_findings() -> None:
    sev = findings_mod.severity_column(np.array([0, 1, 0, 1], dtype=np.int8), np.array([False, False, True, True]))
    assert sev.cast(pa.string()).to_pylist() == ["error", "warning", "note", "note"]


# ---- import rules of analyze/ -------------------------------------------------------------------
ALLOWED = {"events", "errors", "pci_regs", "hexarrow", "ondemand", "regions", "analyze"}


def _cfgaudit_imports(path: str, pkg: list[str]) -> tuple[set[str], list[int]]:
    tree = ast.parse(open(path).read())
    top_level = {id(n) for n in tree.body}
    top_level |= {id(n) for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                  for n in ast.walk(node)}  # typing-only imports (pandas: see ondemand.py)
    names, nested = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
            nested.append(node.lineno)
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mods = ([".".join(base + [node.module])] if node.module
                        else [".".join(base + [a.name]) for a in node.names])
            elif (node.module or "").startswith("cfgaudit."):
                mods = [node.module[len("cfgaudit."):]]
            else:
                continue
            names.update(m.split(".")[0] for m in mods)
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("cfgaudit."))
    return names, nested


def test_analyze_imports_only_lower_floors_and_at_the_top() -> None:
    pkg_dir = os.path.join(SRC, "analyze")
    files = sorted(f for f in os.listdir(pkg_dir) if f.endswith(".py"))
    assert {"__init__.py", "index.py", "kernel.py", "known.py", "doe.py", "findings.py"} <= set(files)
    assert not os.path.exists(os.path.join(SRC, "analyze.py")) and not os.path.exists(os.path.join(SRC, "verdict.py"))
    for f in files:
        names, nested = _cfgaudit_imports(os.path.join(pkg_dir, f), ["analyze", f[:-3]])
        assert names <= ALLOWED, (f, names - ALLOWED)
        assert not nested, (f, nested)


def test_doe_numbers_come_from_pci_regs() -> None:
    """DOE's capability ID and size live in pci_regs.py only (they were spelled out 8 times)."""
    for rel in ("analyze/index.py", "analyze/kernel.py", "analyze/known.py", "analyze/doe.py", "analyze/__init__.py",
                "regions/rules.py", "regions/capabilities.py"):
        code = open(os.path.join(SRC, rel)).read()
        assert not re.search(r"\b0x2[eE]\b", code), rel
        assert not re.search(r"InCap\(\"ext\", [^,]+, 0, 0x18", code), rel
