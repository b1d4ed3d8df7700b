"""The BPF bytecode cache without bcc or root: keys, entries, atomic writes, the directory checks
(probes/bpfcache.py). Loading entries into the kernel: tests/live/test_live_bpfcache.py."""
from __future__ import annotations

import base64
import os
import struct

import pytest

from cfgaudit.probes import bpfcache
from cfgaudit.probes.session import LiveOptions

KEY = "ab" * 32


def entry(insns: bytes = b"\x95" + b"\0" * 7) -> dict:
    return {"license": "GPL", "kern_version": 0,
            "maps": [{"name": "events", "type": 27, "key_size": 0, "leaf_size": 0, "max_entries": 4096,
                      "flags": 0, "key_desc": "", "leaf_desc": "\"int\""}],
            "progs": [{"name": "tracepoint__syscalls__sys_enter_openat", "category": "syscalls",
                       "event": "sys_enter_openat", "insns": base64.b64encode(insns).decode(), "relocs": [],
                       "format_sha256": "0" * 64}]}


@pytest.fixture
def cache(tmp_path) -> str:
    d = tmp_path / "bpf"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)
    return str(d)


# ------------------------------------------------------------------------- where
def test_cache_dir_setting_env_default_and_off(monkeypatch) -> None:
    monkeypatch.delenv(bpfcache.ENV, raising=False)
    assert bpfcache.cache_dir() == bpfcache.DEFAULT_DIR == "/var/cache/cfgaudit/bpf"
    monkeypatch.setenv(bpfcache.ENV, "/tmp/x")
    assert bpfcache.cache_dir() == "/tmp/x"
    assert bpfcache.cache_dir("/y/z") == "/y/z"
    for off in ("off", "OFF", "", "none", "0"):
        monkeypatch.setenv(bpfcache.ENV, off)
        assert bpfcache.cache_dir() is None
    assert bpfcache.cache_dir("off") is None
    assert LiveOptions().bpf_cache is None


# ------------------------------------------------------------------------- keys
def test_key_follows_what_the_bytecode_depends_on(tmp_path) -> None:
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "a.h").write_text("#define A 1\n")
    flags = [f"-I{inc}", "-DFOLLOW=0", "-DRINGBUF_PAGES=4096"]
    k = bpfcache.cache_key("0.26.0", b"text", flags, sizing=["RINGBUF_PAGES"])
    assert len(k) == 64 and k == bpfcache.cache_key("0.26.0", b"text", flags, sizing=["RINGBUF_PAGES"])
    # the ring buffer's size is set when the map is made: not part of the key
    assert k == bpfcache.cache_key("0.26.0", b"text", [*flags[:2], "-DRINGBUF_PAGES=8"], sizing=["RINGBUF_PAGES"])
    others = {
        bpfcache.cache_key("0.30.0", b"text", flags, sizing=["RINGBUF_PAGES"]),
        bpfcache.cache_key("0.26.0", b"text2", flags, sizing=["RINGBUF_PAGES"]),
        bpfcache.cache_key("0.26.0", b"text", [flags[0], "-DFOLLOW=1", flags[2]], sizing=["RINGBUF_PAGES"]),
        bpfcache.cache_key("0.26.0", b"text", flags, sizing=["RINGBUF_PAGES"], extra=["headers:2"]),
        bpfcache.cache_key("0.26.0", b"text", flags),  # RINGBUF_PAGES not a sizing flag: in the key
    }
    (inc / "a.h").write_text("#define A 2\n")  # a header the program includes changed
    others.add(bpfcache.cache_key("0.26.0", b"text", flags, sizing=["RINGBUF_PAGES"]))
    assert k not in others and len(others) == 6


# ------------------------------------------------------------------------- entries
def test_entry_round_trip_and_checks() -> None:
    e = entry()
    data = bpfcache.encode_entry(KEY, e)
    assert data.startswith(b"cfgaudit-bpf-cache 1 " + KEY.encode() + b" ")
    assert bpfcache.decode_entry(data, KEY) == e
    with pytest.raises(bpfcache.CacheError, match="another key"):
        bpfcache.decode_entry(data, "cd" * 32)
    flipped = bytearray(data)
    flipped[-10] ^= 1
    with pytest.raises(bpfcache.CacheError, match="corrupted"):
        bpfcache.decode_entry(bytes(flipped), KEY)
    for bad in (b"", b"garbage", data[:40], data.replace(b" 1 ", b" 9 ", 1)):
        with pytest.raises(bpfcache.CacheError):
            bpfcache.decode_entry(bad, KEY)
    # a consistent file with fields that are not an entry's
    for broken in ({**e, "maps": "x"}, {**e, "progs": []}, {**e, "kern_version": "0"},
                   {**e, "maps": [{**e["maps"][0], "type": 4}]},  # a map type the cache does not hold
                   {**e, "progs": [{**e["progs"][0], "relocs": [[0, 1]]}]}):  # a map that is not there
        with pytest.raises(bpfcache.CacheError, match="expected fields"):
            bpfcache.decode_entry(bpfcache.encode_entry(KEY, broken), KEY)


