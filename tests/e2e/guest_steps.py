"""Runs INSIDE the e2e guest (chroot into the host's root): cfgaudit with both live backends,
a scripted sequence of config writes, and the kernel's own answer for each write.

Ground truth comes from tracefs kprobe events of the guest kernel (independent of cfgaudit's
BPF): the return value of resource_is_exclusive() and every add_taint(), plus new dmesg lines
and /proc/sys/kernel/tainted around each write. Results go to OUT/steps.json; the traces to
OUT/kernel.jsonl and OUT/syscalls.jsonl. The host side (compare.py) judges them.

    python guest_steps.py --repo /work/main --cache DIR --out /out
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

TRACEFS = "/sys/kernel/tracing"
GROUP = "cfgaudit_e2e"


def now() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def say(*a: object) -> None:
    print("[e2e %.2f]" % (time.monotonic()), *a, flush=True)


def wr(path: str, text: str, mode: str = "w") -> None:
    # os.open: Python's append mode seeks to the end, which tracefs refuses (EINVAL)
    fd = os.open(path, os.O_WRONLY | (os.O_APPEND if mode == "a" else os.O_TRUNC))
    try:
        for line in text.splitlines(keepends=True) or [text]:
            os.write(fd, line.encode())
    finally:
        os.close(fd)


def setup_oracle() -> None:
    wr(f"{TRACEFS}/kprobe_events",
       f"r:{GROUP}/rie resource_is_exclusive ret=$retval:u8\n"
       f"p:{GROUP}/taint add_taint flag=%di:u32\n", "a")
    wr(f"{TRACEFS}/events/{GROUP}/enable", "1")
    wr(f"{TRACEFS}/tracing_on", "1")


def oracle_lines() -> list[str]:
    with open(f"{TRACEFS}/trace") as fh:
        lines = [l for l in fh if not l.startswith("#") and (": rie:" in l or ": taint:" in l)]
    wr(f"{TRACEFS}/trace", "")
    return lines


def dmesg() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()


def tainted() -> int:
    with open("/proc/sys/kernel/tainted") as fh:
        return int(fh.read())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", default="/out")
    opt = ap.parse_args()
    bdf = os.environ.get("CXL_BDF") or ""
    if not bdf:
        say("no CXL type-3 device")
        return 2
    bus, devfn = bdf.split(":")[1], bdf.split(":")[2]
    sysfs = f"/sys/bus/pci/devices/{bdf}/config"
    procfs = f"/proc/bus/pci/{bus}/{devfn}"
    poke = os.path.join(opt.cache, "cfgpoke")
    cfgaudit = os.path.join(opt.repo, ".venv", "bin", "cfgaudit")
    setup_oracle()
    oracle_lines()

    # both backends at once; the kernel program compiles for 30-45 s under TCG
    procs = {}
    for be in ("kernel", "syscalls"):
        log = open(os.path.join(opt.out, f"{be}.log"), "w")
        procs[be] = (subprocess.Popen([cfgaudit, "trace", "--backend", be, "--bdf", bdf, "-n", "cfgpoke",
                                       "-o", os.path.join(opt.out, f"{be}.jsonl")],
                                      stdout=log, stderr=subprocess.STDOUT), log)
    t = time.monotonic()
    ready: set[str] = set()
    while len(ready) < 2 and time.monotonic() - t < 300:
        for be, (p, _) in procs.items():
            with open(os.path.join(opt.out, f"{be}.log")) as fh:
                if "Tracing config-space" in fh.read():
                    ready.add(be)
            if p.poll() is not None and be not in ready:
                say(f"cfgaudit trace --backend {be} exited with {p.returncode}")
                return 3
        time.sleep(0.5)
    say(f"tracers ready after {time.monotonic() - t:.1f} s: {sorted(ready)}")
    if len(ready) < 2:
        return 3
    time.sleep(1)

    steps = []

    def step(name: str, phase: str, path: str, off: int, length: int, data: str | None = None) -> None:
        oracle_lines()
        d0, tv0 = len(dmesg()), tainted()
        t0 = now()
        r = subprocess.run([poke, sysfs if path == "sysfs" else procfs, hex(off), str(length)] + ([data] if data else []),
                           capture_output=True, text=True)
        t1 = now()
        time.sleep(0.05)
        lines = oracle_lines()
        new = dmesg()[d0:]
        rie = [int(l.split("ret=")[1].split()[0], 0) for l in lines if ": rie:" in l and "cfgpoke" in l]
        taints = [int(l.split("flag=")[1].split()[0], 0) for l in lines if ": taint:" in l and "cfgpoke" in l]
        s = {"name": name, "phase": phase, "path": path, "offset": off, "length": length, "t0": t0, "t1": t1,
             "poke_rc": r.returncode, "poke_out": (r.stdout + r.stderr).strip(), "rie": rie, "add_taint": taints,
             "tainted_before": tv0, "tainted_after": tainted(),
             "dmesg": [l for l in new if "kernel-exclusive" in l]}
        steps.append(s)
        say(name, json.dumps({k: s[k] for k in ("poke_out", "rie", "add_taint", "dmesg")}))

    # phase A: no claim (Debian 6.1's cxl_pci claims nothing)
    step("A1 sysfs DOE ctrl, unclaimed", "A", "sysfs", 0x198, 4)
    step("A2 procfs DOE ctrl, unclaimed", "A", "procfs", 0x198, 4)
    r = subprocess.run(["insmod", os.path.join(opt.cache, "doe_excl.ko")], capture_output=True, text=True)
    say("insmod doe_excl:", r.returncode, r.stderr.strip())
    marks = {"claimed_ns": now()}
    step("B1 sysfs 0x3c outside", "B", "sysfs", 0x3C, 1)
    step("B2 sysfs DOE ctrl inside", "B", "sysfs", 0x198, 4)
    step("B3 sysfs DOE ctrl again (logged once)", "B", "sysfs", 0x198, 4)
    step("B4 sysfs 1 byte just before", "B", "sysfs", 0x18F, 1)
    step("B5 sysfs 1 byte just after", "B", "sysfs", 0x1A8, 1)
    step("B6 sysfs 4 bytes straddling the start", "B", "sysfs", 0x18E, 4)
    step("B7 sysfs last byte", "B", "sysfs", 0x1A7, 1)
    step("B8 sysfs 4 bytes straddling the end", "B", "sysfs", 0x1A6, 4)
    step("B9 sysfs DOE header", "B", "sysfs", 0x190, 4)
    step("B10 procfs 0x3c outside", "B", "procfs", 0x3C, 1)
    step("B11 procfs DOE ctrl inside", "B", "procfs", 0x198, 4)
    step("B12 procfs DOE ctrl again", "B", "procfs", 0x198, 4)
    step("B13 sysfs past the end (fails, EFBIG)", "B", "sysfs", 0x1000, 4, "00000000")
    step("B14 procfs straddling the end (short)", "B", "procfs", 0xFFE, 4, "00000000")
    r = subprocess.run(["rmmod", "doe_excl"], capture_output=True, text=True)
    say("rmmod doe_excl:", r.returncode, r.stderr.strip())
    marks["released_ns"] = now()
    step("C1 sysfs DOE ctrl, region released", "C", "sysfs", 0x198, 4)
    step("C2 procfs DOE ctrl, region released", "C", "procfs", 0x198, 4)

    time.sleep(1)
    for be, (p, log) in procs.items():
        p.send_signal(signal.SIGTERM)
    for be, (p, log) in procs.items():
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()
        say(f"cfgaudit trace --backend {be} exit {p.returncode}")
    with open("/proc/cmdline") as fh:
        cmdline = fh.read().strip()
    with open("/proc/version") as fh:
        version = fh.read().strip()
    with open(os.path.join(opt.out, "steps.json"), "w") as fh:
        json.dump({"bdf": bdf, "cmdline": cmdline, "proc_version": version, "marks": marks, "steps": steps,
                   "tainted_end": tainted()}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
