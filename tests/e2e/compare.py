"""Judge an e2e run: for every scripted write, cfgaudit (both backends) against the kernel.

    compare.py [--report FILE] BOOT=OUTDIR ...

BOOT is KERNEL-MODE (6.1-strict, 6.1-relaxed, 6.12-strict). OUTDIR holds guest_steps.py's
steps.json, kernel.jsonl and syscalls.jsonl. A write agrees when, for both backends:
  * kernel_taints == the kernel called add_taint(TAINT_USER=6) during the write
    == resource_is_exclusive() returned true (tracefs kretprobe, independent of cfgaudit);
  * kernel_logs == a new "Unexpected write to kernel-exclusive config offset" dmesg line;
  * taint bit 6 of /proc/sys/kernel/tainted is set after a tainting write (and stays clear after
    a non-tainting one while it was clear before);
  * kind == "exclusive" == the kernel's resource_is_exclusive() answer for the same write on the
    same kernel's strict boot (with iomem=relaxed the kernel answers false for everything, so
    the region's kind is checked against the strict boot's answer; where the kernel does not
    check the write's path, against its answer for the same range written through sysfs);
  * the kernel backend's kernel_verdict == resource_is_exclusive()'s return (null when the kernel
    made no check, as for VFIO) and, where set, == cfgaudit's kernel_taints;
  * the kernel backend's events equal the syscall backend's (pid, tid, comm, bdf, offset, via,
    ret, and size/data for complete writes); a write the kernel refused before reaching a config
    accessor (sysfs past the end: -EFBIG) has no kernel-backend event, only a syscall one;
  * io_uring (E) and VFIO (F) writes: the kernel backend has the event (via sysfs / vfio, offset,
    bytes, ret), the syscall backend has none but its trace has the notice saying such writes
    are unseen (unmediated kind io_uring / vfio) for that process;
  * DOE (D): a write is a collision (kernel backend: a finding of kind "collision") exactly when
    it reached the device (pci_user_write_config_*() entry, tracefs) between the entry and the
    return of a doe_statemachine_work() (tracefs) — the kernel's exchange in flight; a collision
    with an exchange that failed says so; the other way round, the kernel's start right after a
    user request was left in progress (D5) is a collision on that doe_start, and no other
    doe_start is one; the syscall backend's report never claims collisions were checked (summary
    collisions_visible false).
The kernel's DOE exchanges: each doe_statemachine_work() call seen by tracefs while both tracers
ran must appear once in the kernel-backend trace (doe_start within 10 ms of the entry, doe_end of
the return, ret = doe_loop's logged result where it made the exchange).
The guard (issue 12; phase G, strict boots): with `cfgaudit guard --level exclusive` running, a
write is refused (EPERM) exactly when it falls in the claim (the kernel's own answer for the same
write once the guard is gone, phase H) and its tool is not allowed (--allow-comm); a refused
write never reaches the device (no pci_user_write_config_*(), no check, no taint) and is in the
guard's trace; with --dry-run nothing is refused and the trace names the owned writes. A kernel
whose LSM list lacks bpf is reported, not failed.
The phases with the claim (B, G, H: doe_excl loaded) are analysed with a claims file; the others without.
Ends with exactly one line on stdout: `e2e: N writes checked, M agree with the kernel; X kernel
DOE exchanges seen of Y made; C collisions flagged of D; guard: R refused of R' owned, O others`;
exit 1 unless M = N, X = Y, C = D, R = R', O = 0 and nothing else was wrong.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile

from cfgaudit.audit import open_analysis, run_analysis

# finding columns that say what a collision did and how the kernel's exchange ended (docs/formats.md)
COLLISION_TEXT = ("collision", "kernel_protocol", "kernel_ret")

from guest_steps import CLAIMS  # noqa: E402 - doe_excl.ko's claim, one text for both sides (same directory)

KEY = ("pid", "tid", "comm", "bdf", "offset", "via", "ret")
DOE_OPS = ("doe_start", "doe_end")
CLAIMED = ("B", "G", "H")  # phases with doe_excl loaded (its claim as a claims file)
MATCH_NS = 10_000_000  # a doe_start/doe_end and the tracefs entry/return of the same call: within 10 ms
RV_RE = re.compile(r"doe_loop: exchange \d+ .*rv=(-?\d+)")


def read_trace(path: str) -> tuple[dict, list[dict], list[dict]]:
    """(header, events, unmediated notices) of a JSON Lines trace."""
    header, events, notices = {}, [], []
    with open(path) as fh:
        for line in fh:
            d = json.loads(line)
            if d.get("record") == "header":
                header = d
            elif d.get("record") == "unmediated":
                notices.append(d)
            elif "record" not in d:
                events.append(d)
    return header, events, notices


def model(header: dict, events: list[dict], claims: str | None, tmp: str) -> tuple[dict[tuple, dict], dict]:
    """(ts_ns, tid) -> what cfgaudit's analyzer said of that event, and the report's summary."""
    out = {(e["ts_ns"], e.get("tid")): {"exclusive": False, "taints": False, "logs": False, "collision": False,
                                        "text": []} for e in events}
    if not events:
        return out, {}
    path = os.path.join(tmp, "phase.jsonl")
    with open(path, "w") as fh:
        fh.write(json.dumps(header) + "\n")
        for e in events:
            fh.write(json.dumps(e) + "\n")
    rep = run_analysis(open_analysis([path], claims=[claims] if claims else []))
    for r in rep.findings.to_dict("records"):
        m = out.get((r["ts_ns"], r.get("tid")))
        if m is None:
            continue
        m["exclusive"] |= r["kind"] == "exclusive"
        m["taints"] |= bool(r["kernel_taints"])
        m["logs"] |= bool(r["kernel_logs"])
        if r["kind"] == "collision":
            m["collision"] = True
            m["text"].append(" ".join(str(r.get(k) or "") for k in COLLISION_TEXT))
    return out, dict(rep.summary)


def phase_windows(run: dict) -> dict[str, tuple[int, int]]:
    """Phase -> (first ns, last ns): from the mark before its first step to after its last one."""
    out: dict[str, tuple[int, int]] = {}
    marks = run.get("marks", {})
    starts = {"A": marks.get("ready_ns"), "B": marks.get("claimed_ns"), "C": marks.get("released_ns"),
              "D": marks.get("doe_ns"), "E": marks.get("doe_end_ns"), "F": marks.get("doe_end_ns"),
              "G": marks.get("guard_ns"), "H": marks.get("unguarded_ns")}
    for s in run["steps"]:
        lo, hi = out.get(s["phase"], (s["t0"], s["t1"]))
        out[s["phase"]] = (min(lo, s["t0"], starts.get(s["phase"]) or s["t0"]), max(hi, s["t1"] + 20_000_000))
    if "D" in out and marks.get("doe_end_ns"):
        out["D"] = (out["D"][0], max(out["D"][1], marks["doe_end_ns"]))
    return out


def judge_doe(boot: str, run: dict, kevents: list[dict], report: list[str]) -> tuple[int, int, list[str]]:
    """(exchanges seen, exchanges made, problems): the kernel's DOE exchanges (tracefs) against
    the kernel backend's doe_start/doe_end events."""
    made = run.get("doe_exchanges") or []
    starts = [e for e in kevents if e["op"] == "doe_start"]
    ends = {e.get("tid"): [] for e in kevents if e["op"] == "doe_end"}
    for e in kevents:
        if e["op"] == "doe_end":
            ends[e.get("tid")].append(e)
    problems, seen, used = [], 0, set()
    for entry, ret_ns, kpid in made:
        hit = [i for i, e in enumerate(starts) if i not in used and abs(e["ts_ns"] - entry) <= MATCH_NS]
        if not hit:
            problems.append(f"kernel DOE exchange at {entry} (kworker {kpid}) not in the trace")
            continue
        i = min(hit, key=lambda j: abs(starts[j]["ts_ns"] - entry))
        used.add(i)
        end = [e for e in ends.get(starts[i].get("tid"), []) if ret_ns is not None and abs(e["ts_ns"] - ret_ns) <= MATCH_NS]
        if ret_ns is not None and not end:
            problems.append(f"kernel DOE exchange at {entry}: no doe_end near its return {ret_ns}")
            continue
        seen += 1
    extra = [e["ts_ns"] for i, e in enumerate(starts) if i not in used]
    if extra:
        problems.append(f"doe_start events the kernel did not make: {extra}")
    report.append(f"{boot}: kernel DOE exchanges: {seen} seen of {len(made)} made (trace: {len(starts)} doe_start)")
    return seen, len(made), problems


