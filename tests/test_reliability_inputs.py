"""Regressions from the reliability pass (issue 9), input handling: every crash site met while
reading traces, dumps, snapshots and claims is one line `Error: FILE[:LINE]: ...` and exit 2, and
the input-validation "Low" items (limits, odd sizes, versions, counts) are errors or named warnings.

Crash cases run cfgaudit in a child process (a crash or hang fails the test, not the run); the
others run the CLI in-process. The classes already covered by tests/test_reliability.py (null and
non-object JSON lines, deep JSON nesting) are not repeated here.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cfgaudit.errors import EXIT_ERROR
from support import QEMU_CXL, ROOT, make_fake_tree, run_cli

SAMPLE = os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "trace.jsonl")
EV = {"ts_ns": 1, "pid": 7, "comm": "setpci", "op": "write", "bdf": "0000:0d:00.0", "offset": 408, "size": 4,
      "via": "sysfs"}


def _ev(**kw) -> bytes:
    return json.dumps({**EV, **kw}).encode() + b"\n"


def _cli(*args: str, stdin=None, timeout: float = 60) -> subprocess.CompletedProcess:
    """cfgaudit in a child process (stdin: a file object, or None for /dev/null)."""
    return subprocess.run([sys.executable, "-m", "cfgaudit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=stdin if stdin is not None else subprocess.DEVNULL)


def _check(path: str, *extra: str, **kw) -> subprocess.CompletedProcess:
    return _cli("check", path, "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0", *extra, **kw)


def _error(code: int, err: str, where: str, line: int | None = None, msg: str = "") -> str:
    """Assert one `Error: WHERE[:LINE]: ...` line, exit 2, no traceback; return the line."""
    assert code == EXIT_ERROR, (code, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, err
    want = f"Error: {where}:{line}: " if line is not None else f"Error: {where}: "
    assert lines[0].startswith(want), (want, err)
    assert msg in lines[0], (msg, lines[0])
    return lines[0]


def _proc_error(r: subprocess.CompletedProcess, where: str, line: int | None = None, msg: str = "") -> str:
    return _error(r.returncode, r.stderr, where, line, msg)


def _sample_lines() -> tuple[dict, list[bytes]]:
    with open(SAMPLE, "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    return json.loads(lines[0]), lines[1:]


def _with_header(tmp_path, header: dict, name: str = "t.jsonl", body: list[bytes] | None = None) -> str:
    p = tmp_path / name
    p.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(_sample_lines()[1] if body is None else body))
    return str(p)


# ---- A. crash classes ----------------------------------------------------------------------------
@pytest.mark.parametrize("body,msg", [
    (_ev(offset=2 ** 63), "'offset' must be a non-negative integer below 2**63"),    # OverflowError
    (_ev(ts_ns=2 ** 64), "'ts_ns' must be a non-negative integer below 2**63"),
    (_ev(offset=-(2 ** 63) - 1), "'offset' must be a non-negative integer"),
    (_ev(offset=-1), "'offset' must be a non-negative integer"),
    (_ev(ret=2 ** 63), "'ret' must be a 64-bit integer"),
    (_ev(size=10 ** 12 * 1.0), "'size' must be a non-negative integer"),           # 1e12: a float
])
def test_integers_past_int64_or_negative_are_named_errors(tmp_path, body: bytes, msg: str) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(_ev() + body)
    _proc_error(_check(str(p)), str(p), 2, msg)


def test_read_then_write_past_4096_is_reported_not_a_crash(tmp_path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(_ev(op="read", offset=5000, data="01020304") + _ev(offset=5000, data="00000000")
                  + _ev(offset=4094, size=8, data="00" * 8) + _ev(ts_ns=2))
    r = _check(str(p), "--driver", "0d:00.0=cxl_pci", "--reads")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr  # the last event hits cxl_pci's DOE claim
    warn = [ln for ln in r.stderr.splitlines() if "reaches past the 4096 bytes" in ln]
    assert len(warn) == 1 and warn[0].startswith(f"Warning: {p}:1: a read of 4 bytes at offset 0x1388"), r.stderr
    assert "(3 such access(es) in this file)" in warn[0]


def test_parquet_access_past_4096_is_reported(tmp_path) -> None:
    from cfgaudit.probes.tracefile import TraceWriter, make_header

    p = str(tmp_path / "t.parquet")
    w = TraceWriter(p, make_header())
    for i, off in enumerate((0x198, 4096, 4100)):
        w.write({**EV, "ts_ns": i, "offset": off})
    w.close()
    code, out, err = run_cli("check", p, "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0")
    assert code in (0, 1) and f"Warning: {p}: row 1: a write of 4 bytes at offset 0x1000" in err, err


@pytest.mark.parametrize("line,msg", [
    (b'{"ts_ns":1,"pid":7,"comm":"set\xff\xfepci","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4}\n',
     "not UTF-8 text"),
    (b'{"ts_ns":1,"pid":7,"comm":"a\xc0\xafb","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4}\n',
     "not UTF-8 text"),                               # overlong: pyarrow's reader let this through
    (b'{"ts_ns":1,"pid":7,"comm":"a\xed\xa0\x80b","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4}\n',
     "'comm' is not valid UTF-8 text"),               # an encoded surrogate
    (b'{"ts_ns":1,"pid":7,"comm":"a\\ud800b","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4}\n',
     "'comm' is not valid UTF-8 text"),               # a lone surrogate escape: UnicodeEncodeError later
    (b'{"ts_ns":1,"pid":7,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4,"k\\udc00":1}\n',
     "is not valid UTF-8 text"),
])
@pytest.mark.parametrize("fmt", ["table", "json", "html"])
def test_comm_that_is_not_utf8_is_a_named_error(tmp_path, line: bytes, msg: str, fmt: str) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(_ev() + line)
    _proc_error(_check(str(p), "--driver", "0d:00.0=cxl_pci", "--format", fmt), str(p), 2, msg)


def test_parquet_text_that_is_not_utf8_names_the_file(tmp_path) -> None:
    from cfgaudit.probes.tracefile import _rows_table

    t = _rows_table([{**EV, "comm": "ok"}])
    comm = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(b"\x00\x00\x00\x00\x03\x00\x00\x00"),
                                                  pa.py_buffer(b"a\xffb")])
    p = str(tmp_path / "t.parquet")
    pq.write_table(t.set_column(t.schema.get_field_index("comm"), "comm", comm), p)
    r = _check(p)
    _proc_error(r, p, None, "not UTF-8")


def test_trace_that_is_a_directory(tmp_path) -> None:
    d = tmp_path / "d.jsonl"
    d.mkdir()
    _proc_error(_check(str(d)), str(d), None, "not a regular file (a directory)")


def test_trace_that_is_a_fifo_does_not_block(tmp_path) -> None:
    f = tmp_path / "f.jsonl"
    os.mkfifo(f)
    _proc_error(_check(str(f), timeout=60), str(f), None, "not a regular file (a FIFO)")


def test_dev_zero_is_refused_not_read_for_ever() -> None:
    _proc_error(_check("/dev/zero", timeout=60), "/dev/zero", None, "not a regular file (a device)")


def test_dev_stdin_pipe_is_refused_a_redirected_file_is_read(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "cfgaudit.cli", "check", "/dev/stdin", "--lspci-dump", QEMU_CXL,
                        "--kernel", "6.2.0"], input=_ev().decode(), capture_output=True, text=True, timeout=60)
    _proc_error(r, "/dev/stdin", None, "not a regular file")
    p = tmp_path / "t.jsonl"
    p.write_bytes(_ev())
    with open(p, "rb") as fh:  # `cfgaudit check /dev/stdin < t.jsonl`: a regular file
        r = _check("/dev/stdin", "--driver", "0d:00.0=cxl_pci", stdin=fh)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr


def test_unreadable_trace(tmp_path) -> None:
    """Root reads a mode-000 file anyway, so as root the child runs without the capabilities that
    let it (setpriv, util-linux: dropped from the bounding set, root's exec keeps only that set)."""
    p = tmp_path / "t.jsonl"
    p.write_bytes(_ev())
    p.chmod(0)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    r = subprocess.run([*drop, sys.executable, "-m", "cfgaudit.cli", "check", str(p), "--lspci-dump", QEMU_CXL,
                        "--kernel", "6.2.0"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    _proc_error(r, str(p), None, "cannot read trace: Permission denied")


@pytest.mark.parametrize("what,args", [
    ("dump", ["devices", "--lspci-dump"]),
    ("snapshot", ["devices", "--snapshot"]),
    ("claims", ["regions", "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0", "--claims"]),
])
def test_other_inputs_that_are_fifos_or_devices(tmp_path, what: str, args: list[str]) -> None:
    f = tmp_path / f"{what}.fifo"
    os.mkfifo(f)
    _proc_error(_cli(*args, str(f)), str(f), None, "not a regular file (a FIFO)")
    _proc_error(_cli(*args, "/dev/zero"), "/dev/zero", None, "not a regular file (a device)")
    d = tmp_path / f"{what}.dir"
    d.mkdir()
    _proc_error(_cli(*args, str(d)), str(d), None, "not a regular file (a directory)")


def _snap_dev(h: dict) -> dict:
    return h["snapshot"]["devices"][0]


@pytest.mark.parametrize("change,msg", [
    (lambda h: _snap_dev(h).update(bdf=13), "header: snapshot device #0: 'bdf' must be a string"),
    (lambda h: _snap_dev(h).update(driver=5), "header: snapshot device #0: 'driver' must be a string"),
    (lambda h: _snap_dev(h).update(config_size="256"), "'config_size' must be 256 or 4096"),
    (lambda h: _snap_dev(h).update(config_size=-1), "'config_size' must be 256 or 4096"),
    (lambda h: _snap_dev(h).update(config="00" * 5000, known=None), "'config' holds 5000 bytes"),
    (lambda h: _snap_dev(h).update(known=[[0]]), "'known' must be a list of [start, length] pairs"),
    (lambda h: _snap_dev(h).update(notes=5), "'notes' must be a list of strings"),
    (lambda h: _snap_dev(h).update(driver="\ud800"), "'driver' must be a string"),
    (lambda h: h["snapshot"].update(devices=5), "header: snapshot: 'devices' must be a list"),
    (lambda h: h["snapshot"].update(devices=[5]), "header: snapshot device #0: must be a JSON object"),
    (lambda h: h["snapshot"].update(kernel_release=6), "header: snapshot: 'kernel_release' must be a string"),
    (lambda h: h["snapshot"].update(kernel_release="garbage"), "header: snapshot: 'kernel_release': not a kernel"),
    (lambda h: h.update(kernel_release=6), "header: 'kernel_release' must be a string"),
    (lambda h: h.update(kernel_release="garbage"), "header: 'kernel_release': not a kernel release"),
    (lambda h: h.update(kernel_version=5), "header: 'kernel_version' must be a string"),
    (lambda h: h.update(iomem_relaxed="yes"), "header: 'iomem_relaxed' must be true or false"),
    (lambda h: h.update(boot_flags="iomem=relaxed"), "header: 'boot_flags' must be a list of strings"),
    (lambda h: h.update(snapshot=[1]), "header: 'snapshot' must be an object"),
    (lambda h: h.update(started_ns=-1), "header: 'started_ns' must be a non-negative integer"),
    (lambda h: h.update(version=99), "header: version 99 is not supported"),                 # B: version 99
])
def test_header_and_its_snapshot_fields_of_the_wrong_type(tmp_path, change, msg: str) -> None:
    header, _ = _sample_lines()
    change(header)
    p = _with_header(tmp_path, header)
    code, out, err = run_cli("check", p)  # errors in the header's snapshot name the trace file (line 1)
    _error(code, err, p, 1, msg)


def test_snapshot_file_errors_name_the_file(tmp_path) -> None:
    with open(os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "snapshot.json")) as fh:
        snap = json.load(fh)
    p = tmp_path / "s.json"
    p.write_bytes(json.dumps(snap).encode().replace(b'"sample"', b'"\xff"', 1) if b'"sample"' in
                  json.dumps(snap).encode() else json.dumps(snap).encode()[:-1] + b', "x": "\xff"}')
    code, out, err = run_cli("devices", "--snapshot", str(p))
    _error(code, err, str(p), None, "not UTF-8 text")
    snap["devices"][0]["config_size"] = -1
    p.write_text(json.dumps(snap))
    code, out, err = run_cli("devices", "--snapshot", str(p))
    _error(code, err, str(p), None, "snapshot device #0: 'config_size' must be 256 or 4096 (bytes) or null, not -1")


def test_corrupt_parquet_page_names_the_file(tmp_path) -> None:
    from cfgaudit.probes.tracefile import TraceWriter, make_header

    good = str(tmp_path / "good.parquet")
    w = TraceWriter(good, make_header())
    for i in range(2000):
        w.write({**EV, "ts_ns": i, "comm": f"tool{i % 7}", "data": f"{i:08x}"})
    w.close()
    raw = open(good, "rb").read()
    bad = tmp_path / "bad.parquet"
    seen = set()
    for at in range(8, len(raw) // 2, max(1, len(raw) // 24)):  # damage pages, not the footer
        b = bytearray(raw)
        for i in range(at, min(at + 64, len(b))):
            b[i] ^= 0x5A
        bad.write_bytes(bytes(b))
        code, out, err = run_cli("check", str(bad), "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0")
        assert code in (0, 1, 2) and "Traceback" not in err and "internal error" not in err, err
        if code == 2:
            seen.add(_error(code, err, str(bad)))
    assert any("cannot read Parquet" in e for e in seen), seen


@pytest.mark.parametrize("key,value,msg", [
    (b"cfgaudit.header", b"null", "header: must be a JSON object, not null"),
    (b"cfgaudit.header", b"[1, 2]", "header: must be a JSON object, not list"),
    (b"cfgaudit.header", b'{"record":"header","format":"cfgaudit-trace","version":99}', "version 99"),
    (b"cfgaudit.header", b'{"record":"header","format":"other"}', "not a cfgaudit-trace header"),
    (b"cfgaudit.footer", b"[1]", "footer: must be a JSON object, not list"),
    (b"cfgaudit.footer", b'{"record":"footer","lost":-5}', "footer: 'lost' must be a non-negative integer"),
])
def test_parquet_metadata_that_is_not_a_record(tmp_path, key: bytes, value: bytes, msg: str) -> None:
    from cfgaudit.probes.tracefile import _rows_table

    p = str(tmp_path / "t.parquet")
    pq.write_table(_rows_table([EV]).replace_schema_metadata({key: value}), p)
    code, out, err = run_cli("check", p, "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0")
    _error(code, err, p, None, msg)


def _claims(tmp_path, text: str | bytes) -> str:
    p = tmp_path / "c.toml"
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(p)


@pytest.mark.parametrize("text,line,msg", [
    ("claim=[1]\n", 1, "'claim' must be an array of tables ([[claim]]), not an array holding 1"),
    ("x = 1\nclaim = 1\n", 1, "unknown top-level key 'x'"),
    ("claim = 1\n", 1, "'claim' must be an array of tables ([[claim]]), not 1"),
    ("x=" + "[" * 100000 + "]" * 100000 + "\n", None, "nested too deeply"),     # RecursionError in tomllib
    ("a=" + "{x=" * 3000 + "1" + "}" * 3000 + "\n", None, "nested too deeply"),
    ('[[claim]]\nkind="managed"\nowner="x"\nbdf="0d:00.0"\ncapability="doe"\noffset=0x7fffffffffffffff\n'
     "length=8\n", 6, "offset 0x7fffffffffffffff is past the 4096 bytes"),        # OverflowError in the index
    ('[[claim]]\nkind="managed"\nowner="x"\nbdf="0d:00.0"\ncapability="doe"\nlength=0x7fffffffffffffff\n',
     6, "runs past 4096 bytes of config space"),
    ('[[claim]]\nkind="user"\nowner="x"\nbdf="0d:00.0"\noffset=0xff0\nlength=0x20\n', 6, "runs past 4096"),
    (b'[[claim]]\nkind="user"\nowner="\xff\xfe"\nbdf="0d:00.0"\noffset=0\nlength=4\n', 3, "not UTF-8 text"),
])
def test_claims_that_crashed_or_were_accepted(tmp_path, text, line: int | None, msg: str) -> None:
    p = _claims(tmp_path, text)
    code, out, err = run_cli("regions", "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0", "--claims", p)
    _error(code, err, p, line, msg)


def test_a_claim_running_past_4096_inside_a_capability_is_cut_with_a_warning(tmp_path) -> None:
    # DOE sits at 0x190: offset 0x10 + 4000 bytes passes 4096 only once placed in the capability
    p = _claims(tmp_path, '[[claim]]\nkind="managed"\nowner="x"\nbdf="0d:00.0"\ncapability="doe"\noffset=0x10\n'
                          "length=4000\n")
    code, out, err = run_cli("regions", "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0", "--claims", p,
                             "--format", "json")
    assert code == 0 and "Traceback" not in err, err
    assert "runs past the 4096 bytes of config space: cut at 4096" in err
    mine = [r for r in json.loads(out) if r["owner"] == "x"]
    assert mine and all(r["start"] + r["length"] <= 4096 for r in mine)
    code, out, err = run_cli("check", SAMPLE, "--claims", p, "--fail-on", "managed")
    assert code == 1 and "Traceback" not in err


# ---- B. low items ----------------------------------------------------------------------------------
@pytest.mark.parametrize("footer,msg", [
    ({"lost": -5}, "footer: 'lost' must be a non-negative integer below 2**63, not -5"),
    ({"events": -3}, "footer: 'events' must be"),
    ({"lost": "x"}, "footer: 'lost' must be"),
    ({"lost": 10 ** 30}, "footer: 'lost' must be"),
])
def test_footer_negative_or_odd_counts_are_errors_naming_the_line(tmp_path, footer: dict, msg: str) -> None:
    header, body = _sample_lines()
    body = [ln for ln in body if b'"footer"' not in ln]
    body.append(json.dumps({"record": "footer", "ended_ns": 1, "events": 3, "lost": 0, **footer}).encode() + b"\n")
    p = _with_header(tmp_path, header, body=body)
    code, out, err = run_cli("check", p)
    _error(code, err, p, 1 + len(body), msg)


@pytest.mark.parametrize("extra,code,msg", [
    ({"size": 2, "data": "00000000"}, EXIT_ERROR, "'data' holds 4 bytes, more than 'size' (2)"),
    ({"size": 0, "data": "00"}, EXIT_ERROR, "'data' holds 1 bytes, more than 'size' (0)"),
    ({"size": 8, "data": "00000000"}, 1, ""),    # fewer: the live tracer keeps the first 64 bytes
    ({"size": 0, "data": ""}, 0, ""),            # write(fd, buf, 0): valid, touches no byte
])
@pytest.mark.parametrize("rows", [1, 3])  # 1: the line-by-line path names it; 3: pyarrow's fast path first
def test_data_length_and_size(tmp_path, extra: dict, code: int, msg: str, rows: int) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(_ev(ts_ns=0, data="00000000") * (rows - 1) + _ev(**extra))
    c, out, err = run_cli("check", str(p), "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0", "--driver",
                          "0d:00.0=cxl_pci")
    if code == EXIT_ERROR:
        _error(c, err, str(p), rows, msg)
    else:
        assert c == (1 if rows > 1 else code) and "Error" not in err, err


def test_size_1e12_as_an_integer_is_reported_past_4096(tmp_path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(_ev(size=10 ** 12))
    code, out, err = run_cli("check", str(p), "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0")
    assert code in (0, 1) and f"{p}:1: a write of 1000000000000 bytes at offset 0x198 reaches past" in err, err


def test_duplicate_dump_rows(tmp_path) -> None:
    lines = open(QEMU_CXL).read().splitlines()
    same = tmp_path / "same.txt"
    same.write_text("\n".join(lines[:3] + [lines[2]] + lines[3:]) + "\n")
    code, out, err = run_cli("devices", "--lspci-dump", str(same))
    assert code == 0 and f"Warning: {same}:4: offset 0x10 of 0000:0d:00.0 given again (same bytes as line 3)" in err
    other = tmp_path / "other.txt"
    other.write_text("\n".join(lines[:3] + ["10: 00 00 80 fe 00 00 00 00 04 00 81 fe 00 00 00 00"] + lines[3:]) + "\n")
    code, out, err = run_cli("devices", "--lspci-dump", str(other))
    _error(code, err, str(other), 4, "offset 0x10 of 0000:0d:00.0 given again with other bytes (first at line 3)")


@pytest.mark.parametrize("rows", [1, 2, 4])  # 16, 32 or 64 bytes (lspci -x): the capability list is not all there
def test_short_dump_config_size_reflects_what_it_holds(tmp_path, rows: int) -> None:
    lines = open(QEMU_CXL).read().splitlines()
    p = tmp_path / "short.txt"
    p.write_text("\n".join(lines[: 1 + rows]) + "\n")
    code, out, err = run_cli("devices", "--lspci-dump", str(p), "--format", "json")
    assert code == 0, err
    (dev,) = json.loads(out)
    assert dev["config_size"] is None  # not 256: a 256-byte claim would make the kernel refuse ext-space writes
    assert any("config size unknown" in a["message"] for a in dev["anomalies"])
    full = json.loads(run_cli("devices", "--lspci-dump", QEMU_CXL, "--format", "json")[1])
    assert full[0]["config_size"] == 4096


def test_bare_events_use_the_default_source(tmp_path) -> None:
    """`analyze bare-events.jsonl` with no source: the default, the sysfs tree (read-only), as --help says."""
    import cfgaudit
    from cfgaudit.hostpaths import HostPaths
    from cfgaudit.inventory import Sources

    fake = make_fake_tree(str(tmp_path))
    p = tmp_path / "bare.jsonl"
    p.write_bytes(_ev())
    before = open(fake["config"], "rb").read()
    a = cfgaudit.open_analysis([str(p)], Sources(paths=HostPaths(sysfs=fake["sysfs"])), kernel="6.2.0")
    rep = cfgaudit.run_analysis(a)
    assert any("embeds no device snapshot: analysing it against this machine's devices" in w for w in a.warnings)
    assert rep.summary["exclusive_writes"] == 1  # cxl_pci's DOE claim, from the fake tree
    assert open(fake["config"], "rb").read() == before
    code, out, err = run_cli("analyze", "--help")
    assert "default /sys/bus/pci" in " ".join(out.split())


def test_bdf_of_no_device_is_an_error(tmp_path, monkeypatch) -> None:
    import cfgaudit.live
    from cfgaudit.errors import UsageError
    from cfgaudit.hostpaths import HostPaths

    fake = make_fake_tree(str(tmp_path))

    class NoBackend:
        name = "none"

    monkeypatch.setattr(cfgaudit.live, "pick_backend", lambda name, paths: NoBackend())
    cfg = cfgaudit.live.TraceConfig(paths=HostPaths().with_(sysfs=fake["sysfs"], procfs=fake["procfs"]),
                                    bdfs=["ff:00.0"])
    with pytest.raises(UsageError, match=r"--bdf 0000:ff:00.0: no such device in "):
        cfgaudit.live.LiveRun(cfg)
    cfgaudit.live.LiveRun(cfgaudit.live.TraceConfig(paths=cfg.paths, bdfs=["0d:00.0"]))  # a device that is there


def test_missing_procfs_path_is_an_error(tmp_path) -> None:
    code, out, err = run_cli("trace", "--procfs-path", str(tmp_path / "nope"), "-d", "1")
    _error(code, err, f"Invalid value for '--procfs-path': {tmp_path / 'nope'}", None, "")
    assert "no such directory" in err


# ---- C. snapshot outputs: 0600, never through a symbolic link ---------------------------------------
def test_snapshot_output_is_0600_and_never_written_through_a_link(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        code, out, err = run_cli("snapshot", "--lspci-dump", QEMU_CXL, "-o", str(new))
        assert code == 0, err
        assert stat.S_IMODE(new.stat().st_mode) == 0o600  # config bytes non-root cannot read
        mine = tmp_path / "mine.json"
        mine.write_text("x" * 100000)
        mine.chmod(0o640)
        assert run_cli("snapshot", "--lspci-dump", QEMU_CXL, "-o", str(mine))[0] == 0
        assert stat.S_IMODE(mine.stat().st_mode) == 0o640 and json.loads(mine.read_text())["devices"]
    finally:
        os.umask(old)
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    target.chmod(0o644)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, out, err = run_cli("snapshot", "--lspci-dump", QEMU_CXL, "-o", str(link))
    _error(code, err, str(link), None, "symbolic link")
    assert target.read_text() == "keep me\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    before = os.stat("/dev/null")
    assert run_cli("snapshot", "--lspci-dump", QEMU_CXL, "-o", "/dev/null")[0] == 0  # written, never chmodded
    assert stat.S_IMODE(os.stat("/dev/null").st_mode) == stat.S_IMODE(before.st_mode)


def test_library_save_snapshot_refuses_a_link_and_makes_0600(tmp_path) -> None:
    from cfgaudit.errors import InputError
    from cfgaudit.regions import load_devices, save_snapshot

    ds = load_devices(lspci_dumps=[QEMU_CXL])
    target = tmp_path / "t"
    target.write_text("keep")
    (tmp_path / "l.json").symlink_to(target)
    with pytest.raises(InputError, match="symbolic link"):
        save_snapshot(ds, str(tmp_path / "l.json"))
    assert target.read_text() == "keep"
    save_snapshot(ds, str(tmp_path / "s.json"))
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) & 0o077 == 0
