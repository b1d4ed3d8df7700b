#!/usr/bin/env python3
"""Start-up (issue 10, target 2): wall time of three short commands, each in a fresh process.

    .venv/bin/python bench/startup.py [--runs 10] [--before-src DIR] [--importtime] [--limit 0.3] [--check]

Commands (the installed console script, ``.venv/bin/cfgaudit``; the qemu-6.1 CXL dump):

* ``cfgaudit --help``
* ``cfgaudit analyze EMPTY`` (an empty file: no events, no header; its devices are this
  machine's /sys/bus/pci, as for any trace without a snapshot), and ``cfgaudit analyze
  HEADER`` (a header with an embedded snapshot and no events)
* ``cfgaudit devices --lspci-dump ONE``

next to peers measured in the same run, interleaved run by run so that load from other work falls
on all of them alike: ``python -c pass`` (the interpreter alone), ``python -c "import M"`` for click,
numpy, pyarrow (core, .json, .compute, .parquet) and pandas (what each costs here, its own
dependencies included: pyarrow loads numpy), and bcc's ``exitsnoop-bpfcc --help``
(a Python tool's start-up with its own heavy import) where installed. ``--before-src DIR``: the same
commands run from another tree's src/ (what the console script runs, with PYTHONPATH=DIR; e.g. ``git archive
HEAD src | tar -x -C /tmp/before`` then ``--before-src /tmp/before/src``). Prints a Markdown table:
min and median seconds of ``--runs`` runs each, and whether the median is within ``--limit``.
``--importtime``: also the top entries of ``python -X importtime`` for each command (cumulative
microseconds, this tree). ``--check``: exit 1 when a cfgaudit command's median is over the limit.
``--results FILE``: also write the figures as JSON (per command: min, median and every run, in
seconds; which of them are issue 10's three target commands) for ``bench/summary.py``.
``make bench`` runs it after bench/run.py.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from summary import save_results  # bench/summary.py: the format it reads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(os.path.dirname(sys.executable), "cfgaudit")
DUMP = os.path.join(ROOT, "tests", "data", "dumps", "qemu-6.1", "lspci-xxxx_0000_0d_00.0.txt")
SAMPLE = os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "trace.jsonl")
# What the console script runs (for --before-src, whose tree has no script of its own).
LIKE_THE_SCRIPT = "import sys; from cfgaudit.__main__ import console; sys.exit(console())"
# Issue 10, target 2 names these three (the names of commands()); HEADER is measured beside them.
TARGETS = ("cfgaudit --help", "cfgaudit analyze EMPTY", "cfgaudit devices --lspci-dump ONE")


def commands(tmp: str) -> dict[str, list[str]]:
    """The measured cfgaudit commands (arguments after the program name)."""
    empty = os.path.join(tmp, "empty.jsonl")
    header = os.path.join(tmp, "header-only.jsonl")
    open(empty, "w").close()
    with open(SAMPLE) as src, open(header, "w") as dst:
        dst.write(src.readline())
    return {
        "cfgaudit --help": ["--help"],
        "cfgaudit analyze EMPTY": ["analyze", empty],
        "cfgaudit analyze HEADER (snapshot, no events)": ["analyze", header],
        "cfgaudit devices --lspci-dump ONE": ["devices", "--lspci-dump", DUMP],
    }


def peers() -> dict[str, list[str]]:
    out = {"python -c pass": [sys.executable, "-c", "pass"]}
    for mod in ("click", "numpy", "pyarrow", "pyarrow.json", "pyarrow.compute", "pyarrow.parquet", "pandas"):
        out[f"python -c 'import {mod}'"] = [sys.executable, "-c", f"import {mod}"]
    snoop = shutil.which("exitsnoop-bpfcc") or shutil.which("exitsnoop-bpfcc", path="/usr/sbin")
    if snoop:
        out["exitsnoop-bpfcc --help (bcc)"] = [snoop, "--help"]
    return out


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds from spawn to exit (output discarded; exit codes 0-1 expected)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    dt = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}")
    return dt


def importtime(argv: list[str], top: int) -> list[tuple[int, int, str]]:
    """(cumulative us, self us, module) of the ``top`` costliest imports of ``cfgaudit ARGV``."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "cfgaudit", *argv], capture_output=True,
                       text=True, cwd=ROOT)
    rows = []
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            own, cum, name = (x.strip() for x in line[len("import time:"):].split("|", 2))
            rows.append((int(cum), int(own), name))
    return sorted(rows, reverse=True)[:top]


def write_results(path: str, times: dict[str, list[float]], ours: dict[str, list[str]], limit: float,
                  runs: int) -> None:
    """``--results``: min, median and every run (seconds) per command, as JSON. ``kind``: "cfgaudit"
    (this tree's console script), "before" (``--before-src``) or "peer"; ``target``: one of issue
    10's three commands."""
    commands = {}
    for n, ts in times.items():
        kind = "cfgaudit" if n in ours else "before" if n.endswith(" (before)") else "peer"
        commands[n] = {"kind": kind, "target": n in TARGETS, "min": min(ts), "median": statistics.median(ts),
                       "runs": ts}
    save_results(path, "bench/startup.py", {"complete": True, "runs": runs, "limit_s": limit, "commands": commands})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--limit", type=float, default=0.3, help="target, seconds (median)")
    ap.add_argument("--before-src", metavar="DIR", help="also run the commands from this src/ tree")
    ap.add_argument("--importtime", action="store_true", help="print python -X importtime's top entries")
    ap.add_argument("--check", action="store_true", help="exit 1 when a command's median is over --limit")
    ap.add_argument("--results", metavar="FILE", help="also write the figures as JSON (for bench/summary.py)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cfgaudit-startup-") as tmp:
        ours = commands(tmp)
        cases: dict[str, tuple[list[str], dict[str, str] | None]] = {}
        for name, a in ours.items():
            cases[name] = ([EXE, *a], None)
            if args.before_src:
                env = {**os.environ, "PYTHONPATH": os.path.abspath(args.before_src)}
                cases[f"{name} (before)"] = ([sys.executable, "-c", LIKE_THE_SCRIPT, *a], env)
        for name, cmd in peers().items():
            cases[name] = (cmd, None)
        for cmd, env in cases.values():  # warm the page cache and the .pyc files
            wall(cmd, env)
        times: dict[str, list[float]] = {n: [] for n in cases}
        for _ in range(args.runs):
            for n, (cmd, env) in cases.items():
                times[n].append(wall(cmd, env))

        load = os.getloadavg()[0]
        print(f"Start-up: {args.runs} runs each, interleaved; Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} cores, load average {load:.2f} at the end\n")
        print("| command | min s | median s | within " + f"{args.limit:g} s (median) |")
        print("|---|---:|---:|---|")
        over = []
        for n, ts in times.items():
            med = statistics.median(ts)
            mine = n in ours
            verdict = ("yes" if med <= args.limit else "**no**") if mine else ""
            if mine and med > args.limit:
                over.append(n)
            print(f"| {n} | {min(ts):.3f} | {med:.3f} | {verdict} |")
        if args.results:
            write_results(args.results, times, ours, args.limit, args.runs)
        if args.importtime:
            for name, a in ours.items():
                print(f"\n{name}: top imports (python -X importtime; cumulative / self, ms)\n")
                for cum, own, mod in importtime(a, 12):
                    print(f"    {cum / 1000:8.1f} {own / 1000:8.1f}  {mod}")
    return 1 if over and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
