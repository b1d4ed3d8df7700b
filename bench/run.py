#!/usr/bin/env python3
"""cfgaudit analyze throughput vs. DuckDB's SQL range join (``make bench``).

For each size (default 1M and 10M events) and format (Parquet; JSONL too up to 10M):

* cfgaudit, end to end, in a fresh subprocess:
  ``cfgaudit analyze TRACE --snapshot S --kernel 6.2 --format csv -o OUT`` (read, analyze, write CSV);
* DuckDB, end to end, in a fresh subprocess: read the same trace (``read_parquet`` /
  ``read_ndjson``) and the same regions (cfgaudit's registry for the snapshot, kind != 'user',
  dumped once to Parquet), range join, ``COPY ... TO`` CSV;
* both result sets compared on (event_index [Parquet only], ts_ns, bdf, offset, size,
  region_start, region_length, owner, kind) as multisets: "identical rows" must be yes, or the
  run fails.

Wall time and peak RSS are the child's own (``os.wait4``; RSS includes interpreter start-up and
imports). Then one cfgaudit run over ``--big`` events (default 1e8) from Parquet with the CSV
going to /dev/null, to show memory stays bounded.

Traces are generated deterministically (numpy, seeded) and cached in ``--out`` keyed by
size and seed; generation is not measured.

    .venv/bin/python bench/run.py [--sizes 1e6,1e7] [--big 1e8|0] [--seed 1] [--out bench-out] [--write-md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

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


def _chunk(rng, n, ts0):
    """One chunk of events as an Arrow table in the cfgaudit event schema; returns (table, last ts)."""
    import numpy as np
    import pyarrow as pa

    from cfgaudit.events import arrow_schema

    dev = rng.choice(len(BDFS), size=n, p=BDF_P)
    # uniform noise: size 1/2/4, offset aligned to the size, anywhere in 0..0xfff
    size = rng.choice(np.array([1, 2, 4]), size=n, p=[0.15, 0.25, 0.60])
    offset = (rng.integers(0, 0x1000, size=n) // size) * size
    hot = rng.random(n) < HOT_P
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
    return pa.table(cols, schema=arrow_schema()), int(ts[-1])


def generate_parquet(path: str, n: int, seed: int) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    from cfgaudit.events import arrow_schema

    tmp = path + ".tmp"
    ts = 1_000_000_000
    with pq.ParquetWriter(tmp, arrow_schema(), compression="snappy") as w:
        done, k = 0, 0
        while done < n:
            m = min(CHUNK, n - done)
            t, ts = _chunk(np.random.default_rng([seed, k]), m, ts)
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


def trace_path(out: str, n: int, seed: int, kind: str) -> str:
    return os.path.join(out, f"trace-{n}-s{seed}.{kind}")


def ensure_trace(out: str, n: int, seed: int, kind: str) -> str:
    path = trace_path(out, n, seed, kind)
    if os.path.exists(path):
        return path
    t0 = time.monotonic()
    if kind == "parquet":
        generate_parquet(path, n, seed)
    else:
        generate_jsonl(ensure_trace(out, n, seed, "parquet"), path)
    print(f"# generated {path} ({os.path.getsize(path) / 1e9:.2f} GB, {time.monotonic() - t0:.0f} s)", flush=True)
    return path


def generate(out: str, n: int, seed: int, kind: str) -> str:
    """:func:`ensure_trace` in a child process (this one stays small: see :func:`measure`)."""
    subprocess.run([sys.executable, os.path.abspath(__file__), "_generate", out, str(n), str(seed), kind], check=True)
    return trace_path(out, n, seed, kind)


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
    pq.write_table(t.cast(pa.schema([(c, pa.int64() if c in ("start", "length") else pa.string()) for c in cols])), path)
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


def cfgaudit_cmd(trace: str, out_csv: str) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "cfgaudit")
    return [exe, "analyze", trace, "--snapshot", SNAPSHOT, "--kernel", KERNEL, "--format", "csv", "-o", out_csv]


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


def table_md(rows: list[dict], big: dict | None) -> str:
    head = ("| events | format | cfgaudit s | cfgaudit events/s | cfgaudit peak RSS | DuckDB s | DuckDB peak RSS | "
            "ratio (DuckDB s / cfgaudit s) | findings | identical rows |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
    lines = []
    for r in rows:
        lines.append(f"| {fmt_size(r['n'])} | {r['format']} | {r['cfg_s']:.2f} | {r['n'] / r['cfg_s']:,.0f} | "
                     f"{r['cfg_rss']:,.0f} MiB | {r['duck_s']:.2f} | {r['duck_rss']:,.0f} MiB | {r['duck_s'] / r['cfg_s']:.2f} | "
                     f"{r['rows']:,} | {'yes' if r['identical'] else 'NO'} |")
    out = head + "\n".join(lines) + "\n"
    if big:
        out += (f"\nBounded memory: {fmt_size(big['n'])} events from Parquet, CSV to /dev/null: "
                f"{big['cfg_s']:.1f} s ({big['n'] / big['cfg_s']:,.0f} events/s), peak RSS {big['cfg_rss']:,.0f} MiB"
                + (f" (vs {big['ref_rss']:,.0f} MiB at {fmt_size(big['ref_n'])})" if big.get("ref_rss") else "") + ".\n")
    return out


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
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}, pandas {pandas.__version__}, "
            f"numpy {numpy.__version__}, pyarrow {pyarrow.__version__}, DuckDB {duckdb.__version__} "
            f"(default threads). Seed {{seed}}.\n")


def parse_n(s: str) -> int:
    return int(float(s))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_duckdb":
        duckdb_child(*argv[1:4])
        return 0
    if argv and argv[0] == "_compare":
        print(json.dumps(compare(argv[1], argv[2], argv[3] == "1")))
        return 0
    if argv and argv[0] == "_generate":
        ensure_trace(argv[1], int(argv[2]), int(argv[3]), argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e6,1e7", help="event counts, comma separated (default 1e6,1e7)")
    ap.add_argument("--jsonl-max", type=parse_n, default=10 ** 7, help="JSONL only up to this many events")
    ap.add_argument("--big", type=parse_n, default=10 ** 8, help="bounded-memory run size (0: skip)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out"))
    ap.add_argument("--keep", action="store_true", help="keep the findings CSVs")
    ap.add_argument("--write-md", action="store_true", help="rewrite the table in BENCHMARKS.md")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    sizes = [parse_n(s) for s in args.sizes.split(",") if s]
    regions = os.path.join(args.out, "regions.parquet")
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                    f"import run; run.ensure_regions({args.out!r})"], check=True)
    rows: list[dict] = []
    for n in sizes:
        for kind in ("parquet", "jsonl"):
            if kind == "jsonl" and n > args.jsonl_max:
                continue
            trace = generate(args.out, n, args.seed, kind)
            drop_cache_hint(trace)
            cfg_csv = os.path.join(args.out, f"cfgaudit-{n}-{kind}.csv")
            duck_csv = os.path.join(args.out, f"duckdb-{n}-{kind}.csv")
            cfg_s, cfg_rss = measure(cfgaudit_cmd(trace, cfg_csv), ok=(0, 1))
            duck_s, duck_rss = measure([sys.executable, os.path.abspath(__file__), "_duckdb", trace, regions, duck_csv])
            same, na, nb = json.loads(subprocess.run(
                [sys.executable, os.path.abspath(__file__), "_compare", cfg_csv, duck_csv, str(int(kind == "parquet"))],
                check=True, capture_output=True, text=True).stdout)
            r = dict(n=n, format=kind, cfg_s=cfg_s, cfg_rss=cfg_rss, duck_s=duck_s, duck_rss=duck_rss, rows=na,
                     identical=same)
            rows.append(r)
            print(f"{fmt_size(n):>5} {kind:8} cfgaudit {cfg_s:7.2f} s {n / cfg_s:>12,.0f} ev/s {cfg_rss:7,.0f} MiB | "
                  f"DuckDB {duck_s:7.2f} s {duck_rss:7,.0f} MiB | ratio {duck_s / cfg_s:5.2f} | rows {na:,} vs {nb:,} "
                  f"identical: {'yes' if same else 'NO'}", flush=True)
            if not same:
                sys.exit(f"conflict sets differ: {cfg_csv} vs {duck_csv}")
            if not args.keep:
                os.remove(cfg_csv)
                os.remove(duck_csv)
    big = None
    if args.big:
        trace = generate(args.out, args.big, args.seed, "parquet")
        cfg_s, cfg_rss = measure(cfgaudit_cmd(trace, os.devnull), ok=(0, 1))
        ref = max((r for r in rows if r["format"] == "parquet"), key=lambda r: r["n"], default=None)
        big = dict(n=args.big, cfg_s=cfg_s, cfg_rss=cfg_rss, ref_rss=ref and ref["cfg_rss"], ref_n=ref and ref["n"])
        print(f"{fmt_size(args.big):>5} parquet  cfgaudit {cfg_s:7.2f} s {args.big / cfg_s:>12,.0f} ev/s "
              f"{cfg_rss:7,.0f} MiB (CSV to /dev/null)", flush=True)
    text = table_md(rows, big)
    print()
    print(text)
    if args.write_md:
        write_md(os.path.join(ROOT, "BENCHMARKS.md"), text, environment().replace("{seed}", str(args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
