"""The entry point's start-up settings (ondemand.py): pandas deferred until a DataFrame is asked
for (pyarrow's own pandas probe refused, then allowed), and the allocators told to keep freed
memory without passing that on to a command cfgaudit runs. Each case in a fresh interpreter."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _py(code: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("MIMALLOC_PURGE_DELAY", "CFGAUDIT_MALLOC")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**base, **env})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


DEFER = """
import json, sys
from cfgaudit.ondemand import defer_pandas, load_pandas, frame
defer_pandas()
import numpy as np, pyarrow as pa
pa.array(np.arange(3)); pa.array(["a", None])
before = "pandas" in sys.modules
pd = load_pandas()
s = pa.array(pd.Series([1, None], dtype="Int64"))  # pyarrow sees pandas again: a masked int column
df = frame(pa.table({"x": pa.array([1, 2])}))
print(json.dumps({"before": before, "type": str(s.type), "nulls": s.null_count, "df": df["x"].tolist()}))
"""


def test_pandas_is_deferred_past_pyarrows_probe_and_loads_on_demand() -> None:
    r = _py(DEFER)
    assert r == {"before": False, "type": "int64", "nulls": 1, "df": [1, 2]}


KEEP = """
import json, os
from cfgaudit.ondemand import keep_freed_memory, child_environ, PROGRAM_ENV
keep_freed_memory()
print(json.dumps({"env": os.environ.get("MIMALLOC_PURGE_DELAY"), "program": PROGRAM_ENV,
                  "child": child_environ().get("MIMALLOC_PURGE_DELAY"), "home": child_environ().get("HOME")}))
"""


@pytest.mark.parametrize("env,want", [
    ({}, {"env": "1000", "program": {"MIMALLOC_PURGE_DELAY": "1000"}, "child": None}),
    ({"MIMALLOC_PURGE_DELAY": "5"}, {"env": "5", "program": {}, "child": "5"}),  # the user's setting wins
    ({"CFGAUDIT_MALLOC": "default"}, {"env": None, "program": {}, "child": None}),
])
def test_allocator_setting_is_cfgaudits_own(env: dict, want: dict) -> None:
    r = _py(KEEP, **env)
    assert r.pop("home") == os.environ.get("HOME")
    assert r == want
