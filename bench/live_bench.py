#!/usr/bin/env python3
"""Live-tracing benchmarks (root): capture completeness under a write burst, and the cost of
the syscall backend to an unrelated write-heavy workload.

    sudo .venv/bin/python bench/live_bench.py [--burst 1000000] [--dd 2000000] [--rounds 3]

1. Burst: ``cfgaudit trace --sysfs-path FAKE [-o FILE]`` runs while ``dd bs=1`` writes BURST
   bytes, one write() each, into a fake config file (a regular file: never the real config
   space). Completeness = events captured / writes made, with the tracer's exact lost count.
2. Overhead: ``dd if=/dev/zero of=/tmp/x bs=1 count=DD`` (DD write()s and DD read()s on files
   cfgaudit does not follow) timed with no tracer, with an empty BPF program attached to the
   same tracepoints, and with ``cfgaudit trace`` running. Median wall time of ROUNDS runs each,
   interleaved.
Writes the table to bench-out/live.md and prints it.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
EXE = os.path.join(os.path.dirname(sys.executable), "cfgaudit")
BPF_C = os.path.join(ROOT, "src", "cfgaudit", "bpf", "cfgaudit_syscalls.bpf.c")

EMPTY_HOLDER = r'''
import re, signal, sys, time
from cfgaudit.probes.bccutil import import_bcc
src = open(sys.argv[1]).read()
tps = re.findall(r"TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", src)
text = "#include <linux/fs.h>\n" + "\n".join(f"TRACEPOINT_PROBE({c}, {e}) {{ return 0; }}"
                                           for c, e in dict.fromkeys(tps))
b = import_bcc().BPF(text=text)
print(f"attached {len(set(tps))} empty programs", flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(1)
'''


def fake_tree(root: str) -> str:
    """A fake sysfs tree (regular files) with the QEMU CXL device: the tests' own (tests/support)."""
    from support import make_fake_tree

    return make_fake_tree(root)["sysfs"]


def start(cmd: list[str], ready: str) -> subprocess.Popen:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    while True:
        line = p.stdout.readline()
        if ready in line:
            return p
        if not line and p.poll() is not None or time.monotonic() - t0 > 120:
            raise SystemExit(f"{cmd[0]} did not start: {line}")


def stop(p: subprocess.Popen) -> str:
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=600)
    return out


def dd(of: str, count: int, extra: tuple[str, ...] = ()) -> float:
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={of}", "bs=1", f"count={count}", *extra],
                   check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def burst(tree: str, n: int, output: str | None) -> dict:
    cfg = os.path.join(tree, "devices", "0000:0d:00.0", "config")
    cmd = [EXE, "trace", "--sysfs-path", tree] + (["-o", output] if output else [])
    p = start(cmd, "Tracing config-space writes")
    secs = dd(cfg, n, ("conv=notrunc",))
    time.sleep(0.5)
    out = stop(p)
    m = re.search(r"^(\d+) config accesses \((\d+) writes", out, re.M)
    lost = re.search(r"Possibly lost (\d+) events", out)
    writes = int(m.group(2)) if m else -1
    return {"writes": writes, "lost": int(lost.group(1)) if lost else 0, "secs": secs, "output": output or "-"}


def overhead(n: int, rounds: int) -> dict:
    tmp = tempfile.mkdtemp()
    target = os.path.join(tmp, "x.bin")
    times: dict[str, list[float]] = {"none": [], "empty BPF": [], "cfgaudit": []}
    tree = fake_tree(os.path.join(tmp, "sys"))
    for _ in range(rounds):
        times["none"].append(dd(target, n))
        holder = os.path.join(tmp, "empty.py")
        with open(holder, "w") as fh:
            fh.write(EMPTY_HOLDER)
        p = start([sys.executable, holder, BPF_C], "attached")
        times["empty BPF"].append(dd(target, n))
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        p = start([EXE, "trace", "--sysfs-path", tree], "Tracing config-space writes")
        times["cfgaudit"].append(dd(target, n))
        stop(p)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--burst", type=int, default=1_000_000)
    ap.add_argument("--dd", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("live benchmarks need root")
    tmp = tempfile.mkdtemp()
    tree = fake_tree(os.path.join(tmp, "sys"))
    lines = ["| burst (writes) | output | captured | lost | captured + lost | writer time |",
             "|---|---|---|---|---|---|"]
    for output in (None, os.path.join(tmp, "b.jsonl"), os.path.join(tmp, "b.parquet")):
        r = burst(tree, a.burst, output)
        share = 100 * r["writes"] / a.burst
        lines.append(f"| {a.burst:,} | {os.path.basename(r['output'])} | {r['writes']:,} ({share:.1f}%) "
                     f"| {r['lost']:,} | {r['writes'] + r['lost']:,} | {r['secs']:.2f} s |")
        print(lines[-1], flush=True)
    o = overhead(a.dd, a.rounds)
    lines += ["", f"dd bs=1 count={a.dd:,} to an unrelated file (median of {a.rounds}):", "",
              "| tracer | time | vs none | vs empty BPF |", "|---|---|---|---|"]
    for k, v in o.items():
        vs_none, vs_empty = 100 * (v / o["none"] - 1), 100 * (v / o["empty BPF"] - 1)
        lines.append(f"| {k} | {v:.3f} s | {vs_none:+.1f}% | {vs_empty:+.1f}% |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(ROOT, "bench-out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-out", "live.md"), "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
