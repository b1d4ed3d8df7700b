#!/usr/bin/env python3
"""Issue 10's targets, judged from the result files of one ``make bench`` run.

    .venv/bin/python bench/summary.py RESULTS_DIR

Reads whichever of these exist in RESULTS_DIR (``make bench`` removes them first, so they come
from one run):

* ``results-run.json``: ``bench/run.py --results`` (target 1: analyze vs DuckDB, identical rows,
  json / csv; target 4: the 100M-event bounded-memory run),
* ``results-startup.json``: ``bench/startup.py --results`` (target 2: start-up),
* ``results-live.json``: ``bench/startup_live.py --results`` (target 3: probes ready; root only),
* ``results-fleet.json``: ``bench/fleet.py --results`` (issue 13's fleet figures: printed as a second
  block, ``issue 13 fleet (this run)``, without targets; rows differing from the serial peer exit 1),

and prints one block, ``issue 10 targets (this run)``, one line per figure with its verdict:
"met (N% under)" or "not met (N% / Nx over)", or "not measured" and why. The targets:

1. ``cfgaudit analyze --format csv`` end to end <= 0.7x DuckDB's time on 10M events from Parquet,
   the same as JSONL, and 5M from Parquet with few findings (medians); identical rows on every
   trace; ``--format json`` <= 1.5x csv where it was run.
2. ``cfgaudit --help``, ``cfgaudit analyze EMPTY`` and ``cfgaudit devices --lspci-dump ONE``
   <= 0.3 s each, judged by the minimum of the runs (on this shared machine the median carries
   other work's load; the minimum is the quiet-machine estimate); both are printed.
3. ``cfgaudit trace`` (warm BPF cache) from its start to its "Tracing ..." line <= 2 s, judged
   by the minimum likewise; the cold cache and bcc's own tool are printed beside it. Without
   root it is not measured, which is not a failure.
4. 100M events from Parquet in <= 600 MiB peak RSS.

Figures from other sizes (e.g. a small ``--cases`` or ``--big`` run) are printed with their
verdict, marked "also", and left out of the count. Exit 0 whether or not the targets are met:
this reports. Exit 1 only when a trace's conflict sets differed ("identical rows: NO"); exit 2
on a usage error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

RUN, STARTUP, LIVE = "results-run.json", "results-startup.json", "results-live.json"
FLEET = "results-fleet.json"  # bench/fleet.py (issue 13): printed as its own block, no targets
FLEET_HEADING = "issue 13 fleet (this run)"
RATIO_MAX = 0.7  # cfgaudit s / DuckDB s
JSON_CSV_MAX = 1.5  # cfgaudit --format json s / csv s
STARTUP_MAX = 0.3  # seconds
READY_MAX = 2.0  # seconds, start -> "Tracing ..." with a warm cache
RSS_MAX = 600.0  # MiB at BIG_EVENTS
BIG_EVENTS = 10 ** 8
# Issue 10's three traces, as bench/run.py names them (case_name()).
ISSUE_CASES = ("10M parquet", "10M jsonl", "5M parquet (few findings)")
STARTUP_COMMANDS = ("cfgaudit --help", "cfgaudit analyze EMPTY", "cfgaudit devices --lspci-dump ONE")
HEADING = "issue 10 targets (this run)"
MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


def save_results(path: str, script: str, data: dict) -> None:
    """Write one script's figures for this summary: ``data`` plus where and when (script, schema,
    time, cores, load average), as JSON through a temporary file renamed into place."""
    import time  # only the writers need it

    doc = {"script": script, "schema": 1, "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "cores": os.cpu_count(), "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()), **data}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    os.replace(path + ".tmp", path)


def verdict(value: float, limit: float) -> tuple[str, str]:
    """(status, text) of ``value`` against an upper ``limit``: "met (12% under)", "not met (8%
    over)" under 1.5x the limit, "not met (2.3x over)" from there."""
    if value <= limit:
        return MET, f"met ({(1 - value / limit) * 100:.0f}% under)"
    over = value / limit
    return NOT_MET, f"not met ({(over - 1) * 100:.0f}% over)" if over < 1.5 else f"not met ({over:.1f}x over)"


