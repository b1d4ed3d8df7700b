#!/usr/bin/env python3
"""Probes ready (issue 10, target 3): how long `cfgaudit trace` takes to attach its probes. Root.

    sudo .venv/bin/python bench/startup_live.py [--runs 5] [--before-src DIR] [--peer exitsnoop-bpfcc]

For each case, RUNS runs of ``cfgaudit trace`` (syscall backend, this machine's /sys/bus/pci;
nothing is written anywhere; the cases take turns, run by run), each timed from the process start to

* attached: every tracepoint program attached (the process holds one perf-event fd per
  tracepoint; /proc/PID/fd is polled every 2 ms, so figures are good to a few ms), and
* tracing: the line "Tracing config-space writes ... Ctrl-C to end." on stdout,

then Ctrl-C, timed to the exit (detaching and closing: "exit"). Cases: ``cold`` (an empty
BPF cache: bcc compiles, the entry is saved), ``warm`` (the entry loaded from the cache), and
with ``--before-src DIR`` (the src/ of another checkout, e.g. ``git archive HEAD~1 src | tar -x
-C /tmp/before``) the same command run from that tree. ``--peer``: bcc's own tool, from its start
to its header line (exitsnoop: one tracepoint, compiled at each start), for scale.

Then the steps, one run each in a fresh interpreter: imports, compile, load and attach, ring
buffer, close, done by bcc directly from each tree's program text and constants (the "before"
tree and this one with the cache off), and by a ``SyscallSession`` of this tree on a cache miss
and a hit (its ``timings``). Prints Markdown tables (min / median for the runs).

``--results FILE``: also write the figures as JSON for ``bench/summary.py``: per case (``warm``,
``cold``, ``cache_off``, ``before``, ``peer``) the min, median and every run of "attached",
"tracing" and "exit", in seconds, and the steps. Not root: the file says ``"skipped": "needs
root"`` (and the script exits as before).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

from summary import save_results  # bench/summary.py: the format it reads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACING = "Tracing config-space writes"
PROGRAM = os.path.join("cfgaudit", "bpf", "cfgaudit_syscalls.bpf.c")

# What both child scripts time first: the command's imports, then what `trace` imports next.
IMPORTS = r'''
import json, os, sys, time
t0 = time.perf_counter()
import cfgaudit.cli  # what the command imports before it loads anything
t_imp = time.perf_counter() - t0
t = time.perf_counter()
import cfgaudit.live  # what `trace` imports next (LiveRun: analysis, reports)
t_live = time.perf_counter() - t
'''

STEPS = IMPORTS + r'''
from cfgaudit.probes.session import LiveOptions
from cfgaudit.probes.syscalls import SyscallSession
t = time.perf_counter()
from cfgaudit.probes.bccutil import import_bcc
import_bcc()
t_bcc = time.perf_counter() - t
t = time.perf_counter()
s = SyscallSession(LiveOptions(bpf_cache=sys.argv[1]))
t_open = time.perf_counter() - t
t = time.perf_counter()
s.close()
print(json.dumps({"imports": t_imp, "import_live": t_live, "import_bcc": t_bcc, "open": t_open,
                  "close": time.perf_counter() - t, **s.timings}))
'''

# The same steps done with bcc directly, for any tree (its own program text and constants): compile,
# load + attach (bcc's autoload), ring buffer, cleanup.
BCC_STEPS = IMPORTS + r'''
from cfgaudit.probes.bccutil import BPF_DIR, define_flags, import_bcc, program_text
from cfgaudit.probes.session import LiveOptions
from cfgaudit.probes.syscalls import SyscallSession
t = time.perf_counter()
bcc = import_bcc()
t_bcc = time.perf_counter() - t
s = object.__new__(SyscallSession)
s.opts = LiveOptions()
cflags = [f"-I{BPF_DIR}", *define_flags(s.constants()), "-Wno-macro-redefined"]
class Compiled(bcc.BPF):
    def _trace_autoload(self):
        pass
t = time.perf_counter()
b = Compiled(text=program_text(SyscallSession.program).encode(), cflags=cflags)
t_compile = time.perf_counter() - t
t = time.perf_counter()
bcc.BPF._trace_autoload(b)
t_load = time.perf_counter() - t
t = time.perf_counter()
cb = lambda ctx, data, size: 0
b[b"events"].open_ring_buffer(cb)
t_ring = time.perf_counter() - t
t = time.perf_counter()
b.cleanup()
print(json.dumps({"imports": t_imp, "import_live": t_live, "import_bcc": t_bcc, "compile": t_compile,
                  "load_attach": t_load, "ring_buffer": t_ring, "close": time.perf_counter() - t}))
'''


def perf_fds(pid: int) -> int:
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]":
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def one_run(cmd: list[str], env: dict[str, str], ready: str, want_fds: int) -> dict[str, float]:
    """Start ``cmd``; seconds to ``want_fds`` perf-event fds (0: not watched) and to a stdout line
    starting with ``ready``; then SIGINT and seconds to its exit."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[str, float] = {}
    done = threading.Event()

    def reader() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith(ready) and "tracing" not in seen:
                seen["tracing"] = time.perf_counter() - t0
                done.set()
        done.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    while not done.is_set():
        if want_fds and "attached" not in seen and perf_fds(p.pid) >= want_fds:
            seen["attached"] = time.perf_counter() - t0
        time.sleep(0.002)
    if want_fds and "attached" not in seen and "tracing" in seen and perf_fds(p.pid) >= want_fds:
        seen["attached"] = seen["tracing"]  # attached between the last look and the line: at most that
    t1 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)
    seen["exit"] = time.perf_counter() - t1
    th.join(5)
    if "tracing" not in seen:
        raise SystemExit(f"{' '.join(cmd)}: no line starting {ready!r}; stderr: {p.stderr.read() if p.stderr else ''}")
    return seen


