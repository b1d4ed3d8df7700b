#!/usr/bin/env python3
"""cfgaudit analyze vs. DuckDB's SQL range join, side by side (``make bench``; issue 10, target 1).

For each trace of ``--cases`` (default: 10M events from Parquet, the same 10M as JSONL, and 5M
from Parquet with few findings, about 4%), ``--rounds`` times, alternating which side goes first:

* cfgaudit, end to end, in a fresh process (start to exit):
  ``cfgaudit analyze TRACE --snapshot S --kernel 6.2 --format csv -o OUT`` (read, analyze, write CSV);
* DuckDB with its defaults (all cores), end to end, in a fresh process: read the same trace
  (``read_parquet`` / ``read_ndjson``) and the same regions (cfgaudit's registry for the snapshot,
  kind != 'user', dumped once to Parquet), range join, ``COPY ... TO`` CSV;
* after the first round, both result sets compared on (event_index [Parquet only], ts_ns, bdf,
  offset, size, region_start, region_length, owner, kind) as multisets: "identical rows" must be
  yes, or the run fails;
* then cfgaudit ``--format json -o`` (``--json-rounds``; traces up to ``--json-max`` events).

Printed per trace: the medians, cfgaudit / DuckDB (target: <= 0.7), json / csv (target <= 1.5),
the load average. ``--baseline SRC`` also times another cfgaudit source tree (e.g. ``git archive
HEAD src | tar -x -C /tmp/old``, then ``--baseline /tmp/old/src``) and checks its CSV is the same
bytes. Wall time and peak RSS are the child's own (``os.wait4``; RSS includes interpreter
start-up and imports). Then one cfgaudit run over ``--big`` events (default 1e8) from Parquet with
the CSV going to /dev/null, to show memory stays bounded (target <= 600 MiB).

Traces are generated deterministically (numpy, seeded) and cached in ``--out`` keyed by
size, seed and mix; generation is not measured.

``--results FILE``: also write the figures as JSON (per trace: the medians, the ratio, identical
rows, json / csv, peak RSS; the bounded-memory run's events, seconds and peak RSS), rewritten after
each trace so that a run cut short (or failed on "identical rows") leaves what it measured;
``bench/summary.py`` reads it (``make bench``).

    .venv/bin/python bench/run.py [--cases 10M:parquet,10M:jsonl,5M:parquet:few] [--rounds 3]
        [--big 1e8|0] [--baseline SRC] [--seed 1] [--out bench-out] [--keep] [--write-md] [--results FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from summary import save_results  # bench/summary.py: the format it reads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "snapshot.json")
KERNEL = "6.2"
CHUNK = 1 << 20  # rows per generated row group
MD_BEGIN = "<!-- bench:table:begin -->"
MD_END = "<!-- bench:table:end -->"

# The generated mix ---------------------------------------------------------------------------
CXL, RP = "0000:0d:00.0", "0000:0c:00.0"  # in the snapshot, with regions (0d: the DOE mailbox at 0x190)
NO_REGIONS = ["0000:3b:00.0", "0000:5e:00.0", "0000:af:00.1"]  # not in the snapshot: no regions
BDFS = [CXL, RP] + NO_REGIONS
BDF_P = [0.40, 0.25, 0.35 / 3, 0.35 / 3, 0.35 / 3]
HOT_P = 0.5  # share of events on a device's hot registers; the rest is uniform over 0..0xfff
# Event mixes: the share of events on hot registers. "few" (issue 10's trace c): most writes miss
# every region, about 4% of events give a finding (the default mix: about 30%).
MIXES = {"default": HOT_P, "few": 0.03}
# (offset, size, weight) per device: DOE control/status/write/read mailbox, Link Control, Command
HOT = {
    CXL: [(0x198, 4, 0.15), (0x19C, 4, 0.10), (0x1A0, 4, 0.35), (0x1A4, 4, 0.10), (0x90, 2, 0.15), (0x04, 2, 0.15)],
    RP: [(0x58, 2, 0.45), (0x04, 2, 0.35), (0x60, 2, 0.20)],
}
HOT_OTHER = [(0x04, 2, 0.6), (0x10, 4, 0.4)]
VIAS = ["sysfs", "procfs", "vfio", "ioport", "devmem"]
VIA_P = [0.85, 0.08, 0.04, 0.02, 0.01]
PROCS = [(812, "doe-tool"), (901, "setpci"), (1203, "lspci"), (1500, "fwupd"), (2210, "cxl"), (3301, "python3")]
WRITE_P = 0.9


def _hex_strings(vals, nbytes):
    """Lower-case hex of the first ``nbytes`` little-endian bytes of each uint32 (an Arrow string array)."""
    import numpy as np
    import pyarrow as pa

    n = vals.size
    b = vals.astype("<u4").view(np.uint8).reshape(n, 4)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.empty((n, 8), dtype=np.uint8)
    chars[:, 0::2] = digits[b >> 4]
    chars[:, 1::2] = digits[b & 15]
    lens = 2 * nbytes.astype(np.int64)
    data = chars[np.arange(8)[None, :] < lens[:, None]]
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))


def _chunk(rng, n, ts0, hot_p=HOT_P):
    """One chunk of events as an Arrow table in the cfgaudit event schema; returns (table, last ts)."""
    import numpy as np
    import pyarrow as pa

    from cfgaudit.events import event_table

    dev = rng.choice(len(BDFS), size=n, p=BDF_P)
    # uniform noise: size 1/2/4, offset aligned to the size, anywhere in 0..0xfff
    size = rng.choice(np.array([1, 2, 4]), size=n, p=[0.15, 0.25, 0.60])
    offset = (rng.integers(0, 0x1000, size=n) // size) * size
    hot = rng.random(n) < hot_p
    for d, bdf in enumerate(BDFS):
        table = HOT.get(bdf, HOT_OTHER)
        m = np.flatnonzero(hot & (dev == d))
        w = np.array([t[2] for t in table])
        pick = rng.choice(len(table), size=m.size, p=w / w.sum())
        offset[m] = np.array([t[0] for t in table])[pick]
        size[m] = np.array([t[1] for t in table])[pick]
    is_write = rng.random(n) < WRITE_P
    vals = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    # DOE control writes: mostly GO, some ABORT, some 0
    ctrl = (dev == 0) & (offset == 0x198) & is_write
    cv = rng.choice(np.array([0x80000000, 0x1, 0x0], dtype=np.uint32), size=int(ctrl.sum()), p=[0.6, 0.1, 0.3])
    vals[ctrl] = cv
    proc = rng.integers(0, len(PROCS), size=n)
    pid = np.array([p for p, _ in PROCS], dtype=np.int64)[proc]
    comm = pa.array([c for _, c in PROCS]).take(pa.array(proc))
    via = pa.array(VIAS).take(pa.array(rng.choice(len(VIAS), size=n, p=VIA_P)))
    ret = size.astype(np.int64).copy()
    ret[rng.random(n) < 0.01] = -1  # EPERM
    gaps = rng.integers(1, 50_000, size=n)
    ts = ts0 + np.cumsum(gaps)
    cols = {
        "ts_ns": pa.array(ts, pa.int64()),
        "pid": pa.array(pid, pa.int64()),
        "comm": comm,
        "op": pa.array(np.where(is_write, "write", "read").astype(object), pa.string()),
        "bdf": pa.array(BDFS).take(pa.array(dev)),
        "offset": pa.array(offset.astype(np.int64)),
        "size": pa.array(size.astype(np.int64)),
        "tid": pa.array(pid + rng.integers(0, 3, size=n), pa.int64()),
        "uid": pa.array(np.where(rng.random(n) < 0.9, 0, 1000).astype(np.int64)),
        "data": _hex_strings(vals, size),
        "via": via,
        "ret": pa.array(ret, pa.int64()),
        "kernel_verdict": pa.nulls(n, pa.bool_()),
    }
    return event_table(cols, n), int(ts[-1])  # the fields not generated (DOE protocol) null


def generate_parquet(path: str, n: int, seed: int, mix: str = "default") -> None:
    import numpy as np
    import pyarrow.parquet as pq

    from cfgaudit.events import arrow_schema

    tmp = path + ".tmp"
    ts = 1_000_000_000
    with pq.ParquetWriter(tmp, arrow_schema(), compression="snappy") as w:
        done, k = 0, 0
        while done < n:
            m = min(CHUNK, n - done)
            t, ts = _chunk(np.random.default_rng([seed, k]), m, ts, MIXES[mix])
            w.write_table(t, row_group_size=CHUNK)
            done, k = done + m, k + 1
    os.replace(tmp, path)


def generate_jsonl(parquet: str, path: str) -> None:
    """The same events as JSON Lines (DuckDB writes them; file order preserved)."""
    import duckdb

    tmp = path + ".tmp"
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    con.execute("SET enable_progress_bar = false")
    con.execute(f"COPY (SELECT * EXCLUDE (kernel_verdict) FROM read_parquet('{parquet}')) TO '{tmp}' (FORMAT JSON)")
    con.close()
    os.replace(tmp, path)


def trace_path(out: str, n: int, seed: int, kind: str, mix: str = "default") -> str:
    suffix = "" if mix == "default" else f"-{mix}"
    return os.path.join(out, f"trace-{n}-s{seed}{suffix}.{kind}")


def ensure_trace(out: str, n: int, seed: int, kind: str, mix: str = "default") -> str:
    path = trace_path(out, n, seed, kind, mix)
    if os.path.exists(path):
        return path
    t0 = time.monotonic()
    if kind == "parquet":
        generate_parquet(path, n, seed, mix)
    else:
        generate_jsonl(ensure_trace(out, n, seed, "parquet", mix), path)
    print(f"# generated {path} ({os.path.getsize(path) / 1e9:.2f} GB, {time.monotonic() - t0:.0f} s)", flush=True)
    return path


def generate(out: str, n: int, seed: int, kind: str, mix: str = "default") -> str:
    """:func:`ensure_trace` in a child process (this one stays small: see :func:`measure`)."""
    subprocess.run([sys.executable, os.path.abspath(__file__), "_generate", out, str(n), str(seed), kind, mix],
                   check=True)
    return trace_path(out, n, seed, kind, mix)


def ensure_regions(out: str) -> str:
    """cfgaudit's registry for the snapshot (kind != 'user') as Parquet, for DuckDB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cfgaudit.regions import build_registry, load_devices

    path = os.path.join(out, "regions.parquet")
    res = build_registry(load_devices(snapshot=SNAPSHOT), kernel=KERNEL)
    rows = [r.to_dict() for r in res.registry.regions() if r.kind != "user"]
    cols = ["bdf", "start", "length", "owner", "kind", "capability", "rule", "source"]
    t = pa.table({c: [r[c] for r in rows] for c in cols})
    schema = pa.schema([(c, pa.int64() if c in ("start", "length") else pa.string()) for c in cols])
    pq.write_table(t.cast(schema), path)
    return path


