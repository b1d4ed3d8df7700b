"""Judge an e2e run: for every scripted write, cfgaudit (both backends) against the kernel.

    compare.py [--report FILE] BOOT=OUTDIR ...

OUTDIR holds guest_steps.py's steps.json, kernel.jsonl and syscalls.jsonl. A write agrees when,
for both backends:
  * kernel_taints == the kernel called add_taint(TAINT_USER=6) during the write
    == resource_is_exclusive() returned true (tracefs kretprobe, independent of cfgaudit);
  * kernel_logs == a new "Unexpected write to kernel-exclusive config offset" dmesg line;
  * taint bit 6 of /proc/sys/kernel/tainted is set after a tainting write (and stays clear after
    a non-tainting one while it was clear before);
  * kind == "exclusive" == the kernel's resource_is_exclusive() answer for the same write on the
    strict boot (with iomem=relaxed the kernel answers false for everything, so the region's kind
    is checked against the strict boot's answer);
  * the kernel backend's kernel_verdict == resource_is_exclusive()'s return (null when the kernel
    made no check) and, where set, == cfgaudit's kernel_taints;
  * the kernel backend's events equal the syscall backend's (pid, tid, comm, bdf, offset, via,
    ret, and size/data for complete writes); a write the kernel refused before reaching a config
    accessor (sysfs past the end: -EFBIG) has no kernel-backend event, only a syscall one.
The phase with the claim (B: doe_excl loaded) is analysed with a claims file; A and C without.
Ends with exactly one line on stdout: `e2e: N writes checked, M agree with the kernel`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import cfgaudit

CLAIMS = """[[claim]]
kind = "exclusive"
owner = "doe_excl"
bdf = "{bdf}"
offset = 0x190
length = 0x18
note = "tests/e2e/src/doe_excl.c: pci_request_config_region_exclusive(pdev, 0x190, 0x18) as v6.2/v6.3 cxl_pci"
"""
KEY = ("pid", "tid", "comm", "bdf", "offset", "via", "ret")


def read_trace(path: str) -> tuple[dict, list[dict]]:
    header, events = {}, []
    with open(path) as fh:
        for line in fh:
            d = json.loads(line)
            if d.get("record") == "header":
                header = d
            elif "record" not in d:
                events.append(d)
    return header, events


def model(header: dict, events: list[dict], claims: str | None, tmp: str) -> dict[tuple, dict]:
    """(ts_ns, tid) -> {kind_exclusive, kernel_taints, kernel_logs} from cfgaudit's analyzer."""
    out = {(e["ts_ns"], e.get("tid")): {"exclusive": False, "taints": False, "logs": False} for e in events}
    if not events:
        return out
    path = os.path.join(tmp, "phase.jsonl")
    with open(path, "w") as fh:
        fh.write(json.dumps(header) + "\n")
        for e in events:
            fh.write(json.dumps(e) + "\n")
    f = cfgaudit.analyze_traces(path, claims=[claims] if claims else [])
    for r in f.to_dict("records"):
        m = out.get((r["ts_ns"], r.get("tid")))
        if m is None:
            continue
        m["exclusive"] |= r["kind"] == "exclusive"
        m["taints"] |= bool(r["kernel_taints"])
        m["logs"] |= bool(r["kernel_logs"])
    return out