def exchange_of(run: dict, ts: int) -> list | None:
    """The kernel's exchange (tracefs [entry, return, kworker]) in flight at ``ts`` ns, if any."""
    for x in run.get("doe_exchanges") or []:
        if x[0] < ts and (x[1] is None or ts < x[1]):
            return x
    return None


def guard_records(out: str, name: str) -> list[dict]:
    """The events a guard run recorded (its refusals, or with --dry-run what it would have refused)."""
    try:
        return read_trace(os.path.join(out, f"{name}.jsonl"))[1]
    except OSError:
        return []


def owned_truth(run: dict) -> dict[tuple, bool]:
    """(path, offset, length) -> the kernel's own answer, once the guard was gone (phase H), to
    whether that write falls in a claimed range (resource_is_exclusive() returned 1)."""
    return {(s["path"], s["offset"], s["length"]): any(r == 1 for r in s["rie"])
            for s in run["steps"] if s["phase"] == "H" and s["rie"]}


def judge_guard(s: dict, run: dict, out: str, res: dict[str, int]) -> list[str]:
    """A write made while `cfgaudit guard` ran (issue 12): refused exactly when it fell in an owned
    range and its tool was not allowed; a refused write never reached the device (no
    pci_user_write_config_*() call, no check, no taint) and is in the guard's trace; a dry run
    refuses nothing and records what it would have refused."""
    problems: list[str] = []
    if s["guard"] == "collision":
        return judge_collision_guard(s, run, out, res)
    truth = owned_truth(run)
    key = ("sysfs" if s["path"] == "allow" else s["path"], s["offset"], s["length"])
    owned = truth.get(key)
    if owned is None:
        return [f"guard: no unguarded write of {key} to tell whether it is owned"]
    if owned != s.get("owned"):
        problems.append(f"guard: the script says owned={s.get('owned')}, the kernel said {owned}")
    refused = s["poke_rc"] != 0 and "Operation not permitted" in s["poke_out"]
    reached = bool(s["reached_ns"])
    if refused and (reached or s["rie"] or s["add_taint"]):
        problems.append(f"guard: refused, yet the write reached the kernel (accessor {s['reached_ns']}, "
                        f"check {s['rie']}, taint {s['add_taint']})")
    if not refused and not reached:
        problems.append(f"guard: not refused, yet no config accessor ran ({s['poke_out']})")
    name = "guard" if s["guard"] == "on" else "guard-dry"
    recs = [e for e in guard_records(out, name) if e["pid"] == s["pid"]]
    if s["guard"] == "on":
        should = owned and not s.get("allowed")
        if should:
            res["owned"] += 1
            res["r"] += refused
            if not refused:
                problems.append(f"guard: an owned write passed ({s['poke_out']})")
        elif refused:
            res["others"] += 1
            problems.append(f"guard: a write it must let through was refused ({s['poke_out']})")
        want = [("refused", s["offset"], s["length"])] if should else []
        if [(e.get("guard"), e["offset"], e["size"]) for e in recs] != want:
            problems.append(f"guard: its trace has {[(e.get('guard'), e['offset'], e['size']) for e in recs]}, "
                            f"want {want}")
    else:
        if refused:
            problems.append("guard --dry-run refused a write")
        want = [("dry-run", s["offset"], s["length"])] if owned else []
        if [(e.get("guard"), e["offset"], e["size"]) for e in recs] != want:
            problems.append(f"guard --dry-run: its trace has {[(e.get('guard'), e['offset'], e['size']) for e in recs]}, "
                            f"want {want}")
    return problems