# Measuring ----------------------------------------------------------------------------------------
# Linux keeps a process's peak RSS across fork and exec, so a child forked straight from this
# (large) process would report at least this process's size. A small launcher process forks
# the measured command instead and reports its wall time and rusage.
LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read().decode(errors="replace")
_, status, ru = os.wait4(p.pid, 0)
print(json.dumps({"wall": time.monotonic() - t0, "maxrss_kib": ru.ru_maxrss,
                  "rc": os.waitstatus_to_exitcode(status), "stderr": err[-4000:]}))
"""


def measure(cmd: list[str], ok=(0,)) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one child process."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER] + cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    if r["rc"] not in ok:
        sys.exit(f"FAILED ({r['rc']}): {' '.join(cmd)}\n{r['stderr']}")
    return r["wall"], r["maxrss_kib"] / 1024


def cfgaudit_cmd(trace: str, out: str, fmt: str = "csv", src: str | None = None) -> list[str]:
    """The measured command; with ``src``, the cfgaudit sources in that directory (a ``src/``
    of another version, e.g. ``git archive HEAD src | tar -x -C /tmp/old``) instead."""
    args = ["analyze", trace, "--snapshot", SNAPSHOT, "--kernel", KERNEL, "--format", fmt, "-o", out]
    if src:
        return ["env", f"PYTHONPATH={os.path.abspath(src)}", sys.executable, "-m", "cfgaudit"] + args
    return [os.path.join(os.path.dirname(sys.executable), "cfgaudit")] + args


DUCKDB_SQL = """
COPY (
  SELECT {index} e.ts_ns, e.pid, e.tid, e.uid, e.comm, e.op, e.bdf, e."offset", e."size", e.data, e.via, e.ret,
         r.start AS region_start, r.length AS region_length, r.owner, r.kind, r.capability, r.rule, r.source
  FROM {scan} e JOIN read_parquet('{regions}') r
    ON e.bdf = r.bdf AND e."offset" <= r.start + r.length - 1 AND e."offset" + e."size" - 1 >= r.start
  WHERE e.op = 'write' AND e."size" > 0
) TO '{out}' (FORMAT CSV, HEADER)
"""


def duckdb_child(trace: str, regions: str, out: str) -> None:
    """The DuckDB side, run as its own process (``run.py _duckdb TRACE REGIONS OUT``)."""
    import duckdb

    if trace.endswith(".parquet"):
        scan, index = f"read_parquet('{trace}', file_row_number = true)", "e.file_row_number AS event_index,"
    else:
        scan, index = f"read_ndjson('{trace}')", ""
    con = duckdb.connect()
    con.execute(DUCKDB_SQL.format(scan=scan, index=index, regions=regions, out=out))
    con.close()


def compare(cfg_csv: str, duck_csv: str, with_index: bool) -> tuple[bool, int, int]:
    """(identical multisets of keys, cfgaudit rows, DuckDB rows)."""
    import duckdb

    keys = ["ts_ns", "bdf", '"offset"', '"size"', "region_start", "region_length", "owner", "kind"]
    if with_index:
        keys = ["event_index"] + keys
    k = ", ".join(keys)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW a AS SELECT * FROM read_csv('{cfg_csv}', header = true, all_varchar = true)")
    con.execute(f"CREATE VIEW b AS SELECT * FROM read_csv('{duck_csv}', header = true, all_varchar = true)")
    na = con.execute("SELECT count(*) FROM a").fetchone()[0]
    nb = con.execute("SELECT count(*) FROM b").fetchone()[0]
    diff = con.execute(f"SELECT (SELECT count(*) FROM (SELECT {k} FROM a EXCEPT ALL SELECT {k} FROM b)) + "
                       f"(SELECT count(*) FROM (SELECT {k} FROM b EXCEPT ALL SELECT {k} FROM a))").fetchone()[0]
    con.close()
    return (na == nb and diff == 0), na, nb


def drop_cache_hint(path: str) -> None:
    """Read the file once so both sides start from a warm page cache."""
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


# Reporting ----------------------------------------------------------------------------------------
def fmt_size(n: int) -> str:
    for div, suf in ((10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suf}"
    return str(n)


def median(xs: list[float]) -> float:
    ys = sorted(xs)
    return ys[len(ys) // 2] if len(ys) % 2 else (ys[len(ys) // 2 - 1] + ys[len(ys) // 2]) / 2


def case_name(c: dict) -> str:
    return f"{fmt_size(c['n'])} {c['kind']}" + ("" if c["mix"] == "default" else f" ({c['mix']} findings)")


def table_md(rows: list[dict], big: dict | None) -> str:
    head = ("| trace | findings | cfgaudit csv s ([before;] median, runs) | DuckDB s (median, runs) | "
            "cfgaudit / DuckDB | "
            "target <= 0.7 | cfgaudit json s | json / csv | cfgaudit peak RSS | DuckDB peak RSS | identical rows |\n"
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|\n")
    lines = []
    for r in rows:
        ratio = r["cfg_s"] / r["duck_s"]
        js = f"{r['json_s']:.2f}" if r.get("json_s") else "-"
        jr = f"{r['json_s'] / r['cfg_s']:.2f}" if r.get("json_s") else "-"
        before = f"{r['old_s']:.2f} s (ratio {r['old_s'] / r['duck_s']:.2f}); " if r.get("old_s") else ""
        lines.append(f"| {case_name(r)} | {r['rows']:,} | {before}"
                     f"{r['cfg_s']:.2f} ({', '.join(f'{x:.2f}' for x in r['cfg_all'])}) | "
                     f"{r['duck_s']:.2f} ({', '.join(f'{x:.2f}' for x in r['duck_all'])}) | {ratio:.2f} | "
                     f"{'met' if ratio <= 0.7 else 'not met'} | {js} | {jr} | {r['cfg_rss']:,.0f} MiB | "
                     f"{r['duck_rss']:,.0f} MiB | {'yes' if r['identical'] else 'NO'} |")
    out = head + "\n".join(lines) + "\n"
    if big:
        ref = f" (vs {big['ref_rss']:,.0f} MiB at {fmt_size(big['ref_n'])})" if big.get("ref_rss") else ""
        out += (f"\nBounded memory: {fmt_size(big['n'])} events from Parquet, CSV to /dev/null: "
                f"{big['cfg_s']:.1f} s ({big['n'] / big['cfg_s']:,.0f} events/s), peak RSS {big['cfg_rss']:,.0f} MiB"
                + ref + ".\n")
    return out


def load_average() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def write_md(md_path: str, text: str, env: str) -> None:
    with open(md_path) as fh:
        doc = fh.read()
    a, b = doc.find(MD_BEGIN), doc.find(MD_END)
    if a < 0 or b < 0:
        sys.exit(f"{md_path}: no {MD_BEGIN} ... {MD_END} markers")
    doc = doc[: a + len(MD_BEGIN)] + "\n" + env + "\n" + text + doc[b:]
    with open(md_path, "w") as fh:
        fh.write(doc)


def environment() -> str:
    import duckdb
    import numpy
    import pandas
    import pyarrow

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return (f"Run {time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
            f"pandas {pandas.__version__}, "
            f"numpy {numpy.__version__}, pyarrow {pyarrow.__version__}, DuckDB {duckdb.__version__} "
            f"(default threads). Seed {{seed}}.\n")


def parse_n(s: str) -> int:
    return int(float(s))


def parse_cases(spec: str) -> list[dict]:
    """``10M:parquet,10M:jsonl,5M:parquet:few`` -> [{n, kind, mix}, ...]."""
    out = []
    for item in spec.split(","):
        if not item:
            continue
        parts = item.split(":")
        n = parse_n(parts[0].replace("M", "e6").replace("k", "e3"))
        kind = parts[1] if len(parts) > 1 else "parquet"
        mix = parts[2] if len(parts) > 2 else "default"
        if kind not in ("parquet", "jsonl") or mix not in MIXES:
            sys.exit(f"bad case {item!r}: SIZE[:parquet|jsonl[:{'|'.join(MIXES)}]]")
        out.append(dict(n=n, kind=kind, mix=mix))
    return out


def _same_file(fa, fb) -> bool:
    while True:
        a, b = fa.read(1 << 24), fb.read(1 << 24)
        if a != b:
            return False
        if not a:
            return True


class ConflictSetsDiffer(SystemExit):
    """A trace's conflict sets differ: ends the run like ``sys.exit(message)``, carrying the trace's
    figures so far (``row``: one round, ``identical`` False) for ``--results``."""

    def __init__(self, message: str, row: dict) -> None:
        super().__init__(message)
        self.row = row


def case_results(r: dict) -> dict:
    """One trace's figures for ``--results`` (seconds, MiB; ``ratio`` = cfgaudit s / DuckDB s)."""
    return {"name": case_name(r), "events": r["n"], "format": r["kind"], "mix": r["mix"],
            "cfgaudit_s": r["cfg_s"], "cfgaudit_runs": r["cfg_all"],
            "duckdb_s": r["duck_s"], "duckdb_runs": r["duck_all"],
            "ratio": r["cfg_s"] / r["duck_s"], "identical": bool(r["identical"]),
            "findings": r["rows"], "duckdb_rows": r.get("duck_rows"),
            "json_s": r["json_s"], "json_csv": r["json_s"] / r["cfg_s"] if r["json_s"] else None,
            "cfgaudit_peak_rss_mib": r["cfg_rss"], "duckdb_peak_rss_mib": r["duck_rss"],
            "before_s": r["old_s"]}


