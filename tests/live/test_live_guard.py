"""The guard on this machine (root): its program compiles and its kprobes pass the verifier; the
kernel refuses the guard itself (no kprobes, and BPF-LSM loads are refused here), so `cfgaudit
guard` exits 2 naming why and doctor says the same. The guest (make e2e) proves it refusing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cfgaudit.probes import bccutil, guard, kernel
from cfgaudit.probes.bpfcache import compile_program

pytestmark = pytest.mark.live

EXE = os.path.join(os.path.dirname(sys.executable), "cfgaudit")
DEBIAN_6_1 = {"DOE_TASK_VID": 0, "DOE_TASK_TYPE": 2, "DOE_TASK_REQ_SZ": 16, "DOE_TASK_RSP_SZ": 32, "DOE_TASK_RV": 40,
              "DOE_TASK_WORK": 64, "DOE_TASK_MB": 96, "DOE_MB_PDEV": 0, "DOE_MB_CAP": 8}


@pytest.mark.parametrize("doe", [False, True])
def test_guard_program_compiles_and_its_kprobes_verify(doe: bool) -> None:
    """The kprobes, and the hook's own decision (guard_decide) loaded as a kprobe program
    (GUARD_SELFTEST): BPF-LSM programs cannot be loaded here, but the verifier judges the same
    bitmap walk (a version it refused in the guest, 'invalid access to map value ... off=512',
    is refused here too)."""
    bcc = bccutil.import_bcc()
    consts = {"DRY_RUN": doe, "MAX_DEVS": 8, "RINGBUF_PAGES": 8, "FOLLOW": doe, "DOE_PROBES": doe,
              "GUARD_SELFTEST": 1, **(DEBIAN_6_1 if doe else {})}
    b = compile_program(bcc, bccutil.program_text(guard.GUARD_PROGRAM).encode(),
                        [f"-I{bccutil.BPF_DIR}", *bccutil.define_flags(consts), "-Wno-macro-redefined"])
    try:
        for fn in [b"on_rw_verify_area", b"guard_selftest"] + ([b"on_doe_work", b"on_doe_work_return"] if doe else []):
            b.load_func(fn, bcc.BPF.KPROBE)
        for name in (b"guard_files", b"guard_refuse", b"guard_allow", b"guard_allow_comm", b"guard_caps"):
            assert b[name] is not None  # the maps probes/guard.py fills (bcc raises KeyError when absent)
    finally:
        b.cleanup()


def test_guard_refuses_to_start_here_and_says_why() -> None:
    why = guard.detect_guard()
    if why is None:  # a kernel with kprobes: then the BPF-LSM load is what this machine refuses
        why = "BPF program failed to load"
    p = subprocess.run([EXE, "guard", "-d", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.startswith("Error: guard: ") and why in p.stderr and "Traceback" not in p.stderr
    d = subprocess.run([EXE, "doctor", "--format", "json"], capture_output=True, text=True, timeout=60)
    rows = {r["backend"]: r for r in json.loads(d.stdout)}
    assert rows["guard"]["available"] is (guard.detect_guard() is None)
    if not kernel.kprobes_available():
        assert "kprobes" in rows["guard"]["reason"]
