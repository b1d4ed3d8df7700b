"""The exit-code table (cfgaudit/errors.py EXIT_CODES, shown in README.md) and each code, produced
by a real run. `python tests/test_exit_codes.py` rewrites the README block."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import cfgaudit.__main__ as entry
from cfgaudit.errors import EXIT_CODES, EXIT_ERROR, EXIT_FINDINGS, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK
from support import QEMU_CXL, run_cli, wait_loading
from support.docs import doc_block, md_table, rewrite_block

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
BEGIN = "<!-- exit-codes:begin (generated from cfgaudit/errors.py EXIT_CODES; tests/test_exit_codes.py checks it) -->"
END = "<!-- exit-codes:end -->"
EVENT = '{"ts_ns":1,"pid":7,"comm":"setpci","op":"%s","bdf":"0000:0d:00.0","offset":408,"size":4,"via":"sysfs"}\n'
SOURCES = ("--lspci-dump", QEMU_CXL, "--driver", "0d:00.0=cxl_pci", "--kernel", "6.2.0")


def _table() -> str:
    return md_table(["code", "meaning", "when"], EXIT_CODES)


def test_readme_table_is_the_code_table() -> None:
    assert doc_block(README, BEGIN, END) == _table(), "run: python tests/test_exit_codes.py"


def test_codes_are_distinct_and_the_entry_point_agrees() -> None:
    codes = [EXIT_OK, EXIT_FINDINGS, EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED]
    assert len(set(codes)) == len(codes) and [int(r[0]) for r in EXIT_CODES[:5]] == codes
    assert entry.EXIT_INTERRUPTED == EXIT_INTERRUPTED == 128 + signal.SIGINT


def _trace(tmp_path, op: str) -> str:
    p = tmp_path / f"{op}.jsonl"
    p.write_text(EVENT % op)
    return str(p)


def test_ok_findings_error(tmp_path) -> None:
    assert run_cli("check", _trace(tmp_path, "read"), *SOURCES)[0] == EXIT_OK
    assert run_cli("check", _trace(tmp_path, "write"), *SOURCES)[0] == EXIT_FINDINGS  # DOE control, exclusive
    code, _, err = run_cli("check", str(tmp_path / "missing.jsonl"), *SOURCES)
    assert code == EXIT_ERROR and err.startswith(f"Error: {tmp_path / 'missing.jsonl'}")


def test_internal_error(monkeypatch, tmp_path) -> None:
    import cfgaudit

    def bug(*a, **k):
        raise ZeroDivisionError("a simulated bug")

    monkeypatch.setattr(cfgaudit, "open_analysis", bug)  # the CLI looks library names up when a command runs
    code, _, err = run_cli("check", _trace(tmp_path, "write"), *SOURCES)
    assert code == EXIT_INTERNAL and err.startswith("Error: internal error at test_exit_codes.py:")


def test_interrupted_while_loading(tmp_path) -> None:
    """SIGINT while the program loads its modules: the entry point's handler (the command line
    loading) or main()'s (a command loading the modules it uses), no traceback."""
    p = subprocess.Popen([sys.executable, "-m", "cfgaudit", "check", _trace(tmp_path, "write"), *SOURCES],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_loading(p.pid), "pyarrow was never loaded"
    p.send_signal(signal.SIGINT)  # pyarrow and pandas take a good part of a second to load
    out, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_INTERRUPTED and err.strip() == "Error: interrupted", (p.returncode, err)


def test_interrupted_offline(monkeypatch, tmp_path) -> None:
    import cfgaudit

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cfgaudit, "open_analysis", ctrl_c)
    code, _, err = run_cli("analyze", _trace(tmp_path, "write"), *SOURCES)
    assert code == EXIT_INTERRUPTED and err.strip() == "Error: interrupted"  # click adds a newline after ^C


if __name__ == "__main__":
    rewrite_block(README, BEGIN, END, _table())