def write_results(path: str, args: argparse.Namespace, rows: list[dict], big: dict | None, complete: bool) -> None:
    """``--results``: the run's figures as JSON (written to a temporary file, then renamed).
    ``complete`` is False while the run is still going (or when it stopped on differing rows)."""
    save_results(path, "bench/run.py", {
        "complete": complete, "rounds": args.rounds, "seed": args.seed, "cases": [case_results(r) for r in rows],
        "big_requested": args.big,
        "big": None if big is None else {
            "events": big["n"], "seconds": big["cfg_s"], "events_per_s": big["n"] / big["cfg_s"],
            "peak_rss_mib": big["cfg_rss"], "ref_events": big["ref_n"], "ref_peak_rss_mib": big["ref_rss"]},
    })


def run_case(c: dict, args: argparse.Namespace, regions: str) -> dict:
    """One trace: cfgaudit (csv) and DuckDB alternating, ``--rounds`` each; the conflict sets
    compared after the first round; then cfgaudit ``--format json`` (``--json-rounds``)."""
    trace = generate(args.out, c["n"], args.seed, c["kind"], c["mix"])
    drop_cache_hint(trace)
    tag = f"{c['n']}-{c['kind']}-{c['mix']}"
    cfg_csv = os.path.join(args.out, f"cfgaudit-{tag}.csv")
    duck_csv = os.path.join(args.out, f"duckdb-{tag}.csv")
    cfg, duck, old, cfg_rss, duck_rss = [], [], [], 0.0, 0.0
    same, na, nb = None, 0, 0
    for r in range(args.rounds):
        order = ("cfg", "duck") if r % 2 == 0 else ("duck", "cfg")
        if args.baseline and r < args.baseline_rounds:
            order = order + ("old",) if r % 2 == 0 else ("old",) + order
        for who in order:
            if who == "old":
                old.append(measure(cfgaudit_cmd(trace, os.devnull if r else cfg_csv + ".old", src=args.baseline),
                                   ok=(0, 1))[0])
            elif who == "cfg":
                s, m = measure(cfgaudit_cmd(trace, cfg_csv), ok=(0, 1))
                cfg.append(s)
                cfg_rss = max(cfg_rss, m)
            else:
                s, m = measure([sys.executable, os.path.abspath(__file__), "_duckdb", trace, regions, duck_csv])
                duck.append(s)
                duck_rss = max(duck_rss, m)
        if same is None:
            same, na, nb = json.loads(subprocess.run(
                [sys.executable, os.path.abspath(__file__), "_compare", cfg_csv, duck_csv,
                 str(int(c["kind"] == "parquet"))], check=True, capture_output=True, text=True).stdout)
            if not same:
                row = dict(c, cfg_s=median(cfg), cfg_all=cfg, duck_s=median(duck), duck_all=duck, cfg_rss=cfg_rss,
                           duck_rss=duck_rss, rows=na, duck_rows=nb, identical=False, json_s=None, old_s=None)
                raise ConflictSetsDiffer(f"conflict sets differ: {cfg_csv} vs {duck_csv}", row)
            if old:  # the baseline's CSV must be the same bytes
                with open(cfg_csv, "rb") as fa, open(cfg_csv + ".old", "rb") as fb:
                    res_same = _same_file(fa, fb)
                os.remove(cfg_csv + ".old")
                print(f"  baseline CSV byte-identical: {'yes' if res_same else 'NO'}", flush=True)
        print(f"  {case_name(c)}: round {r + 1}: cfgaudit {cfg[-1]:6.2f} s, DuckDB {duck[-1]:6.2f} s"
              + (f", baseline {old[-1]:6.2f} s" if args.baseline and r < args.baseline_rounds else "")
              + f" (load {load_average()})", flush=True)
    res = dict(c, cfg_s=median(cfg), cfg_all=cfg, duck_s=median(duck), duck_all=duck, cfg_rss=cfg_rss,
               duck_rss=duck_rss, rows=na, duck_rows=nb, identical=same, json_s=None,
               old_s=median(old) if old else None)
    if args.json_rounds and c["n"] <= args.json_max:
        cfg_json = os.path.join(args.out, f"cfgaudit-{tag}.json")
        js = [measure(cfgaudit_cmd(trace, cfg_json, "json"), ok=(0, 1))[0] for _ in range(args.json_rounds)]
        res["json_s"] = median(js)
        os.remove(cfg_json)
    if not args.keep:
        os.remove(cfg_csv)
        os.remove(duck_csv)
    ratio = res["cfg_s"] / res["duck_s"]
    print(f"{case_name(c):>22}: cfgaudit {res['cfg_s']:6.2f} s  DuckDB {res['duck_s']:6.2f} s  "
          f"cfgaudit/DuckDB {ratio:4.2f} ({'<= 0.7: met' if ratio <= 0.7 else '> 0.7: not met'})  "
          + (f"json/csv {res['json_s'] / res['cfg_s']:4.2f}  " if res["json_s"] else "json: not run  ")
          + (f"before {res['old_s']:6.2f} s (ratio {res['old_s'] / res['duck_s']:4.2f})  " if res["old_s"] else "")
          + f"rows {na:,} vs {nb:,}  identical rows: {'yes' if same else 'no'}", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_duckdb":
        duckdb_child(*argv[1:4])
        return 0
    if argv and argv[0] == "_compare":
        print(json.dumps(compare(argv[1], argv[2], argv[3] == "1")))
        return 0
    if argv and argv[0] == "_generate":
        ensure_trace(argv[1], int(argv[2]), int(argv[3]), argv[4], argv[5] if len(argv) > 5 else "default")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="10M:parquet,10M:jsonl,5M:parquet:few",
                    help="traces, SIZE:FORMAT[:MIX] comma separated (default: issue 10's three)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side per trace, alternating (default 3)")
    ap.add_argument("--json-rounds", type=int, default=1, help="cfgaudit --format json runs per trace (0: none)")
    ap.add_argument("--json-max", type=parse_n, default=5 * 10 ** 6,
                    help="--format json only up to this many events (default 5e6: json is not streamed, and "
                         "3M findings would need tens of GiB)")
    ap.add_argument("--baseline", metavar="SRC", help="also time this cfgaudit source tree (a src/ directory)")
    ap.add_argument("--baseline-rounds", type=int, default=1, help="baseline runs per trace (default 1)")
    ap.add_argument("--big", type=parse_n, default=10 ** 8, help="bounded-memory run size (0: skip)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out"))
    ap.add_argument("--keep", action="store_true", help="keep the findings CSVs")
    ap.add_argument("--write-md", action="store_true", help="rewrite the table in BENCHMARKS.md")
    ap.add_argument("--results", metavar="FILE", help="also write the figures as JSON (for bench/summary.py)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    cases = parse_cases(args.cases)
    regions = os.path.join(args.out, "regions.parquet")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {here!r}); "
                    f"import run; run.ensure_regions({args.out!r})"], check=True)
    print(f"# load average at start: {load_average()} ({os.cpu_count()} cores)", flush=True)
    rows: list[dict] = []
    for c in cases:
        try:
            rows.append(run_case(c, args, regions))
        except ConflictSetsDiffer as e:
            rows.append(e.row)
            if args.results:
                write_results(args.results, args, rows, None, complete=False)
            raise
        if args.results:
            write_results(args.results, args, rows, None, complete=False)
    big = None
    if args.big:
        trace = generate(args.out, args.big, args.seed, "parquet")
        cfg_s, cfg_rss = measure(cfgaudit_cmd(trace, os.devnull), ok=(0, 1))
        ref = max((r for r in rows if r["kind"] == "parquet"), key=lambda r: r["n"], default=None)
        big = dict(n=args.big, cfg_s=cfg_s, cfg_rss=cfg_rss, ref_rss=ref and ref["cfg_rss"], ref_n=ref and ref["n"])
        print(f"{fmt_size(args.big):>5} parquet  cfgaudit {cfg_s:7.2f} s {args.big / cfg_s:>12,.0f} ev/s "
              f"{cfg_rss:7,.0f} MiB (CSV to /dev/null; target <= 600 MiB: {'met' if cfg_rss <= 600 else 'not met'})",
              flush=True)
    print(f"# load average at end: {load_average()}")
    if args.results:
        write_results(args.results, args, rows, big, complete=True)
    text = table_md(rows, big)
    print()
    print(text)
    if args.write_md:
        write_md(os.path.join(ROOT, "BENCHMARKS.md"), text,
                 environment().replace("{seed}", str(args.seed)) + f"Load average at the end: {load_average()}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
