"""Conflicts in time (issue 11): a user write into a DOE mailbox while the kernel's own exchange
on it is in flight is a collision; counted, described, failing the gate above exclusive. The
stage on synthetic events: overlapping, back-to-back, nested on two mailboxes, other bytes and
devices, and chunk boundaries anywhere giving the same answer (replay = live)."""
from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest

from cfgaudit.analyze.collisions import DoeCollisions
from cfgaudit.analyze.doe import Mailbox
from cfgaudit.events import event_table
from support import run_cli
from support.kdoe import doe_sample_trace

A, B = 0x190, 0x1B0  # two DOE capabilities of device code 0
KWORKER = {"pid": 97, "comm": "kworker/u8:2"}


def _ev(op: str, off: int, dev: int = 0, size: int = 4, **kw) -> dict:
    return {"op": op, "offset": off, "dev": dev, "size": size, **kw}


def _table(evs: list[dict]) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(evs)
    cols = {
        "ts_ns": pa.array(np.arange(n, dtype=np.int64) * 10),
        "pid": pa.array([e.get("pid", 812) for e in evs], pa.int64()),
        "comm": pa.array([e.get("comm", "doe-tool") for e in evs]),
        "op": pa.array([e["op"] for e in evs]),
        "bdf": pa.array(["0000:0d:00.0" if e["dev"] == 0 else "0000:0c:00.0" for e in evs]),
        "offset": pa.array([e["offset"] for e in evs], pa.int64()),
        "size": pa.array([e["size"] for e in evs], pa.int64()),
        "doe_vendor": pa.array([0x1E98 if e["op"] == "doe_start" else None for e in evs], pa.int64()),
        "doe_type": pa.array([2 if e["op"] == "doe_start" else None for e in evs], pa.int64()),
    }
    t = event_table(cols, n)
    dev = np.array([e["dev"] for e in evs], dtype=np.int64)
    off = np.array([e["offset"] for e in evs], dtype=np.int64)
    size = np.array([e["size"] for e in evs], dtype=np.int64)
    return t, dev, off, size, np.array([e["op"] == "write" for e in evs])


def _run(evs: list[dict], cuts: list[int] | None = None) -> list[tuple[int, int]]:
    """(colliding write's event index, the kernel exchange's start event index), feeding the
    events in chunks cut at ``cuts``."""
    st = DoeCollisions([Mailbox("0000:0d:00.0", A, "PCI core", 0), Mailbox("0000:0d:00.0", B, "PCI core", 0)])
    t, dev, off, size, w = _table(evs)
    out = []
    bounds = [0, *(cuts or []), len(evs)]
    for lo, hi in zip(bounds, bounds[1:]):
        c = st.feed(t.slice(lo, hi - lo), lo, dev[lo:hi], off[lo:hi], size[lo:hi], w[lo:hi])
        out += [(lo + int(r), x.event_index) for r, x in zip(c.rows, c.exchanges)]
    assert st.collisions == len(out)
    return out


START_A, END_A = _ev("doe_start", A, **KWORKER), _ev("doe_end", A, **KWORKER)
START_B, END_B = _ev("doe_start", B, **KWORKER), _ev("doe_end", B, **KWORKER)

CASES = {
    # a write during the exchange collides; after its end it does not
    "overlapping": ([START_A, _ev("write", A + 8), END_A, _ev("write", A + 8)], [(1, 0)]),
    # exchanges back to back: a write between them is free, one inside the second collides with it
    "back-to-back": ([START_A, END_A, _ev("write", A + 0x10), START_A, _ev("write", A + 0x10), END_A,
                      _ev("write", A + 0x14)], [(4, 3)]),
    # exchanges on two mailboxes at once, one inside the other: each write collides with its own mailbox's
    "nested": ([START_A, START_B, _ev("write", A + 8), _ev("write", B + 0x10), END_B, _ev("write", B + 0x10),
                _ev("write", A + 0x14), END_A, _ev("write", A + 8)], [(2, 0), (3, 1), (6, 0)]),
    # a write that only reaches into the mailbox from below collides; other bytes, devices and reads do not
    "edges": ([START_A, _ev("write", A - 2, size=4), _ev("write", A - 4), _ev("write", A + 0x18),
               _ev("write", A + 8, dev=1), _ev("read", A + 0x14), END_A], [(1, 0)]),
    # an end without a start (the trace began mid-exchange) and a start without an end (still in flight)
    "unpaired": ([END_A, _ev("write", A + 8), START_A, _ev("write", A + 8), _ev("write", A + 8)], [(3, 2), (4, 2)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_collisions(name: str) -> None:
    evs, want = CASES[name]
    assert _run(evs) == want


@pytest.mark.parametrize("name", list(CASES))
def test_chunk_boundaries_change_nothing(name: str) -> None:
    """Replay = live: one chunk, one event per chunk, and random cuts give the same collisions."""
    evs, want = CASES[name]
    assert _run(evs, list(range(1, len(evs)))) == want
    rng = random.Random(name)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(evs)), rng.randint(1, len(evs) - 1)))
        assert _run(evs, cuts) == want, cuts


