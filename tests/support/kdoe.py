"""Traces on the DOE sample's device (sample-traces/cxl-doe-6.2: a cxl_pci CXL device, DOE
capability at 0x190) with made-up events, for the kernel-DOE-exchange and collision tests."""
from __future__ import annotations

import json
import os

from .paths import ROOT

SAMPLE = os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "trace.jsonl")


def doe_sample_trace(tmp_path, rows: list[dict]) -> str:
    """A JSONL trace: the DOE sample's header (its embedded snapshot) and ``rows``; its path."""
    with open(SAMPLE) as fh:
        header = fh.readline()
    p = tmp_path / "t.jsonl"
    p.write_text(header + "".join(json.dumps(r) + "\n" for r in rows))
    return str(p)
