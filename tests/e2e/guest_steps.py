"""Runs INSIDE the e2e guest (chroot into the host's root): cfgaudit with both live backends,
a scripted sequence of config writes, and the kernel's own answer for each write.

Ground truth comes from tracefs kprobe events of the guest kernel (independent of cfgaudit's
BPF; trace_clock "mono", so its times are CLOCK_MONOTONIC like cfgaudit's): the return value of
resource_is_exclusive() and every add_taint(), each pci_user_write_config_{byte,word,dword}()
(when a user write reached the device), the entry and return of doe_statemachine_work() (every
DOE exchange the kernel made), plus new dmesg lines (doe_loop's result per exchange) and
/proc/sys/kernel/tainted around each write. Results go to OUT/steps.json; the traces to
OUT/kernel.jsonl and OUT/syscalls.jsonl. The host side (compare.py) judges them.

Phases: A (no claim), B (doe_excl's exclusive claim), C (claim released); on strict boots also
D (the kernel's own DOE exchanges made by doe_loop.ko, user writes into the mailbox while one is
in flight and while none is), E (a config write submitted through io_uring) and F (a config write
through a vfio-pci device's config region).

    python guest_steps.py --repo /work/main --cache DIR --kmods DIR --out /out
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

TRACEFS = "/sys/kernel/tracing"
GROUP = "cfgaudit_e2e"
# doe_excl.ko's claim, as a claims file (the guard's policy and compare.py's phases B, G, H)
CLAIMS = """[[claim]]
kind = "exclusive"
owner = "doe_excl"
bdf = "{bdf}"
offset = 0x190
length = 0x18
note = "tests/e2e/src/doe_excl.c: pci_request_config_region_exclusive(pdev, 0x190, 0x18) as v6.2/v6.3 cxl_pci"
"""


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


# "comm-tid (tgid) [cpu] flags ts: event: fields" (options/record-tgid on)
ORACLE_LINE = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>[\d-]+)\)\s+)?\[\d+\]\s+"
                         r"(?:\S+\s+)?(?P<ts>\d+\.\d+): (?P<ev>\w+): (?P<rest>.*)$")
ORACLE: list[dict] = []  # every oracle event read so far: {ev, comm, pid, ts_ns, rest}


def setup_oracle() -> None:
    wr(f"{TRACEFS}/trace_clock", "mono")
    wr(f"{TRACEFS}/options/record-tgid", "1")
    wr(f"{TRACEFS}/buffer_size_kb", "8192")
    wr(f"{TRACEFS}/kprobe_events",
       f"r:{GROUP}/rie resource_is_exclusive ret=$retval:u8\n"
       f"p:{GROUP}/taint add_taint flag=%di:u32\n"
       f"p:{GROUP}/uwb pci_user_write_config_byte where=%si:s32\n"
       f"p:{GROUP}/uww pci_user_write_config_word where=%si:s32\n"
       f"p:{GROUP}/uwd pci_user_write_config_dword where=%si:s32\n", "a")
    try:  # the kernel's own DOE exchanges (CONFIG_PCI_DOE): one entry and one return each
        wr(f"{TRACEFS}/kprobe_events",
           f"p:{GROUP}/doew doe_statemachine_work\nr:{GROUP}/doer doe_statemachine_work\n", "a")
    except OSError as err:
        say("no kprobe on doe_statemachine_work:", err)
    wr(f"{TRACEFS}/events/{GROUP}/enable", "1")
    wr(f"{TRACEFS}/tracing_on", "1")


def _parse(line: str) -> dict | None:
    m = ORACLE_LINE.match(line.rstrip("\n"))
    if not m:
        return None
    sec, frac = m["ts"].split(".")
    tgid = m["tgid"] if m["tgid"] and m["tgid"].isdigit() else m["pid"]
    return {"ev": m["ev"], "comm": m["comm"].strip(), "pid": int(m["pid"]), "tgid": int(tgid),
            "ts_ns": int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9]), "rest": m["rest"]}


def oracle_lines() -> list[str]:
    """The rie/taint lines since the last call (the buffer is then cleared); every event read is
    kept in ORACLE."""
    with open(f"{TRACEFS}/trace") as fh:
        raw = [l for l in fh if not l.startswith("#")]
    wr(f"{TRACEFS}/trace", "")
    for l in raw:
        d = _parse(l)
        if d:
            ORACLE.append(d)
    return [l for l in raw if ": rie:" in l or ": taint:" in l]


def oracle_peek(ev: str, since_ns: int) -> bool:
    """Has an ``ev`` event been recorded at or after ``since_ns`` (the buffer is not cleared)?"""
    with open(f"{TRACEFS}/trace") as fh:
        for l in fh:
            if f": {ev}:" in l:
                d = _parse(l)
                if d and d["ts_ns"] >= since_ns:
                    return True
    return False


def dmesg() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()


def tainted() -> int:
    with open("/proc/sys/kernel/tainted") as fh:
        return int(fh.read())


def find_testdev() -> str:
    """The QEMU pci-testdev (1b36:0005) for the vfio-pci step, or ""."""
    for d in sorted(glob.glob("/sys/bus/pci/devices/*")):
        try:
            with open(f"{d}/vendor") as v, open(f"{d}/device") as dv:
                if v.read().strip() == "0x1b36" and dv.read().strip() == "0x0005":
                    return os.path.basename(d)
        except OSError:
            continue
    return ""


def bind_vfio(bdf: str) -> str:
    """Bind ``bdf`` to vfio-pci; returns what went wrong, or ""."""
    dev = f"/sys/bus/pci/devices/{bdf}"
    if not os.path.exists(f"{dev}/iommu_group"):
        return "no IOMMU group (is intel_iommu=on?)"
    try:
        # the vIOMMU runs without interrupt remapping (intremap=off), and vfio_iommu_type1 then
        # refuses VFIO_SET_IOMMU with EPERM unless told to allow it (a test guest only)
        wr("/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "1")
        if os.path.exists(f"{dev}/driver"):
            wr(f"{dev}/driver/unbind", bdf)
        wr(f"{dev}/driver_override", "vfio-pci")
        wr("/sys/bus/pci/drivers_probe", bdf)
    except OSError as err:
        return f"binding vfio-pci: {err}"
    drv = os.path.basename(os.readlink(f"{dev}/driver")) if os.path.exists(f"{dev}/driver") else "none"
    group = os.path.basename(os.readlink(f"{dev}/iommu_group"))
    if drv != "vfio-pci" or not os.path.exists(f"/dev/vfio/{group}"):
        return f"driver {drv}, /dev/vfio/{group} {'exists' if os.path.exists(f'/dev/vfio/{group}') else 'missing'}"
    return ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--cache", required=True, help="the static pokers (cfgpoke, uringpoke, vfiopoke)")
    ap.add_argument("--kmods", required=True, help="this kernel's test modules (doe_excl.ko, doe_loop.ko)")
    ap.add_argument("--out", default="/out")
    ap.add_argument("--quick", action="store_true", help="phases A-C only (the kernel's exclusive checks)")
    opt = ap.parse_args()
    bdf = os.environ.get("CXL_BDF") or ""
    if not bdf:
        say("no CXL type-3 device")
        return 2
    with open("/proc/cmdline") as fh:
        cmdline = fh.read().strip()
    strict = "iomem=relaxed" not in cmdline.split()
    full = strict and not opt.quick  # phases D-F
    bus, devfn = bdf.split(":")[1], bdf.split(":")[2]
    sysfs = f"/sys/bus/pci/devices/{bdf}/config"
    procfs = f"/proc/bus/pci/{bus}/{devfn}"
    pokers = {p: os.path.join(opt.cache, p) for p in ("cfgpoke", "uringpoke", "vfiopoke")}
    cfgaudit = os.path.join(opt.repo, ".venv", "bin", "cfgaudit")
    setup_oracle()
    oracle_lines()
    testdev = find_testdev() if full else ""
    vfio_problem = bind_vfio(testdev) if testdev else ("no pci-testdev" if full else "")
    if vfio_problem:
        say("vfio-pci step not possible:", vfio_problem)

    # both backends at once; the kernel program compiles for 30-45 s under TCG. No -n: the
    # io_uring write is made by an io-wq worker thread (comm iou-wrk-PID) of uringpoke
    procs = {}
    bdfs = ["--bdf", bdf] + (["--bdf", testdev] if testdev and not vfio_problem else [])
    for be in ("kernel", "syscalls"):
        log = open(os.path.join(opt.out, f"{be}.log"), "w")
        procs[be] = (subprocess.Popen([cfgaudit, "trace", "--backend", be, *bdfs,
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
    oracle_lines()
    ORACLE.clear()  # exchanges and writes from here on are the ones both sides must see
    marks = {"ready_ns": now()}

    steps = []

    def step(name: str, phase: str, path: str, off: int, length: int, data: str | None = None,
             during: subprocess.Popen | None = None) -> None:
        """One write by a poker; ``path``: sysfs | procfs (cfgpoke), uring (uringpoke on sysfs),
        vfio (vfiopoke on the test device); ``during``: a doe_loop exchange running meanwhile."""
        oracle_lines()
        n0 = len(ORACLE)
        d0, tv0 = len(dmesg()), tainted()
        if path == "vfio":
            argv = [pokers["vfiopoke"], testdev]
        elif path == "allow":
            argv = [pokers["allowpoke"], sysfs]
        else:
            argv = [pokers["uringpoke" if path == "uring" else "cfgpoke"], procfs if path == "procfs" else sysfs]
        t0 = now()
        r = subprocess.Popen(argv + [hex(off), str(length)] + ([data] if data else []),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = r.communicate()[0]
        t1 = now()
        if during is not None:
            during.wait(120)
        time.sleep(0.05)
        lines = oracle_lines()
        new = dmesg()[d0:]
        pid = r.pid
        rie = [int(l.split("ret=")[1].split()[0], 0) for l in lines if ": rie:" in l and _pid_of(l) == pid]
        taints = [int(l.split("flag=")[1].split()[0], 0) for l in lines if ": taint:" in l and _pid_of(l) == pid]
        mine = ORACLE[n0:]
        s = {"name": name, "phase": phase, "path": path, "offset": off, "length": length, "t0": t0, "t1": t1,
             "pid": pid, "during_exchange": during is not None, "poke_rc": r.returncode, "poke_out": out.strip(), "rie": rie, "add_taint": taints,
             "tainted_before": tv0, "tainted_after": tainted(),
             "dmesg": [l for l in new if "kernel-exclusive" in l],
             "doe_log": [l for l in new if "doe_loop:" in l],
             # when the write reached the device (the accessor's entry), per piece
             "reached_ns": [e["ts_ns"] for e in mine if e["ev"] in ("uwb", "uww", "uwd") and e["tgid"] == pid]}
        steps.append(s)
        say(name, json.dumps({k: s[k] for k in ("poke_out", "rie", "add_taint", "dmesg", "doe_log")}))

    # phase A: no claim (Debian 6.1's cxl_pci claims nothing)
    step("A1 sysfs DOE ctrl, unclaimed", "A", "sysfs", 0x198, 4)
    step("A2 procfs DOE ctrl, unclaimed", "A", "procfs", 0x198, 4)
    r = subprocess.run(["insmod", os.path.join(opt.kmods, "doe_excl.ko")], capture_output=True, text=True)
    say("insmod doe_excl:", r.returncode, r.stderr.strip())
    marks["claimed_ns"] = now()
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

    if full:
        # phase D: the kernel's own DOE exchanges (doe_loop.ko: on 6.1 its own mailbox object on
        # the device's DOE capability, whose creation resets it and runs discovery; on 6.4+ the
        # PCI core's mailbox through pci_doe())
        marks["doe_ns"] = now()
        r = subprocess.run(["insmod", os.path.join(opt.kmods, "doe_loop.ko"), f"bdf={bdf}"],
                           capture_output=True, text=True)
        say("insmod doe_loop:", r.returncode, r.stderr.strip())
        run_param = "/sys/module/doe_loop/parameters/run"

        def exchanges(spec: str, background: bool = False) -> subprocess.Popen:
            p = subprocess.Popen(["sh", "-c", f"echo '{spec}' > {run_param}"])
            if not background:
                p.wait(120)
            return p

        def long_exchange() -> subprocess.Popen:
            """One exchange in flight for about a second when this returns: a discovery request
            without payload, which QEMU 7.2 discards at GO (hw/pci/pcie_doe.c: discovery needs a
            length of at least 3 dwords), so Data Object Ready never comes and the kernel polls
            for its 1 s timeout, then fails with -EIO and aborts (drivers/pci/doe.c
            doe_statemachine_work(), PCI_DOE_TIMEOUT). A 768 KiB request is in flight only
            0.2-0.3 s under TCG: too short to hit reliably from here."""
            t = now()
            p = exchanges("1 0 0 1", background=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not oracle_peek("doew", t):
                time.sleep(0.01)
            return p

        exchanges("1 0 1 3")  # three short discovery exchanges, no user write
        step("D1 sysfs DOE ctrl, mailbox idle", "D", "sysfs", 0x198, 4, "00000000")
        step("D2 sysfs dword into the write mailbox during the kernel's exchange", "D", "sysfs", 0x1A0, 4, "00000000",
             during=long_exchange())
        step("D3 procfs ABORT during the kernel's exchange", "D", "procfs", 0x198, 4, "01000000",
             during=long_exchange())
        step("D4 sysfs read mailbox, mailbox idle", "D", "sysfs", 0x1A4, 4, "00000000")
        # QEMU sets Error for that pop with nothing to read: the next exchange fails at once
        # (-EIO, then the kernel aborts, clearing it), the one after works: no collision either way
        exchanges("1 0 1 2")
        # the other way round: a user request in progress (one dword, no GO) when the kernel
        # starts: its request is appended to the user's dword, the device discards the mix and
        # the kernel's exchange fails (-EIO after its 1 s timeout); the next one works
        step("D5 sysfs dword into the write mailbox while idle, then the kernel starts", "D", "sysfs", 0x1A0, 4,
             "01000000")
        steps[-1]["kernel_starts_next"] = True
        exchanges("1 0 1 1")
        steps[-1]["doe_log"] = [l for l in dmesg() if "doe_loop:" in l][-1:]
        exchanges("1 0 1 1")
        marks["doe_end_ns"] = now()
        # phase E: io_uring (an io-wq worker of uringpoke makes the write); F: vfio-pci
        step("E1 io_uring sysfs 0x3c", "E", "uring", 0x3C, 1)
        if testdev and not vfio_problem:
            step("F1 vfio-pci config region 0x0c", "F", "vfio", 0x0C, 1, "10")

        # phase G (issue 12): cfgaudit guard refusing writes into doe_excl's claim, then a dry run;
        # H: the same writes after the guard exited
        r = subprocess.run(["insmod", os.path.join(opt.kmods, "doe_excl.ko")], capture_output=True, text=True)
        say("insmod doe_excl:", r.returncode, r.stderr.strip())
        claims = "/tmp/e2e-claims.toml"
        with open(claims, "w") as fh:
            fh.write(CLAIMS.format(bdf=bdf))
        allowpoke = "/tmp/allowpoke"  # cfgpoke under another name: the comm --allow-comm lets through
        with open(pokers["cfgpoke"], "rb") as src, open(allowpoke, "wb") as dst:
            dst.write(src.read())
        os.chmod(allowpoke, 0o755)
        pokers["allowpoke"] = allowpoke

        def guard(name: str, *extra: str) -> tuple[subprocess.Popen, object] | None:
            log = open(os.path.join(opt.out, f"{name}.log"), "w")
            p = subprocess.Popen([cfgaudit, "guard", "--level", "exclusive", "--claims", claims, "--allow-comm",
                                  "allowpoke", "-o", os.path.join(opt.out, f"{name}.jsonl"), *extra],
                                 stdout=log, stderr=subprocess.STDOUT)
            t = time.monotonic()
            while time.monotonic() - t < 300:
                with open(os.path.join(opt.out, f"{name}.log")) as fh:
                    if "Ctrl-C to end" in fh.read():
                        say(f"{name} ready after {time.monotonic() - t:.1f} s")
                        return p, log
                if p.poll() is not None:
                    break
                time.sleep(0.5)
            with open(os.path.join(opt.out, f"{name}.log")) as fh:
                say(f"{name} did not start (exit {p.poll()}):", fh.read()[-600:])
            return None

        def unguard(g: tuple[subprocess.Popen, object] | None) -> None:
            if g is None:
                return
            p, log = g
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
            log.close()  # type: ignore[attr-defined]

        writes = [("sysfs DOE ctrl inside", "sysfs", 0x198, 4, True), ("procfs DOE ctrl inside", "procfs", 0x198, 4, True),
                  ("sysfs 4 bytes straddling the start", "sysfs", 0x18E, 4, True),
                  ("sysfs 1 byte just before", "sysfs", 0x18F, 1, False), ("sysfs 1 byte just after", "sysfs", 0x1A8, 1, False),
                  ("procfs 0x3c outside", "procfs", 0x3C, 1, False),
                  ("io_uring DOE ctrl inside", "uring", 0x198, 4, True)]
        marks["guard_ns"] = now()
        g = guard("guard")
        marks["guard_ready"] = g is not None
        if g is not None:
            for i, (what, path, off, n, owned) in enumerate(writes, 1):
                step(f"G{i} guarded: {what}", "G", path, off, n)
                steps[-1].update(guard="on", owned=owned)
            step("G7 guarded: allowed comm, DOE ctrl inside", "G", "allow", 0x198, 4)
            steps[-1].update(guard="on", owned=True, allowed=True)
            fd = os.open(sysfs, os.O_RDONLY)
            try:
                got = os.pread(fd, 4, 0x198)
            finally:
                os.close(fd)
            marks["guarded_read"] = len(got)
        unguard(g)
        marks["dry_ns"] = now()
        g = guard("guard-dry", "--dry-run")
        if g is not None:
            for i, (what, path, off, n, owned) in enumerate(writes, 1):
                step(f"GD{i} dry run: {what}", "G", path, off, n)
                steps[-1].update(guard="dry-run", owned=owned)
        unguard(g)
        # --level collision: only writes into a mailbox while the kernel's exchange is in flight
        marks["collision_guard_ns"] = now()
        g = guard("guard-collision", "--level", "collision")
        marks["collision_guard_ready"] = g is not None
        if g is not None:
            step("GC1 collision guard: sysfs DOE ctrl, mailbox idle", "G", "sysfs", 0x198, 4)
            steps[-1].update(guard="collision")
            step("GC2 collision guard: sysfs dword into the write mailbox during the kernel's exchange", "G",
                 "sysfs", 0x1A0, 4, "00000000", during=long_exchange())
            steps[-1].update(guard="collision")
            step("GC3 collision guard: sysfs dword into the write mailbox, mailbox idle", "G", "sysfs", 0x1A0, 4,
                 "00000000")
            steps[-1].update(guard="collision")
            exchanges("1 0 1 2")  # GC3's dword poisons the next exchange (QEMU), the one after works
        unguard(g)
        marks["unguarded_ns"] = now()
        for i, (what, path, off, n, owned) in enumerate(writes, 1):
            step(f"H{i} after the guard: {what}", "H", path, off, n)
            steps[-1].update(owned=owned)
        r = subprocess.run(["rmmod", "doe_excl"], capture_output=True, text=True)
        say("rmmod doe_excl:", r.returncode, r.stderr.strip())
        marks["guard_end_ns"] = now()

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
    oracle_lines()
    exch = []  # the kernel's DOE exchanges while both tracers ran: [entry ns, return ns, kworker pid]
    for e in ORACLE:
        if e["ev"] == "doew":
            exch.append([e["ts_ns"], None, e["pid"]])
        elif e["ev"] == "doer":
            for x in reversed(exch):
                if x[2] == e["pid"] and x[1] is None:
                    x[1] = e["ts_ns"]
                    break
    with open("/proc/version") as fh:
        version = fh.read().strip()
    with open(os.path.join(opt.out, "steps.json"), "w") as fh:
        json.dump({"bdf": bdf, "testdev": testdev, "vfio_problem": vfio_problem, "cmdline": cmdline,
                   "proc_version": version, "marks": marks, "steps": steps, "doe_exchanges": exch,
                   "doe_log": [l for l in dmesg() if "doe_loop:" in l], "tainted_end": tainted()}, fh, indent=1)
    return 0


def _pid_of(line: str) -> int | None:
    """The thread group of an oracle line's task (io-wq workers are threads of the submitter)."""
    d = _parse(line)
    return d["tgid"] if d else None


if __name__ == "__main__":
    sys.exit(main())