def judge_collision_guard(s: dict, run: dict, out: str, res: dict[str, int]) -> list[str]:
    """A write made while `cfgaudit guard --level collision` ran: refused exactly when it went into
    the DOE mailbox while the kernel's exchange was in flight there (tracefs: the write's whole
    span [t0, t1] inside a doe_statemachine_work() call); every other write passes."""
    problems: list[str] = []
    inside = [x for x in run.get("doe_exchanges") or [] if x[0] < s["t0"] and (x[1] is None or s["t1"] < x[1])]
    overlap = [x for x in run.get("doe_exchanges") or [] if x[0] <= s["t1"] and (x[1] is None or s["t0"] <= x[1])]
    if overlap and not inside:
        return [f"guard: the write's span [{s['t0']}, {s['t1']}] only partly overlaps a kernel exchange {overlap[0]}"]
    in_mailbox = s["offset"] < 0x190 + 0x18 and s["offset"] + s["length"] > 0x190
    should = bool(inside) and in_mailbox
    refused = s["poke_rc"] != 0 and "Operation not permitted" in s["poke_out"]
    if s.get("during_exchange") and not inside:
        problems.append("guard: the write missed the kernel's exchange it was scripted to hit")
    if should:
        res["owned"] += 1
        res["r"] += refused
        if not refused:
            problems.append(f"guard: a write during the kernel's exchange passed ({s['poke_out']})")
        if s["reached_ns"]:
            problems.append("guard: refused, yet the write reached the device")
    elif refused:
        res["others"] += 1
        problems.append(f"guard: a write with no exchange in flight was refused ({s['poke_out']})")
    recs = [e for e in guard_records(out, "guard-collision") if e["pid"] == s["pid"]]
    want = [("refused", s["offset"], s["length"])] if should else []
    if [(e.get("guard"), e["offset"], e["size"]) for e in recs] != want:
        problems.append(f"guard --level collision: its trace has "
                        f"{[(e.get('guard'), e['offset'], e['size']) for e in recs]}, want {want}")
    return problems


