"""bench/summary.py (``make bench``'s last step) on made-up result files: the verdict line of each
issue 10 target, "identical rows: NO" failing with exit 1, and probes ready without root. No
benchmark runs here."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "summary.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_summary", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up while the class is built
    spec.loader.exec_module(mod)
    return mod


summary = _load()


def _case(name: str, cfg: float, duck: float, identical: bool = True, json_s: float | None = None) -> dict:
    return {"name": name, "cfgaudit_s": cfg, "cfgaudit_runs": [cfg] * 3, "duckdb_s": duck, "duckdb_runs": [duck] * 3,
            "ratio": cfg / duck, "identical": identical, "findings": 10, "json_s": json_s,
            "json_csv": json_s / cfg if json_s else None, "cfgaudit_peak_rss_mib": 500.0,
            "duckdb_peak_rss_mib": 200.0, "before_s": None}


def _run(identical: bool = True, peak: float = 572.0) -> dict:
    return {"script": "bench/run.py", "complete": True, "written": "2026-12-01 21:07:00 UTC",
            "load_average": "4.76 5.73 5.95", "rounds": 3, "big_requested": 10 ** 8,
            "cases": [_case("10M parquet", 16.2, 10.0),
                      _case("10M jsonl", 6.0, 10.0, identical=identical),
                      _case("5M parquet (few findings)", 5.26, 1.82, json_s=28.04)],
            "big": {"events": 10 ** 8, "seconds": 144.1, "events_per_s": 693_862.0, "peak_rss_mib": peak,
                    "ref_events": 10 ** 7, "ref_peak_rss_mib": 569.0}}


def _cmd(mn: float, med: float, target: bool = True) -> dict:
    return {"kind": "cfgaudit", "target": target, "min": mn, "median": med, "runs": [mn, med]}


STARTUP = {"script": "bench/startup.py", "complete": True, "runs": 10, "limit_s": 0.3,
           "commands": {"cfgaudit --help": _cmd(0.106, 0.186),
                        "cfgaudit analyze EMPTY": _cmd(1.172, 2.150),
                        "cfgaudit analyze HEADER (snapshot, no events)": _cmd(0.902, 1.909, target=False),
                        "cfgaudit devices --lspci-dump ONE": _cmd(0.145, 0.312),
                        "python -c pass": {"kind": "peer", "target": False, "min": 0.019, "median": 0.03}}}


def _timing(mn: float, med: float) -> dict:
    return {"min": mn, "median": med, "runs": [mn, med]}


LIVE = {"script": "bench/startup_live.py", "complete": True, "runs": 5,
        "cases": {"warm": {"name": "warm cache (entry loaded)", "attached": _timing(1.21, 1.33),
                           "tracing": _timing(1.21, 1.33), "exit": _timing(1.74, 1.83)},
                  "cold": {"name": "cold cache (bcc compiles, entry saved)", "attached": _timing(2.61, 2.85),
                           "tracing": _timing(2.61, 2.86), "exit": _timing(1.68, 1.83)},
                  "peer": {"name": "exitsnoop-bpfcc (bcc tool) to its header", "tracing": _timing(1.40, 1.61),
                           "exit": _timing(0.11, 0.12)}}}


def _write(d: Path, run: dict | None = None, startup: dict | None = None, live: dict | None = None) -> Path:
    for name, data in ((summary.RUN, run), (summary.STARTUP, startup), (summary.LIVE, live)):
        if data is not None:
            (d / name).write_text(json.dumps(data))
    return d


def _lines(out: str, target: int) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith(f"target {target} ")]


def test_verdict_wording() -> None:
    assert summary.verdict(1.62, 0.7) == ("not met", "not met (2.3x over)")
    assert summary.verdict(0.31, 0.3) == ("not met", "not met (3% over)")
    assert summary.verdict(0.5, 0.7) == ("met", "met (29% under)")
    assert summary.verdict(0.7, 0.7)[0] == "met"


def test_every_target_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert summary.main([str(_write(tmp_path, _run(), STARTUP, LIVE))]) == 0
    out = capsys.readouterr().out
    assert "issue 10 targets (this run)" in out
    t1 = _lines(out, 1)
    assert any(line.startswith("target 1  10M parquet: 1.62x DuckDB")
               and line.endswith("target 0.7x: not met (2.3x over)") for line in t1), t1
    assert any(line.startswith("target 1  10M jsonl: 0.60x DuckDB")
               and line.endswith("target 0.7x: met (14% under)") for line in t1), t1
    assert any(line.startswith("target 1  5M parquet (few findings): 2.89x DuckDB") for line in t1), t1
    assert "target 1  identical rows: yes (3 traces)" in t1
    assert any(line.startswith("target 1  json/csv, 5M parquet (few findings): 5.33x")
               and line.endswith("target 1.5x: not met (3.6x over)") for line in t1), t1
    t2 = _lines(out, 2)
    assert any(line.startswith("target 2  cfgaudit --help: min 0.106 s, median 0.186 s")
               and line.endswith("met (65% under)") for line in t2), t2
    # judged by the minimum; a median over the target is said
    assert any(line.startswith("target 2  cfgaudit devices --lspci-dump ONE: min 0.145 s, median 0.312 s")
               and "met (52% under); the median is over 0.3 s" in line for line in t2), t2
    assert any(line.startswith("target 2  cfgaudit analyze EMPTY") and line.endswith("not met (3.9x over)")
               for line in t2), t2
    assert any(line.startswith("target 2  also: cfgaudit analyze HEADER") for line in t2), t2
    assert not any("python -c pass" in line for line in t2)
    t3 = _lines(out, 3)
    assert any(line.startswith('target 3  probes ready, warm cache: "Tracing ..." line after min 1.21 s, median 1.33 s')
               and line.endswith("target 2 s (judged by the min): met (40% under)") for line in t3), t3
    assert any(line.startswith("target 3  also: cold cache") and "min 2.61 s, median 2.86 s" in line for line in t3)
    assert any(line.startswith("target 3  also: peer, exitsnoop-bpfcc") and "min 1.40 s, median 1.61 s" in line
               for line in t3), t3
    assert _lines(out, 4) == ["target 4  100M events from Parquet: peak RSS 572 MiB (144.1 s, 693,862 events/s; "
                              "569 MiB at 10M), target 600 MiB: met (5% under)"]
    assert "6 met, 4 not met, 0 not measured" in out


def test_memory_over_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert summary.main([str(_write(tmp_path, _run(peak=690.0)))]) == 0
    assert _lines(capsys.readouterr().out, 4)[0].endswith("target 600 MiB: not met (15% over)")


def test_identical_rows_no_exits_1(tmp_path: Path) -> None:
    _write(tmp_path, _run(identical=False), STARTUP, LIVE)
    p = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "target 1  identical rows: NO (10M jsonl)" in p.stdout
    assert "identical rows: yes" not in p.stdout


def test_not_root(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert summary.main([str(_write(tmp_path, _run(), STARTUP))]) == 0
    t3 = _lines(capsys.readouterr().out, 3)
    assert len(t3) == 1 and t3[0].startswith("target 3  probes ready: not measured: needs root"), t3
    # the record bench/startup_live.py leaves when it is run without root says the same, as root too
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    _write(tmp_path, live={"script": "bench/startup_live.py", "complete": False, "skipped": "needs root"})
    assert summary.main([str(tmp_path)]) == 0
    assert _lines(capsys.readouterr().out, 3)[0].startswith("target 3  probes ready: not measured: needs root")


def test_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "probes ready: not measured (no results-live.json: bench/startup_live.py did not run or failed)" in out
    assert "identical rows: not measured" in out
    assert "0 met, 0 not met, 9 not measured" in out


def test_small_run_marked_also(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run()
    run["cases"] = [_case("100k parquet", 1.3, 1.1)]
    run["big"] = dict(run["big"], events=200_000)
    assert summary.main([str(_write(tmp_path, run))]) == 0
    out = capsys.readouterr().out
    assert "target 1  10M parquet: cfgaudit / DuckDB: not measured (not in this run's --cases)" in out
    assert "target 1  also: 100k parquet: 1.18x DuckDB" in out
    assert "target 4  100M events from Parquet: peak RSS not measured (this run's --big was 200k)" in out
    assert "target 4  also: 200k events from Parquet" in out


def _fleet(identical: bool = True) -> dict:
    run = {"workers": 2, "seconds": 300.0, "cluster_start_s": 2.0, "segments_per_s": 33.3, "analysed": 10_000,
           "peak_rss_mib_per_worker": [170.0, 172.0], "driver_peak_rss_mib": 400.0, "identical": identical}
    return {"script": "bench/fleet.py", "complete": True, "written": "2026-12-02 04:00:00 UTC", "load_average": "2",
            "hosts": 10_000, "events_per_segment": 1_000, "segments": 10_000, "segments_mib": 581.0,
            "serial": {"segments": 10_000, "seconds": 250.0, "segments_per_s": 40.0},
            "runs": [run], "report": {"seconds": 20.0, "findings": 3_000_000}}


def test_fleet_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/fleet.py's figures: a block of their own; rows differing from the serial peer exit 1."""
    (tmp_path / summary.FLEET).write_text(json.dumps(_fleet()))
    assert summary.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert summary.FLEET_HEADING in out and "0 met, 0 not met, 9 not measured" in out
    assert "fleet analyze, 2 worker(s): 300.0 s = 33.3 segments/s; peak RSS per worker 170, 172 MiB; rows " \
           "identical to serial: yes" in out
    (tmp_path / summary.FLEET).write_text(json.dumps(_fleet(identical=False)))
    assert summary.main([str(tmp_path)]) == 1
    assert "rows identical to serial: NO" in capsys.readouterr().out
    (tmp_path / summary.FLEET).unlink()
    assert summary.main([str(tmp_path)]) == 0 and summary.FLEET_HEADING not in capsys.readouterr().out