def summary(runs: list[dict[str, float]], key: str) -> str:
    xs = [r[key] for r in runs if key in r]
    return f"{min(xs):.2f} / {statistics.median(xs):.2f}" if xs else "-"


def tracepoints(src: str) -> int:
    with open(os.path.join(src, PROGRAM)) as fh:
        return len(set(re.findall(r"TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", fh.read())))


def stats(runs: list[dict[str, float]]) -> dict[str, dict[str, float | list[float]]]:
    """Per measure ("attached", "tracing", "exit") of a case's runs: min, median and every run."""
    out: dict[str, dict[str, float | list[float]]] = {}
    for key in ("attached", "tracing", "exit"):
        xs = [r[key] for r in runs if key in r]
        if xs:
            out[key] = {"min": min(xs), "median": statistics.median(xs), "runs": xs}
    return out


def write_results(path: str, data: dict) -> None:
    """``--results``: ``data`` (and the kernel release) for bench/summary.py."""
    save_results(path, "bench/startup_live.py", {"kernel": os.uname().release, **data})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="start -> probes attached, cold and warm BPF cache")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before-src", help="src/ of another checkout, timed the same way")
    ap.add_argument("--peer", default="exitsnoop-bpfcc", help="bcc tool timed to its header line ('' to skip)")
    ap.add_argument("--results", metavar="FILE", help="also write the figures as JSON (for bench/summary.py)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        if args.results:
            write_results(args.results, {"complete": False, "skipped": "needs root"})
        raise SystemExit("needs root (it loads BPF programs)")
    py = sys.executable
    src = os.path.join(ROOT, "src")
    tmp = tempfile.mkdtemp(prefix="cfgaudit-startup-")
    try:
        def env_for(tree: str, cache: str) -> dict[str, str]:
            return {**os.environ, "PYTHONPATH": tree, "CFGAUDIT_BPF_CACHE": cache}

        cmd = [py, "-m", "cfgaudit", "trace"]
        n = tracepoints(src)
        warm_dir = os.path.join(tmp, "warm")
        one_run(cmd, env_for(src, warm_dir), TRACING, n)  # fill it
        # name -> run(i); the cases take turns, so a busy spell on the machine hits them alike
        cases: list[tuple[str, Callable[[int], dict[str, float]]]] = []
        case_keys: dict[str, str] = {}  # case name -> its key in --results
        if args.before_src:
            nb, before = tracepoints(args.before_src), args.before_src
            case_keys[f"before ({before})"] = "before"
            cases.append((f"before ({before})", lambda i: one_run(cmd, env_for(before, "off"), TRACING, nb)))
        cases += [
            ("cold cache (bcc compiles, entry saved)",
             lambda i: one_run(cmd, env_for(src, os.path.join(tmp, f"cold{i}")), TRACING, n)),
            ("warm cache (entry loaded)", lambda i: one_run(cmd, env_for(src, warm_dir), TRACING, n)),
            ("cache off", lambda i: one_run(cmd, env_for(src, "off"), TRACING, n)),
        ]
        case_keys.update({"cold cache (bcc compiles, entry saved)": "cold", "warm cache (entry loaded)": "warm",
                          "cache off": "cache_off", f"{args.peer} (bcc tool) to its header": "peer"})
        if args.peer and shutil.which(args.peer):
            peer_env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its header reaches the pipe at once
            cases.append((f"{args.peer} (bcc tool) to its header",
                          lambda i: one_run([args.peer], peer_env, "PCOMM", 0)))
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in cases}
        for i in range(args.runs):
            for name, run in cases:
                results[name].append(run(i))
        rows = list(results.items())
        steps: dict[str, dict[str, float]] = {}

        def child(code: str, tree: str, *argv: str) -> dict[str, float]:
            out = subprocess.run([py, "-c", code, *argv], env=env_for(tree, "off"), check=True, capture_output=True,
                                 text=True).stdout
            return json.loads(out.strip().splitlines()[-1])

        if args.before_src:
            steps["before: bcc"] = child(BCC_STEPS, args.before_src)
        steps["bcc (cache off)"] = child(BCC_STEPS, src)
        steps["cache miss"] = child(STEPS, src, os.path.join(tmp, "steps"))
        steps["cache hit"] = child(STEPS, src, os.path.join(tmp, "steps"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"`cfgaudit trace` start-up, {args.runs} runs each, seconds min / median "
          f"(load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, Linux {os.uname().release})\n")
    print("| case | start -> probes attached | start -> \"Tracing ...\" | Ctrl-C -> exit |")
    print("|---|---|---|---|")
    for name, runs in rows:
        print(f"| {name} | {summary(runs, 'attached')} | {summary(runs, 'tracing')} | {summary(runs, 'exit')} |")
    print("\nSteps, one run each, seconds (bcc: the program compiled, loaded and attached by bcc directly; "
          "cache miss / hit: a SyscallSession of this tree and its timings):\n")
    keys = ["imports", "import_live", "import_bcc", "compile", "save", "load_attach", "cached_load", "ring_buffer",
            "open", "close"]
    cases = list(steps)
    print("| step | " + " | ".join(cases) + " |")
    print("|---|" + "---|" * len(cases))
    for k in keys:
        cells = [f"{steps[c][k]:.3f}" if isinstance(steps[c].get(k), float) else "-" for c in cases]
        print(f"| {k} | " + " | ".join(cells) + " |")
    if args.results:
        write_results(args.results, {
            "complete": True, "runs": args.runs, "tracepoints": n, "before_src": args.before_src,
            "cases": {case_keys[name]: {"name": name, **stats(runs)} for name, runs in rows},
            "steps": steps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