def test_write_is_atomic_and_read_checks_the_file(cache, monkeypatch) -> None:
    assert bpfcache.read_entry(cache, KEY) is None
    path = bpfcache.write_entry(cache, KEY, entry())
    assert path == os.path.join(cache, KEY + ".entry") and bpfcache.read_entry(cache, KEY) == entry()
    assert os.listdir(cache) == [KEY + ".entry"] and os.stat(path).st_mode & 0o777 == 0o600
    # a write that fails half-way leaves the old entry and no temporary file
    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        bpfcache.write_entry(cache, KEY, entry(b"\x95" + b"\0" * 15))
    monkeypatch.undo()
    assert os.listdir(cache) == [KEY + ".entry"] and bpfcache.read_entry(cache, KEY) == entry()
    # others able to write it, or a link in its place: refused
    os.chmod(path, 0o666)
    with pytest.raises(bpfcache.CacheError, match="only it can write"):
        bpfcache.read_entry(cache, KEY)
    os.chmod(path, 0o600)
    os.rename(path, path + ".real")
    os.symlink(path + ".real", path)
    with pytest.raises(bpfcache.CacheError):
        bpfcache.read_entry(cache, KEY)
    bpfcache.remove_entry(cache, KEY)
    bpfcache.remove_entry(cache, KEY)  # gone already: fine
    assert bpfcache.read_entry(cache, KEY) is None


def test_old_entries_are_pruned(cache) -> None:
    for i in range(5):
        path = bpfcache.write_entry(cache, f"{i:064x}", entry())
        os.utime(path, ns=(i * 10**9, i * 10**9))
    assert bpfcache.prune(cache, keep=2) == [f"{i:064x}.entry" for i in (2, 1, 0)]
    assert sorted(os.listdir(cache)) == [f"{i:064x}.entry" for i in (3, 4)]


# ------------------------------------------------------------------------- the directory
def test_directory_must_be_private(tmp_path, cache, monkeypatch) -> None:
    assert bpfcache.dir_problem(cache) is None
    os.chmod(cache, 0o755)
    assert "mode 0755, not 0700" in bpfcache.dir_problem(cache)
    assert "mode 0755" in bpfcache.prepare_dir(cache)  # refused, never repaired
    assert os.stat(cache).st_mode & 0o777 == 0o755
    os.chmod(cache, 0o700)
    link = tmp_path / "link"
    link.symlink_to(cache)
    assert "symbolic link" in bpfcache.dir_problem(str(link))
    (tmp_path / "file").write_text("")
    assert "not a directory" in bpfcache.dir_problem(str(tmp_path / "file"))
    assert bpfcache.dir_problem(str(tmp_path / "missing")) is not None
    # owned by someone else
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 4242)
    assert f"owned by uid {me}, not {me + 4242}" in bpfcache.dir_problem(cache)
    monkeypatch.undo()
    # under a directory others can write (not sticky): they could swap the cache for their own
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "bpf").mkdir(mode=0o700)
    assert "writable by others" in bpfcache.dir_problem(str(shared / "bpf"))
    os.chmod(shared, 0o1777)  # sticky, like /tmp: fine
    assert bpfcache.dir_problem(str(shared / "bpf")) is None


def test_prepare_makes_a_private_directory(tmp_path) -> None:
    old = os.umask(0)
    try:
        d = tmp_path / "var" / "cache" / "bpf"
        assert bpfcache.prepare_dir(str(d)) is None
    finally:
        os.umask(old)
    assert os.stat(d).st_mode & 0o777 == 0o700 and os.stat(d.parent).st_mode & 0o777 == 0o755
    assert bpfcache.prepare_dir(str(d)) is None


# ------------------------------------------------------------------------- instructions
class FakeBPF:
    def __init__(self, insns: bytes) -> None:
        self.insns = insns

    def dump_func(self, name: bytes) -> bytes:
        return self.insns


def ld_imm64(src: int, imm: int) -> bytes:
    return struct.pack("<BBhi", 0x18, (src << 4) | 1, 0, imm) + struct.pack("<BBhi", 0, 0, 0, 0)


def test_map_references_become_indices() -> None:
    exit_insn = struct.pack("<BBhi", 0x95, 0, 0, 0)
    mov = struct.pack("<BBhi", 0xB7, 0, 0, 7)
    insns = mov + ld_imm64(1, 11) + mov + ld_imm64(1, 12) + ld_imm64(0, 99) + exit_insn
    out, relocs = bpfcache.program_instructions(FakeBPF(insns), "f", {11: 0, 12: 3})
    assert relocs == [[1, 0], [4, 3]] and len(out) == len(insns)
    assert struct.unpack_from("<i", out, 8 + 4)[0] == -1 and struct.unpack_from("<i", out, 32 + 4)[0] == -1
    assert out[48 + 4:48 + 8] == struct.pack("<i", 99)  # a plain 64-bit constant is left alone
    assert bpfcache.program_instructions(FakeBPF(insns), "f")[1] == [[1, -1], [4, -1]]
    with pytest.raises(bpfcache.CacheError, match="not a map of the program"):
        bpfcache.program_instructions(FakeBPF(insns), "f", {11: 0})
    with pytest.raises(bpfcache.CacheError, match="64-bit load of kind 2"):  # a map value: not carried
        bpfcache.program_instructions(FakeBPF(ld_imm64(2, 11) + exit_insn), "f", {11: 0})


def test_tracepoint_names() -> None:
    assert bpfcache.tracepoint_of("tracepoint__syscalls__sys_enter_openat") == ("syscalls", "sys_enter_openat")
    assert bpfcache.tracepoint_of("tracepoint__sched__sched_process_fork") == ("sched", "sched_process_fork")
    assert bpfcache.tracepoint_of("on_write_byte") is None and bpfcache.tracepoint_of("tracepoint__x") is None
