"""Start-up imports only what the command uses (issue 10, target 2): which heavy modules each of
`cfgaudit --help`, `cfgaudit devices --lspci-dump ONE` and `cfgaudit analyze EMPTY_TRACE` loads,
each in a fresh interpreter through the program's entry point. Timings are not tested here: they
belong in the benchmarks (bench/startup.py, BENCHMARKS.md "Start-up").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cfgaudit.audit import FAIL_LEVELS
from cfgaudit.report.render import FORMATS
from support import QEMU_CXL, ROOT, run_cli

SAMPLE = os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "trace.jsonl")  # embeds its snapshot
# Heavy third-party packages, and cfgaudit modules that load them (or the live machinery).
HEAVY = ("pandas", "pyarrow", "numpy", "bcc", "duckdb", "dask")
HEAVY_OURS = ("cfgaudit.audit", "cfgaudit.live", "cfgaudit.inventory", "cfgaudit.analyze", "cfgaudit.probes",
              "cfgaudit.regions", "cfgaudit.report.render", "cfgaudit.report.frames")

# Runs the program as the console script does, then writes the loaded modules (of HEAVY and
# HEAVY_OURS, by top package or exact name) to the file argv[1] when the interpreter exits.
CHILD = """
import atexit, json, sys
out, argv, names = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
def dump():
    with open(out, "w") as fh:
        json.dump(sorted(n for n in names if n in sys.modules), fh)
atexit.register(dump)
sys.argv = ["cfgaudit", *argv]
from cfgaudit.__main__ import console
console()
"""


def _loaded(tmp_path, *argv: str) -> tuple[int, set[str], str]:
    """(exit code, the HEAVY / HEAVY_OURS modules loaded, stdout) of ``cfgaudit ARGV...``."""
    out = tmp_path / "modules.json"
    p = subprocess.run([sys.executable, "-c", CHILD, str(out), json.dumps(argv), json.dumps(HEAVY + HEAVY_OURS)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.exists(), p.stderr
    return p.returncode, set(json.loads(out.read_text())), p.stdout


def test_help_loads_click_alone(tmp_path) -> None:
    code, mods, out = _loaded(tmp_path, "--help")
    assert code == 0 and out.startswith("Usage: cfgaudit")
    assert mods == set(), f"cfgaudit --help loads {sorted(mods)}"


@pytest.mark.parametrize("cmd", [["devices"], ["regions", "--driver", "0d:00.0=cxl_pci", "--kernel", "6.2.0"]])
def test_devices_and_regions_from_a_dump_load_regions_alone(cmd: list[str], tmp_path) -> None:
    """The dump, the capability walk, the rules and the table: no numpy, pyarrow or pandas."""
    code, mods, out = _loaded(tmp_path, *cmd, "--lspci-dump", QEMU_CXL)
    assert code == 0 and "0000:0d:00.0" in out
    assert mods == {"cfgaudit.inventory", "cfgaudit.regions"}, sorted(mods)


def test_analyze_empty_trace_loads_no_live_machinery_and_no_pandas(tmp_path) -> None:
    """The analysis of an empty trace needs the trace reader and the report's text, never the live
    side, the optional heavy packages or pandas (no DataFrame is asked for)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, mods, out = _loaded(tmp_path, "analyze", str(empty), "--lspci-dump", QEMU_CXL, "--kernel", "6.2")
    assert code == 0 and "No conflicting writes." in out
    assert not mods & {"bcc", "duckdb", "dask", "cfgaudit.live", "pandas"}, sorted(mods)


def test_streamed_csv_loads_no_pandas(tmp_path) -> None:
    """analyze --format csv streams Arrow tables to the file: findings, and still no pandas."""
    out = tmp_path / "f.csv"
    code, mods, _ = _loaded(tmp_path, "analyze", SAMPLE, "--format", "csv", "-o", str(out))
    assert code == 1 and out.read_text().count("\n") > 10  # findings into exclusive ranges: exit 1
    assert "pandas" not in mods, sorted(mods)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_loads_pandas_when_it_asks(fmt: str, tmp_path) -> None:
    """Through the entry point (pandas deferred), every format renders the sample as the
    in-process CLI does: pandas is loaded for the formats that build DataFrames, not refused."""
    out = tmp_path / f"r.{fmt}"
    code, _, _ = _loaded(tmp_path, "analyze", SAMPLE, "--format", fmt, "-o", str(out))
    want_code, _, _ = run_cli("analyze", SAMPLE, "--format", fmt, "-o", str(tmp_path / f"direct.{fmt}"))
    assert code == want_code == 1
    assert out.read_text() == (tmp_path / f"direct.{fmt}").read_text()


@pytest.mark.parametrize("cmd", [["analyze", "--help"], ["check", "--help"]])
def test_trace_commands_still_list_their_choices(cmd: list[str], tmp_path) -> None:
    """The --format and --fail-on choices, looked up late, are the renderers' and the gate's."""
    code, _, out = _loaded(tmp_path, *cmd)
    assert code == 0 and f"[{'|'.join(FORMATS)}]" in out
    if cmd[0] == "check":
        assert f"[{'|'.join(FAIL_LEVELS)}]" in out


def test_a_bad_choice_is_still_a_usage_error(tmp_path) -> None:
    code, _, _ = _loaded(tmp_path, "check", "x.jsonl", "--fail-on", "sometimes")
    assert code == 2