# ---- through the command line: the DOE sample's device, on a release where DOE is not exclusive ----
KW = {"pid": 97, "tid": 97, "uid": 0, "comm": "kworker/u8:2", "bdf": "0000:0d:00.0", "offset": A, "via": "kernel"}


def _user(ts: int, off: int = A + 8) -> dict:
    return {"ts_ns": ts, "pid": 812, "tid": 812, "uid": 0, "comm": "doe-tool", "op": "write", "bdf": "0000:0d:00.0",
            "offset": off, "size": 4, "via": "sysfs", "ret": 4, "data": "01000000"}


def _trace(tmp_path, rows: list[dict]) -> str:
    return doe_sample_trace(tmp_path, rows)


def test_a_collision_fails_the_gate_above_exclusive(tmp_path) -> None:
    """On 6.8 the PCI core owns the DOE mailbox without a claim: the same write is only
    `managed` when the mailbox is idle (check --fail-on exclusive passes), and a collision that
    fails it when the kernel's CDAT exchange is in flight."""
    start = {"ts_ns": 20, "op": "doe_start", "size": 16, "doe_vendor": 0x1E98, "doe_type": 2, **KW}
    end = {"ts_ns": 40, "op": "doe_end", "size": 16, "ret": 12, **KW}
    idle = _trace(tmp_path, [start, end, _user(50)])
    code, out, err = run_cli("check", idle, "--kernel", "6.8", "--fail-on", "exclusive")
    assert code == 0 and "COLLISION:" not in out, (out, err)
    busy = _trace(tmp_path, [start, _user(30), end])
    code, out, err = run_cli("check", busy, "--kernel", "6.8", "--fail-on", "exclusive")
    assert code == 1, (out, err)
    text = " ".join(out.split())
    assert "COLLISION: 1 event where user space and the kernel's own DOE exchange met on one mailbox" in text
    assert ("COLLISION: sets ABORT: aborts the kernel's exchange, during the kernel's CXL table access (CDAT) "
            "exchange on PCI core's mailbox (pid 97 kworker/u8:2, event 0); the kernel's exchange then completed "
            "(12 bytes received)") in text
    rp = tmp_path / "r.json"
    code, _, _ = run_cli("analyze", busy, "--kernel", "6.8", "--format", "json", "-o", str(rp))
    doc = json.loads(rp.read_text())
    s = doc["summary"]
    assert code == 1 and s["doe_collisions"] == 1 and s["kernel_doe_exchanges"] == 1
    assert s["collision_events"] == 1 and s["by_kind"]["collision"] == 1 and s["collisions_visible"] is True
    [f] = doc["findings"]
    assert (f["kind"], f["severity"], f["event_index"], f["kernel_exchange"], f["kernel_ret"], f["kernel_protocol"]) \
        == ("collision", "error", 1, 0, 12, "CXL table access (CDAT)")


def test_a_trace_without_the_kernels_exchanges_claims_no_absence_of_collisions(tmp_path) -> None:
    """Writes into a DOE mailbox in a trace that records none of the kernel's exchanges (every
    syscall-backend trace): the report says collisions are not visible, never that there were none."""
    blind = "writes into DOE mailboxes: whether any collided with the kernel's own DOE exchanges is not visible"
    def text(*rows: dict) -> str:  # the table's totals, unwrapped
        return " ".join(run_cli("analyze", _trace(tmp_path, list(rows)), "--kernel", "6.8")[1].split())

    out = text(_user(30), _user(40, A + 0x10))
    assert f"2 {blind}" in out and "COLLISION:" not in out
    start = {"ts_ns": 20, "op": "doe_start", "size": 16, "doe_vendor": 0x1E98, "doe_type": 2, **KW}
    end = {"ts_ns": 25, "op": "doe_end", "size": 16, "ret": 12, **KW}
    out = text(start, end, _user(30))
    assert blind not in out and "COLLISION:" not in out  # seen, and none collided
    assert blind not in text(_user(30, 0x10))  # no write into a mailbox: nothing to say


def test_fail_on_collision_gates_on_collisions_alone(tmp_path) -> None:
    """`--fail-on collision`, the strictest level: exclusive findings pass, a collision fails."""
    start = {"ts_ns": 20, "op": "doe_start", "size": 16, "doe_vendor": 0x1E98, "doe_type": 2, **KW}
    end = {"ts_ns": 40, "op": "doe_end", "size": 16, "ret": 12, **KW}
    # on 6.2 cxl_pci claims the mailbox: an idle-mailbox write is exclusive, not a collision
    idle = _trace(tmp_path, [start, end, _user(50)])
    assert run_cli("check", idle, "--fail-on", "exclusive")[0] == 1
    assert run_cli("check", idle, "--fail-on", "collision")[0] == 0
    busy = _trace(tmp_path, [start, _user(30), end])
    code, out, _ = run_cli("check", busy, "--fail-on", "collision")
    assert code == 1 and "COLLISION: 1 event" in out
    assert run_cli("check", busy, "--fail-on", "never")[0] == 0