@dataclass
class Summary:
    """The block's lines and the count of verdicts (figures marked "also" are not counted)."""

    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {MET: 0, NOT_MET: 0, NOT_MEASURED: 0})
    identical_failed: bool = False

    def add(self, target: int, text: str, status: str | None = None) -> None:
        """One line under ``target``; ``status`` (met / not met / not measured) is counted."""
        if status is not None:
            self.counts[status] += 1
        self.lines.append(f"target {target}  {text}")

    def judge(self, target: int, text: str, value: float, limit: float, limit_text: str, extra: bool = False,
              note: str = "") -> None:
        """A figure with its verdict: ``TEXT, target LIMIT_TEXT: met (...)`` (+ ``note``)."""
        status, words = verdict(value, limit)
        prefix = "also: " if extra else ""
        self.add(target, f"{prefix}{text}, target {limit_text}: {words}{note}", None if extra else status)


def load(path: str) -> tuple[dict | None, str]:
    """(the results in ``path``, "") or (None, why not)."""
    name = os.path.basename(path)
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None, f"no {name}"
    except (OSError, ValueError) as e:
        return None, f"{name} unreadable: {e}"
    if not isinstance(data, dict):
        return None, f"{name} is not a results file"
    return data, ""


def runs_text(n: object) -> str:
    """"3 runs", "1 run" ("? runs" when not known)."""
    return f"{n} run" if n == 1 else f"{n if n is not None else '?'} runs"


