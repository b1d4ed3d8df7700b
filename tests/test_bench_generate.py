"""bench/run.py's trace generator keeps up with the event schema (a new optional field broke it
once): a small trace of each format is made and read back by cfgaudit's own reader."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import cfgaudit
from support.paths import ROOT

RUN = os.path.join(ROOT, "bench", "run.py")


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_generated_traces_read_back(tmp_path, kind: str) -> None:
    subprocess.run([sys.executable, RUN, "_generate", str(tmp_path), "3000", "7", kind, "default"], check=True,
                   capture_output=True)
    (path,) = [p for p in tmp_path.iterdir() if p.name.endswith("." + kind)]
    f = cfgaudit.load_trace(str(path))
    assert len(f) == 3000 and set(f["op"]) <= {"write", "read"}
    assert f["doe_vendor"].isna().all() and (f["ts_ns"].diff().dropna() > 0).all()