def judge_boot(boot: str, out: str, strict_answers: dict[str, bool], report: list[str]) -> tuple[int, int]:
    with open(os.path.join(out, "steps.json")) as fh:
        run = json.load(fh)
    traces = {be: read_trace(os.path.join(out, f"{be}.jsonl")) for be in ("kernel", "syscalls")}
    relaxed = "iomem=relaxed" in run["cmdline"].split()
    tmp = tempfile.mkdtemp(prefix="cfgaudit-e2e-")
    claims = os.path.join(tmp, "claims.toml")
    with open(claims, "w") as fh:
        fh.write(CLAIMS.format(bdf=run["bdf"]))
    for be, (h, _) in traces.items():
        report.append(f"{boot}: {be} trace: backend={h.get('backend')} kernel_release={h.get('kernel_release')} "
                      f"kernel_version={h.get('kernel_version')} iomem_relaxed={h.get('iomem_relaxed')}")
    # events of each step, per backend; cfgaudit's model per phase
    per = {}
    for be, (h, evs) in traces.items():
        per[be] = {}
        phases: dict[str, list[dict]] = {}
        for s in run["steps"]:
            mine = [e for e in evs if s["t0"] <= e["ts_ns"] <= s["t1"] + 20_000_000 and e["comm"] == "cfgpoke"
                    and e["op"] == "write"]
            per[be][s["name"]] = mine
            phases.setdefault(s["phase"], []).extend(mine)
        verdicts = {}
        for ph, evs_ph in phases.items():
            verdicts.update(model(h, evs_ph, claims if ph == "B" else None, tmp))
        per[be]["_model"] = verdicts
    n = m = 0
    for s in run["steps"]:
        n += 1
        excl_k = any(r == 1 for r in s["rie"])
        taint_k = 6 in s["add_taint"]
        log_k = bool(s["dmesg"])
        if not relaxed:
            strict_answers[s["name"]] = excl_k
        problems = []
        if taint_k != excl_k:
            problems.append(f"kernel: add_taint(6)={taint_k} but resource_is_exclusive={s['rie']}")
        for be in ("kernel", "syscalls"):
            evs = per[be][s["name"]]
            mv = [per[be]["_model"][(e["ts_ns"], e.get("tid"))] for e in evs]
            kt = any(v["taints"] for v in mv)
            kl = any(v["logs"] for v in mv)
            kx = any(v["exclusive"] for v in mv)
            if not evs and not (be == "kernel" and s["poke_rc"] != 0 and not s["rie"]):
                problems.append(f"{be}: no event")
            if kt != taint_k:
                problems.append(f"{be}: kernel_taints={kt}, kernel add_taint(TAINT_USER)={taint_k}")
            if kl != log_k:
                problems.append(f"{be}: kernel_logs={kl}, dmesg={s['dmesg']}")
            if kt and not s["tainted_after"] & 64:
                problems.append(f"{be}: taints but bit 6 is clear after the write")
            if not kt and not s["tainted_before"] & 64 and s["tainted_after"] & 64:
                problems.append(f"{be}: no taint predicted, bit 6 went up")
            want_x = strict_answers.get(s["name"])
            if want_x is not None and kx != want_x:
                problems.append(f"{be}: kind==exclusive is {kx}, the strict kernel said {want_x}")
            if be == "kernel":
                for e, v in zip(evs, mv):
                    kv = e.get("kernel_verdict")
                    want = excl_k if s["rie"] else None
                    if kv != want:
                        problems.append(f"kernel: kernel_verdict={kv}, resource_is_exclusive={s['rie']}")
                    if kv is not None and kv != v["taints"]:
                        problems.append(f"kernel: kernel_verdict={kv} but cfgaudit's kernel_taints={v['taints']}")
        ke, se = per["kernel"][s["name"]], per["syscalls"][s["name"]]

        def key(e: dict) -> tuple:
            full = e.get("ret") == e["size"]
            return tuple(e.get(k) for k in KEY) + ((e["size"], e.get("data")) if full else ())

        se_cmp = [e for e in se if not (e.get("ret", 0) < 0 and not ke)]
        if [key(e) for e in ke] != [key(e) for e in se_cmp]:
            problems.append(f"events differ: kernel {[key(e) for e in ke]} syscalls {[key(e) for e in se]}")
        ok = not problems
        m += ok
        report.append(f"{boot}: {s['name']:<44} {'agree' if ok else 'DISAGREE'}  kernel: rie={s['rie']} "
                      f"taint={taint_k} log={log_k} ; {s['poke_out']}")
        for p in problems:
            report.append(f"    {p}")
    return n, m


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--report")
    ap.add_argument("boots", nargs="+", help="BOOT=OUTDIR")
    opt = ap.parse_args()
    report: list[str] = []
    strict: dict[str, bool] = {}
    n = m = 0
    pairs = [b.split("=", 1) for b in opt.boots]
    pairs.sort(key=lambda p: p[0] != "strict")  # the strict boot first: its answers judge the relaxed one
    for boot, out in pairs:
        try:
            bn, bm = judge_boot(boot, out, strict, report)
        except (OSError, ValueError, KeyError) as err:
            report.append(f"{boot}: no result ({type(err).__name__}: {err})")
            n += 1
            continue
        n += bn
        m += bm
    text = "\n".join(report)
    print(text, file=sys.stderr)
    if opt.report:
        with open(opt.report, "w") as fh:
            fh.write(text + "\n")
    print(f"e2e: {n} writes checked, {m} agree with the kernel")
    return 0 if n and m == n else 1


if __name__ == "__main__":
    sys.exit(main())