def fmt_events(n: int) -> str:
    """10000000 -> "10M" (as bench/run.py names sizes)."""
    for div, suf in ((10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suf}"
    return f"{n:,}"


def analyze_targets(s: Summary, run: dict | None, why: str) -> None:
    """Target 1: the three ratios, identical rows, json / csv."""
    if run is None:
        for name in ISSUE_CASES:
            s.add(1, f"{name}: cfgaudit / DuckDB: {NOT_MEASURED} ({why}: bench/run.py did not run or failed)",
                  NOT_MEASURED)
        s.add(1, f"identical rows: {NOT_MEASURED} ({why})", NOT_MEASURED)
        return
    cases = run.get("cases") or []
    stopped = "" if run.get("complete") else "; bench/run.py stopped before the end"
    rounds = run.get("rounds")
    by_name = {c.get("name"): c for c in cases}
    for name in ISSUE_CASES + tuple(c.get("name") for c in cases if c.get("name") not in ISSUE_CASES):
        c = by_name.get(name)
        if c is None:
            reason = "bench/run.py stopped before it" if stopped else "not in this run's --cases"
            s.add(1, f"{name}: cfgaudit / DuckDB: {NOT_MEASURED} ({reason})", NOT_MEASURED)
            continue
        runs = len(c.get("cfgaudit_runs") or []) or rounds
        s.judge(1, f"{name}: {c['ratio']:.2f}x DuckDB (cfgaudit {c['cfgaudit_s']:.2f} s, DuckDB "
                   f"{c['duckdb_s']:.2f} s; medians, {runs_text(runs)} each)", c["ratio"], RATIO_MAX,
                f"{RATIO_MAX}x",
                extra=name not in ISSUE_CASES)
    differ = [c.get("name", "?") for c in cases if not c.get("identical")]
    if differ:
        s.identical_failed = True
        s.add(1, f"identical rows: NO ({', '.join(differ)})", NOT_MET)
    elif cases:
        s.add(1, f"identical rows: yes ({len(cases)} trace{'s' if len(cases) != 1 else ''}{stopped})", MET)
    else:
        s.add(1, f"identical rows: {NOT_MEASURED} (no trace measured{stopped})", NOT_MEASURED)
    timed = [c for c in cases if c.get("json_csv") is not None]
    for c in timed:
        s.judge(1, f"json/csv, {c['name']}: {c['json_csv']:.2f}x (json {c['json_s']:.2f} s, csv "
                   f"{c['cfgaudit_s']:.2f} s)", c["json_csv"], JSON_CSV_MAX, f"{JSON_CSV_MAX}x",
                extra=c["name"] not in ISSUE_CASES)
    if not timed:
        s.add(1, "json/csv: not run (--json-rounds 0, or every trace over --json-max)")


def startup_targets(s: Summary, startup: dict | None, why: str) -> None:
    """Target 2: the three start-up commands, judged by their minimum."""
    if startup is None:
        for name in STARTUP_COMMANDS:
            s.add(2, f"{name}: {NOT_MEASURED} ({why}: bench/startup.py did not run or failed)", NOT_MEASURED)
        return
    commands = startup.get("commands") or {}
    runs = startup.get("runs")
    for name in STARTUP_COMMANDS:
        c = commands.get(name)
        if c is None:
            s.add(2, f"{name}: {NOT_MEASURED} (not in {STARTUP})", NOT_MEASURED)
            continue
        note = f"; the median is over {STARTUP_MAX:g} s" if c["median"] > STARTUP_MAX >= c["min"] else ""
        s.judge(2, f"{name}: min {c['min']:.3f} s, median {c['median']:.3f} s ({runs_text(runs)})", c["min"],
                STARTUP_MAX, f"{STARTUP_MAX:g} s (judged by the min)", note=note)
    for name, c in commands.items():
        if c.get("kind") == "cfgaudit" and name not in STARTUP_COMMANDS:
            s.add(2, f"also: {name}: min {c['min']:.3f} s, median {c['median']:.3f} s (not a target)")


def live_targets(s: Summary, live: dict | None, why: str, is_root: bool) -> None:
    """Target 3: probes ready with a warm cache (judged by the minimum); the cold cache and the peer."""
    if live is None or live.get("skipped"):
        if (live or {}).get("skipped") == "needs root" or (live is None and not is_root):
            s.add(3, f"probes ready: {NOT_MEASURED}: needs root (sudo make bench, or sudo .venv/bin/python "
                     "bench/startup_live.py)", NOT_MEASURED)
        else:
            reason = live["skipped"] if live else f"{why}: bench/startup_live.py did not run or failed"
            s.add(3, f"probes ready: {NOT_MEASURED} ({reason})", NOT_MEASURED)
        return
    cases = live.get("cases") or {}
    runs = live.get("runs")

    def attached(c: dict) -> str:
        a = c.get("attached")
        return f"; probes attached min {a['min']:.2f} s, median {a['median']:.2f} s" if a else ""

    warm = cases.get("warm") or {}
    t = warm.get("tracing")
    if t is None:
        s.add(3, f"probes ready, warm cache: {NOT_MEASURED} (no warm-cache runs in {LIVE})", NOT_MEASURED)
    else:
        note = f"; the median is over {READY_MAX:g} s" if t["median"] > READY_MAX >= t["min"] else ""
        s.judge(3, f"probes ready, warm cache: \"Tracing ...\" line after min {t['min']:.2f} s, median "
                   f"{t['median']:.2f} s ({runs_text(runs)}{attached(warm)})", t["min"], READY_MAX,
                f"{READY_MAX:g} s (judged by the min)", note=note)
    cold = cases.get("cold") or {}
    if cold.get("tracing"):
        t = cold["tracing"]
        s.add(3, f"also: cold cache (first start on a kernel: bcc compiles): min {t['min']:.2f} s, median "
                 f"{t['median']:.2f} s{attached(cold)} (not judged)")
    peer = cases.get("peer") or {}
    if peer.get("tracing"):
        t = peer["tracing"]
        s.add(3, f"also: peer, {peer.get('name', 'bcc tool')}: min {t['min']:.2f} s, median {t['median']:.2f} s "
                 "(not judged)")
    else:
        s.add(3, "also: peer: not run (bcc's exitsnoop-bpfcc not installed, or --peer '')")


def memory_target(s: Summary, run: dict | None, why: str) -> None:
    """Target 4: peak RSS of the 100M-event run."""
    label = f"{fmt_events(BIG_EVENTS)} events from Parquet"
    if run is None:
        s.add(4, f"{label}: {NOT_MEASURED} ({why}: bench/run.py did not run or failed)", NOT_MEASURED)
        return
    big = run.get("big")
    if big is None:
        if not run.get("big_requested"):
            reason = "--big 0"
        elif not run.get("complete"):
            reason = "bench/run.py stopped before it"
        else:
            reason = "no figure in the results"
        s.add(4, f"{label}: peak RSS {NOT_MEASURED} ({reason})", NOT_MEASURED)
        return
    ref = (f"; {big['ref_peak_rss_mib']:,.0f} MiB at {fmt_events(big['ref_events'])}"
           if big.get("ref_peak_rss_mib") else "")
    text = (f"{fmt_events(big['events'])} events from Parquet: peak RSS {big['peak_rss_mib']:,.0f} MiB "
            f"({big['seconds']:.1f} s, {big['events_per_s']:,.0f} events/s{ref})")
    extra = big["events"] != BIG_EVENTS
    if extra:
        s.add(4, f"{label}: peak RSS {NOT_MEASURED} (this run's --big was {fmt_events(big['events'])})",
              NOT_MEASURED)
    s.judge(4, text, big["peak_rss_mib"], RSS_MAX, f"{RSS_MAX:g} MiB", extra=extra)


def summarize(results_dir: str, is_root: bool | None = None) -> Summary:
    """The block for the result files in ``results_dir``; ``is_root``: whether probes ready could
    have been measured here (default: this process's effective uid is 0)."""
    if is_root is None:
        is_root = os.geteuid() == 0
    s = Summary()
    run, why_run = load(os.path.join(results_dir, RUN))
    startup, why_startup = load(os.path.join(results_dir, STARTUP))
    live, why_live = load(os.path.join(results_dir, LIVE))
    analyze_targets(s, run, why_run)
    startup_targets(s, startup, why_startup)
    live_targets(s, live, why_live, is_root)
    memory_target(s, run, why_run)
    read = [f"{name} ({data.get('written', '?')}, load {data.get('load_average', '?')})"
            for name, data in ((RUN, run), (STARTUP, startup), (LIVE, live)) if data is not None]
    s.lines.append(f"{s.counts[MET]} met, {s.counts[NOT_MET]} not met, {s.counts[NOT_MEASURED]} not measured "
                   "(\"also\" lines not counted)")
    s.lines.append(f"from {results_dir}: {', '.join(read) if read else 'no result files'}")
    return s


def fleet_lines(results_dir: str) -> tuple[list[str], bool]:
    """The "issue 13 fleet" block (bench/fleet.py's figures; issue 13 sets no targets): its lines
    and whether a run's rows differed from the serial peer's. No lines without results-fleet.json."""
    data, why = load(os.path.join(results_dir, FLEET))
    if data is None:
        return ([] if why.startswith("no ") else [f"not measured ({why})"]), False
    lines = [f"{data.get('segments', 0):,} segments x {data.get('events_per_segment', 0):,} events "
             f"({data.get('segments_mib', '?')} MiB of Parquet)"]
    ser = data.get("serial") or {}
    if ser:
        lines.append(f"serial peer (the task in one process, no Dask): {ser['segments']:,} segments in "
                     f"{ser['seconds']:.1f} s = {ser['segments_per_s']:,.1f} segments/s")
    differ = False
    for r in data.get("runs") or []:
        rss = ", ".join(f"{x:,.0f}" for x in r.get("peak_rss_mib_per_worker") or [])
        same = r.get("identical")
        differ |= same is False
        lines.append(f"fleet analyze, {r['workers']} worker(s): {r['seconds']:.1f} s = {r['segments_per_s']:,.1f} "
                     f"segments/s; peak RSS per worker {rss} MiB; rows identical to serial: "
                     f"{'yes' if same else 'NO' if same is False else 'not checked'}")
    rep = data.get("report") or {}
    if rep:
        lines.append(f"fleet report: {rep['findings']:,} findings in {rep['seconds']:.1f} s")
    if not data.get("complete"):
        lines.append("bench/fleet.py stopped before the end")
    lines.append(f"from {FLEET} ({data.get('written', '?')}, load {data.get('load_average', '?')})")
    return lines, differ


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", metavar="RESULTS_DIR", help="where make bench wrote results-*.json")
    args = ap.parse_args(argv)
    s = summarize(args.results_dir)
    print()
    print(HEADING)
    for line in s.lines:
        print(f"  {line}")
    flines, fleet_differ = fleet_lines(args.results_dir)
    if flines:
        print()
        print(FLEET_HEADING)
        for line in flines:
            print(f"  {line}")
    return 1 if s.identical_failed or fleet_differ else 0


if __name__ == "__main__":
    sys.exit(main())