def judge_boot(boot: str, out: str, strict_answers: dict[str, dict[str, bool]], report: list[str]) -> dict[str, int]:
    with open(os.path.join(out, "steps.json")) as fh:
        run = json.load(fh)
    traces = {be: read_trace(os.path.join(out, f"{be}.jsonl")) for be in ("kernel", "syscalls")}
    relaxed = "iomem=relaxed" in run["cmdline"].split()
    kernel_tag = boot.rsplit("-", 1)[0]
    answers = strict_answers.setdefault(kernel_tag, {})
    tmp = tempfile.mkdtemp(prefix="cfgaudit-e2e-")
    claims = os.path.join(tmp, "claims.toml")
    with open(claims, "w") as fh:
        fh.write(CLAIMS.format(bdf=run["bdf"]))
    for be, (h, _, _) in traces.items():
        report.append(f"{boot}: {be} trace: backend={h.get('backend')} kernel_release={h.get('kernel_release')} "
                      f"kernel_version={h.get('kernel_version')} iomem_relaxed={h.get('iomem_relaxed')} "
                      f"doe_exchanges={h.get('doe_exchanges')}")
    if run.get("vfio_problem"):
        report.append(f"{boot}: vfio-pci step not made: {run['vfio_problem']}")
    windows = phase_windows(run)
    # events of each step, per backend; cfgaudit's model per phase (its writes and the kernel's
    # DOE exchanges in its window)
    per: dict[str, dict] = {}
    summaries: dict[str, dict[str, dict]] = {}
    for be, (h, evs, _) in traces.items():
        per[be] = {}
        phase_pids: dict[str, set[int]] = {}
        for s in run["steps"]:
            per[be][s["name"]] = [e for e in evs if s["t0"] <= e["ts_ns"] <= s["t1"] + 20_000_000
                                  and e["pid"] == s["pid"] and e["op"] == "write"]
            phase_pids.setdefault(s["phase"], set()).add(s["pid"])
        verdicts: dict[tuple, dict] = {}
        summaries[be] = {}
        # the phases with doe_excl's claim are one analysis: the kernel logs once per boot, so a
        # write in G or H does not log again after B's first
        groups: dict[str, list[str]] = {}
        for ph in windows:
            groups.setdefault("BGH" if ph in CLAIMED else ph, []).append(ph)
        for group, phs in groups.items():
            evs_ph = [e for e in evs if any(windows[ph][0] <= e["ts_ns"] <= windows[ph][1]
                                            and (e["op"] in DOE_OPS or (e["op"] == "write"
                                                                        and e["pid"] in phase_pids[ph]))
                                            for ph in phs)]
            v, summary = model(h, evs_ph, claims if group == "BGH" else None, tmp)
            verdicts.update(v)
            for ph in phs:
                summaries[be][ph] = summary
        per[be]["_model"] = verdicts
    res = {"n": 0, "m": 0, "x": 0, "y": 0, "c": 0, "d": 0, "other": 0, "r": 0, "owned": 0, "others": 0}
    for mark, name in (("guard_ready", "guard"), ("collision_guard_ready", "guard-collision")):
        if mark not in run.get("marks", {}) or run["marks"][mark]:
            continue
        log = ""
        try:
            with open(os.path.join(out, f"{name}.log")) as fh:
                log = fh.read().strip().splitlines()[-1]
        except (OSError, IndexError):
            pass
        if "BPF-LSM is not active" in log:
            report.append(f"{boot}: {name}: not available on this kernel: {log}")
        else:
            report.append(f"{boot}: {name}: did not start: {log}")
            res["other"] += 1
    if "D" in windows:
        x, y, problems = judge_doe(boot, run, traces["kernel"][1], report)
        res["x"], res["y"] = x, y
        for p in problems:
            report.append(f"    {p}")
        res["other"] += len(problems)
        sv = summaries["syscalls"].get("D", {})
        if sv.get("collisions_visible") is not False:
            report.append(f"    syscalls: the report does not say collisions were not visible "
                          f"(collisions_visible={sv.get('collisions_visible')!r})")
            res["other"] += 1
        kv = summaries["kernel"].get("D", {})
        if kv.get("collisions_visible") is not True:
            report.append(f"    kernel: collisions_visible={kv.get('collisions_visible')!r}, want true")
            res["other"] += 1
    if not relaxed:  # the kernel's answers: per step (None: it made no check), per range checked via sysfs
        for s in run["steps"]:
            excl = any(r == 1 for r in s["rie"]) if s["rie"] else None
            answers[s["name"]] = excl
            if s["path"] == "sysfs" and excl is not None:
                answers[f"sysfs {s['phase']} {s['offset']} {s['length']}"] = excl
    expected_reverse: set[tuple] = set()
    for s in run["steps"]:
        res["n"] += 1
        excl_k = any(r == 1 for r in s["rie"])
        taint_k = 6 in s["add_taint"]
        log_k = bool(s["dmesg"])
        unseen_path = s["path"] in ("uring", "vfio")  # the syscall backend cannot see these writes
        problems = []
        if taint_k != excl_k:
            problems.append(f"kernel: add_taint(6)={taint_k} but resource_is_exclusive={s['rie']}")
        for be in ("kernel", "syscalls"):
            evs = per[be][s["name"]]
            mv = [per[be]["_model"][(e["ts_ns"], e.get("tid"))] for e in evs]
            if be == "syscalls" and unseen_path:
                kind = "io_uring" if s["path"] == "uring" else "vfio"
                notes = [n for n in traces[be][2] if n.get("pid") == s["pid"] and n.get("kind") == kind]
                if evs:
                    problems.append(f"syscalls: events for a write it cannot see: {evs}")
                if not notes:
                    problems.append(f"syscalls: no '{kind}' notice for pid {s['pid']} "
                                    f"(notices: {[(n.get('pid'), n.get('kind')) for n in traces[be][2]]})")
                continue
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
            # whether the range is exclusive: the strict kernel's answer for this write, or, where
            # its path is not checked on this kernel (procfs before the backport), for the same
            # range written through sysfs in the same phase
            want_x = answers.get(s["name"])
            if want_x is None:
                want_x = answers.get(f"sysfs {s['phase']} {s['offset']} {s['length']}")
            if want_x is not None and evs and kx != want_x:  # a refused write has no kernel-backend event
                problems.append(f"{be}: kind==exclusive is {kx}, the strict kernel said {want_x}")
            if be == "kernel":
                for e, v in zip(evs, mv):
                    kv = e.get("kernel_verdict")
                    want = excl_k if s["rie"] else None
                    if kv != want:
                        problems.append(f"kernel: kernel_verdict={kv}, resource_is_exclusive={s['rie']}")
                    if kv is not None and kv != v["taints"]:
                        problems.append(f"kernel: kernel_verdict={kv} but cfgaudit's kernel_taints={v['taints']}")
                guard_refused = s.get("guard") and s["poke_rc"] != 0 and "Operation not permitted" in s["poke_out"]
                if unseen_path and not guard_refused:  # a write the guard refused never reaches the kernel's accessors
                    want_via = "sysfs" if s["path"] == "uring" else "vfio"
                    if [(e["via"], e["offset"], e["size"], e.get("ret")) for e in evs] != \
                            [(want_via, s["offset"], s["length"], s["length"])]:
                        problems.append(f"kernel: events {[(e['via'], e['offset'], e['size'], e.get('ret')) for e in evs]}, "
                                        f"want one ({want_via}, {s['offset']:#x}, {s['length']}, {s['length']})")
            if s["phase"] == "D" and be == "kernel" and s.get("kernel_starts_next"):
                # the other way round: the kernel's next start finds this user request in progress
                nxt = [e for e in traces["kernel"][1] if e["op"] == "doe_start" and e["ts_ns"] > s["t1"]][:1]
                mk = [per[be]["_model"].get((e["ts_ns"], e.get("tid")), {}) for e in nxt]
                flagged = any(v.get("collision") for v in mk)
                res["d"] += 1
                res["c"] += flagged
                expected_reverse.update((e["ts_ns"], e.get("tid")) for e in nxt)
                if not flagged:
                    problems.append(f"kernel: the kernel's next start ({[e['ts_ns'] for e in nxt]}) found this request "
                                    "in progress, and no collision was flagged on it")
                rvs = [int(m.group(1)) for m in map(RV_RE.search, s.get("doe_log") or []) if m]
                texts = [t for v in mk for t in v.get("text", [])]
                if flagged and rvs and rvs[0] < 0 and not any("fail" in t for t in texts):
                    problems.append(f"kernel: the kernel's exchange failed (rv={rvs[0]}), the collision does not say so")
            if s["phase"] == "D":
                inflight = [exchange_of(run, t) for t in s["reached_ns"]]
                hit = [x for x in inflight if x]
                flagged = any(v["collision"] for v in mv)
                if be == "kernel":
                    res["d"] += bool(hit)
                    res["c"] += bool(hit) and flagged
                    if flagged and not hit:
                        problems.append(f"kernel: collision flagged, but the write reached the device at "
                                        f"{s['reached_ns']} with no exchange in flight")
                    if hit and not flagged:
                        problems.append(f"kernel: no collision flagged; exchange in flight {hit[0]}")
                    if s.get("during_exchange") and not hit:
                        problems.append(f"the write (at {s['reached_ns']}) missed the kernel's exchange it was "
                                        "scripted to hit: the scenario did not happen")
                    rvs = [int(m.group(1)) for m in map(RV_RE.search, s.get("doe_log") or []) if m]
                    texts = [t for v in mv for t in v["text"]]
                    if hit and rvs and rvs[0] < 0 and not any("fail" in t for t in texts):
                        problems.append(f"kernel: the kernel's exchange failed (rv={rvs[0]}) and the collision "
                                        f"does not say so: {texts}")
                    if hit and rvs:
                        ends = [e for e in traces["kernel"][1] if e["op"] == "doe_end"
                                and hit[0][1] is not None and abs(e["ts_ns"] - hit[0][1]) <= MATCH_NS]
                        if [e.get("ret") for e in ends] != rvs[:1]:
                            problems.append(f"kernel: doe_end ret {[e.get('ret') for e in ends]}, doe_loop said {rvs[:1]}")
                elif flagged:
                    problems.append("syscalls: collision flagged by a backend that cannot see the kernel's exchanges")
        if not unseen_path:
            ke, se = per["kernel"][s["name"]], per["syscalls"][s["name"]]

            def key(e: dict) -> tuple:
                full = e.get("ret") == e["size"]
                return tuple(e.get(k) for k in KEY) + ((e["size"], e.get("data")) if full else ())

            se_cmp = [e for e in se if not (e.get("ret", 0) < 0 and not ke)]
            if [key(e) for e in ke] != [key(e) for e in se_cmp]:
                problems.append(f"events differ: kernel {[key(e) for e in ke]} syscalls {[key(e) for e in se]}")
        if s.get("guard"):
            problems += judge_guard(s, run, out, res)
        ok = not problems
        res["m"] += ok
        report.append(f"{boot}: {s['name']:<52} {'agree' if ok else 'DISAGREE'}  kernel: rie={s['rie']} "
                      f"taint={taint_k} log={log_k} ; {s['poke_out']}")
        for p in problems:
            report.append(f"    {p}")
    if run.get("marks", {}).get("guard_ready") and run["marks"].get("guarded_read") != 4:
        report.append(f"{boot}: guard: a 4-byte read of owned bytes under the guard got "
                      f"{run['marks'].get('guarded_read')} bytes (reads are never refused)")
        res["other"] += 1
    if run.get("marks", {}).get("guard_ready") and not res["owned"]:
        report.append(f"{boot}: guard: it ran, but no owned write was judged")
        res["other"] += 1
    # a collision flagged on a kernel start no scripted request was in progress for is false
    false_rev = [k for k, v in per["kernel"]["_model"].items() if v["collision"] and k not in expected_reverse
                 and any(e["op"] == "doe_start" and (e["ts_ns"], e.get("tid")) == k for e in traces["kernel"][1])]
    if false_rev:
        report.append(f"{boot}: collisions flagged on kernel starts with no user request in progress: {false_rev}")
        res["other"] += len(false_rev)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--report")
    ap.add_argument("boots", nargs="+", help="BOOT=OUTDIR")
    opt = ap.parse_args()
    report: list[str] = []
    strict: dict[str, dict[str, bool]] = {}
    tot = {"n": 0, "m": 0, "x": 0, "y": 0, "c": 0, "d": 0, "other": 0, "r": 0, "owned": 0, "others": 0}
    pairs = [b.split("=", 1) for b in opt.boots]
    pairs.sort(key=lambda p: not p[0].endswith("strict"))  # strict boots first: their answers judge the others
    for boot, out in pairs:
        try:
            res = judge_boot(boot, out, strict, report)
        except (OSError, ValueError, KeyError) as err:
            report.append(f"{boot}: no result ({type(err).__name__}: {err})")
            tot["n"] += 1
            tot["other"] += 1
            continue
        for k in tot:
            tot[k] += res[k]
    text = "\n".join(report)
    print(text, file=sys.stderr)
    if opt.report:
        with open(opt.report, "w") as fh:
            fh.write(text + "\n")
    print(f"e2e: {tot['n']} writes checked, {tot['m']} agree with the kernel; {tot['x']} kernel DOE exchanges seen "
          f"of {tot['y']} made; {tot['c']} collisions flagged of {tot['d']}; "
          f"guard: {tot['r']} refused of {tot['owned']} owned, {tot['others']} others")
    ok = tot["n"] and tot["m"] == tot["n"] and tot["x"] == tot["y"] and tot["c"] == tot["d"] and not tot["other"] \
        and tot["r"] == tot["owned"] and not tot["others"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
