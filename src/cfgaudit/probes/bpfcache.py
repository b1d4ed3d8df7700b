"""Compiled BPF programs cached on disk, so a live session starts without running clang (bcc's
compile takes seconds; loading what it made last time takes a fraction of one: issue 10).

An entry holds what bcc made of one program text, set of compiler flags and kernel: every map's
definition (type, sizes, flags, and bcc's descriptions of its key and value types, for the
Python tables) and every tracepoint program's instructions, with the map references in them
(``ld_imm64`` with ``BPF_PSEUDO_MAP_FD``) recorded as map indices. :func:`load_entry` creates
the maps, puts their fds into the instructions, loads every program (the kernel's verifier checks
each, as always), lets the caller fill its maps (``setup``), then attaches every program. The
result is a ``bcc.BPF`` without a compiled module whose tables are bcc's own table classes over
the fds, so a session uses it as it uses a compiled one (``bpf[b"traced"]``, ``open_ring_buffer``,
``ring_buffer_poll``, ``cleanup``).

Safety. The directory (:data:`DEFAULT_DIR`, or ``$CFGAUDIT_BPF_CACHE``; ``off`` turns the cache
off) must be a real directory owned by this user (root) with no group or other permissions,
under ancestors only root or this user can change (or sticky ones); otherwise it is refused and
the session compiles, with a warning. Entries are written to a temporary file in the directory
and renamed into place. Each carries its key and a SHA-256 of its body, and the SHA-256 of every
tracepoint format it was compiled against (checked at load). An entry that does not check out or
does not load is deleted; the program is then compiled and the entry saved again.

The key (:func:`cache_key`): this format, bcc's version, the kernel (release, version string,
machine), the program text, the headers in its ``-I`` directories, the compiler flags except
those that only size a map (the ring buffer's pages: given to :func:`load_entry` instead) and
whatever else the caller names (the kernel headers used).

bcc is never imported here: the caller passes its module (``bccutil.import_bcc()``).
"""
from __future__ import annotations

import base64
import ctypes as ct
import hashlib
import json
import os
import stat
import struct
import tempfile
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = ["FORMAT", "ENV", "DEFAULT_DIR", "CacheError", "cache_dir", "dir_problem", "prepare_dir", "cache_key",
           "entry_path", "encode_entry", "decode_entry", "write_entry", "read_entry", "remove_entry", "prune",
           "compile_program", "attach_compiled", "make_entry", "load_entry", "detach_tracepoints",
           "program_instructions", "tracepoint_of"]

FORMAT = 1
ENV = "CFGAUDIT_BPF_CACHE"
DEFAULT_DIR = "/var/cache/cfgaudit/bpf"
OFF = ("", "off", "no", "none", "0")
MAGIC = b"cfgaudit-bpf-cache"
SUFFIX = ".entry"
KEEP = 32  # entries kept in a directory (the newest; a new kernel or program version adds one)

# include/uapi/linux/bpf.h
LD_IMM64 = 0x18                 # BPF_LD | BPF_IMM | BPF_DW: a 16-byte instruction
BPF_PSEUDO_MAP_FD = 1
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY = 1, 2, 5, 6
BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_RINGBUF = 9, 27
# Map types an entry may hold -> the name of bcc's table class for them (bcc/table.py).
TABLE_CLASSES = {BPF_MAP_TYPE_HASH: "HashTable", BPF_MAP_TYPE_ARRAY: "Array", BPF_MAP_TYPE_PERCPU_HASH: "PerCpuHash",
                 BPF_MAP_TYPE_PERCPU_ARRAY: "PerCpuArray", BPF_MAP_TYPE_LRU_HASH: "LruHash",
                 BPF_MAP_TYPE_RINGBUF: "RingBuf"}
TRACEPOINT_PREFIX = "tracepoint__"
VERIFIER_LOG_BYTES = 1 << 20
LOAD_THREADS = max(1, min(4, os.cpu_count() or 1))


class CacheError(Exception):
    """A cache directory or entry that cannot be used: the caller compiles instead."""


# --------------------------------------------------------------------------------------
# The directory
# --------------------------------------------------------------------------------------
def cache_dir(setting: str | None = None) -> str | None:
    """The cache directory: ``setting`` if given, else ``$CFGAUDIT_BPF_CACHE``, else
    :data:`DEFAULT_DIR`; ``None`` when the value is ``off`` (or empty)."""
    v = os.environ.get(ENV, DEFAULT_DIR) if setting is None else setting
    if v.strip().lower() in OFF:
        return None
    return os.path.abspath(v)


def _unsafe_ancestor(path: str, uid: int) -> str | None:
    """Why a directory above ``path`` lets someone else replace what is below it, or ``None``."""
    d = os.path.dirname(os.path.realpath(path))
    while True:
        try:
            st = os.stat(d)
        except OSError as err:
            return f"{d}: {err.strerror}"
        if st.st_uid not in (0, uid):
            return f"{d} is owned by uid {st.st_uid}"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return f"{d} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def dir_problem(path: str) -> str | None:
    """Why ``path`` is not a safe cache directory, or ``None``: it must be a directory (not a
    symbolic link) owned by this user, with no group or other permissions (0700), below
    directories that only root or this user can change (or sticky ones, like /tmp). Only looks."""
    uid = os.geteuid()
    try:
        st = os.lstat(path)
    except OSError as err:
        return f"{path}: {err.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != uid:
        return f"{path} is owned by uid {st.st_uid}, not {uid}"
    if st.st_mode & 0o077:
        return f"{path} has mode {stat.S_IMODE(st.st_mode):04o}, not 0700"
    return _unsafe_ancestor(path, uid)


def prepare_dir(path: str) -> str | None:
    """Make the cache directory (mode 0700; missing parents 0755) if it is not there, then say
    why it cannot be used (:func:`dir_problem`), or ``None``. An existing directory is never
    changed: a wrong owner or mode is refused, not repaired."""
    if not os.path.lexists(path):
        missing = []
        d = os.path.dirname(path)
        while d != os.path.dirname(d) and not os.path.lexists(d):
            missing.append(d)
            d = os.path.dirname(d)
        try:
            for d in reversed(missing):  # each at 0755 at most (os.makedirs gives parents 0777 & ~umask)
                try:
                    os.mkdir(d, 0o755)
                except FileExistsError:
                    pass
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # made by a session starting at the same time: checked below like any other
        except OSError as err:
            return f"cannot create {path}: {err.strerror}"
    return dir_problem(path)


# --------------------------------------------------------------------------------------
# Keys and entries
# --------------------------------------------------------------------------------------
def cache_key(bcc_version: str, text: bytes, cflags: Sequence[str], sizing: Iterable[str] = (),
              extra: Sequence[str] = ()) -> str:
    """The key of a compile: see the module docstring. ``sizing``: names of -D constants that
    only size a map (left out); ``extra``: more strings the bytecode depends on."""
    h = hashlib.sha256()

    def part(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    u = os.uname()
    for s in (MAGIC.decode(), str(FORMAT), bcc_version, u.release, u.version, u.machine, *extra):
        part(s.encode())
    part(text)
    skip = tuple(f"-D{n}=" for n in sizing)
    for flag in cflags:
        if flag.startswith(skip):
            continue
        part(flag.encode())
        if flag.startswith("-I"):  # the headers the program can include from there
            d = flag[2:]
            for name in sorted(os.listdir(d)):
                if name.endswith(".h"):
                    with open(os.path.join(d, name), "rb") as fh:
                        part(name.encode())
                        part(fh.read())
    return h.hexdigest()


def entry_path(directory: str, key: str) -> str:
    return os.path.join(directory, key + SUFFIX)


def encode_entry(key: str, entry: Mapping[str, Any]) -> bytes:
    """An entry as file bytes: a header line (magic, format, key, SHA-256 of the body), then JSON."""
    body = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
    return b"%s %d %s %s\n" % (MAGIC, FORMAT, key.encode(), hashlib.sha256(body).hexdigest().encode()) + body


def _ints(d: Mapping[str, Any], names: Iterable[str]) -> bool:
    return all(isinstance(d.get(n), int) and not isinstance(d.get(n), bool) for n in names)


def _valid(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("license"), str) or not _ints(entry, ["kern_version"]):
        return False
    maps, progs = entry.get("maps"), entry.get("progs")
    if not isinstance(maps, list) or not isinstance(progs, list) or not progs:
        return False
    for m in maps:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or m.get("type") not in TABLE_CLASSES or \
                not _ints(m, ["key_size", "leaf_size", "max_entries", "flags"]) or \
                not isinstance(m.get("key_desc"), str) or not isinstance(m.get("leaf_desc"), str):
            return False
    for p in progs:
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) for k in
                                              ("name", "category", "event", "insns", "format_sha256")):
            return False
        relocs = p.get("relocs")
        if not isinstance(relocs, list) or not all(
                isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) and 0 <= r[1] < len(maps)
                for r in relocs):
            return False
    return True


def decode_entry(data: bytes, key: str) -> dict[str, Any]:
    """The entry in file bytes made by :func:`encode_entry` for ``key``; :class:`CacheError`
    when they are not that (another format or key, a checksum that does not match, bad JSON)."""
    head, nl, body = data.partition(b"\n")
    parts = head.split(b" ")
    if not nl or len(parts) != 4 or parts[0] != MAGIC:
        raise CacheError("not a cache entry")
    if parts[1] != str(FORMAT).encode():
        raise CacheError(f"entry format {parts[1].decode(errors='replace')}, not {FORMAT}")
    if parts[2] != key.encode():
        raise CacheError("entry made for another key")
    if hashlib.sha256(body).hexdigest().encode() != parts[3]:
        raise CacheError("checksum does not match: corrupted")
    try:
        entry = json.loads(body)
    except ValueError as err:
        raise CacheError(f"bad JSON: {err}") from None
    if not _valid(entry):
        raise CacheError("entry does not have the expected fields")
    return entry


def write_entry(directory: str, key: str, entry: Mapping[str, Any]) -> str:
    """Save ``entry`` atomically (a temporary file in ``directory``, flushed, then renamed over
    the entry): a reader sees the old entry, the new one, or none, never part of one."""
    data = encode_entry(key, entry)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        path = entry_path(directory, key)
        os.rename(tmp, path)  # atomic over an existing entry (POSIX rename)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    prune(directory, keep=KEEP)
    return path


def prune(directory: str, keep: int = KEEP) -> list[str]:
    """Delete all but the ``keep`` newest entries (by modification time; entries of old kernels
    and program versions are never used again). Returns the names deleted."""
    found = []
    for name in os.listdir(directory):
        if name.endswith(SUFFIX) and not name.startswith("."):
            try:
                found.append((os.lstat(os.path.join(directory, name)).st_mtime_ns, name))
            except OSError:
                continue
    gone = [name for _, name in sorted(found, reverse=True)[keep:]]
    for name in gone:
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass
    return gone


def read_entry(directory: str, key: str) -> dict[str, Any] | None:
    """The entry for ``key``, ``None`` when there is none; :class:`CacheError` when there is
    one that cannot be used (not a regular file of this user, writable by others, corrupted)."""
    path = entry_path(directory, key)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CacheError(f"{path}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise CacheError(f"{path} is not a regular file of uid {os.geteuid()} that only it can write")
        return decode_entry(fh.read(), key)


def remove_entry(directory: str, key: str) -> None:
    try:
        os.unlink(entry_path(directory, key))
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------
# libbcc calls bcc's Python module does not declare
# --------------------------------------------------------------------------------------
_LIBS: dict[str, Any] = {}
_LIBS_LOCK = threading.Lock()


def _libbcc(bcc: Any) -> Any:
    """A ctypes handle of its own on bcc's libbcc (so the argtypes set here never touch bcc's)."""
    name = bcc.lib._name
    with _LIBS_LOCK:
        lib = _LIBS.get(name)
        if lib is None:
            lib = ct.CDLL(name, use_errno=True)
            size, num = ct.c_size_t, [ct.c_void_p, ct.c_size_t]
            for fn, res in (("bpf_table_name", ct.c_char_p), ("bpf_table_fd_id", ct.c_int),
                            ("bpf_table_type_id", ct.c_int), ("bpf_table_key_size_id", size),
                            ("bpf_table_leaf_size_id", size), ("bpf_table_max_entries_id", size),
                            ("bpf_table_flags_id", ct.c_int), ("bpf_table_key_desc_id", ct.c_char_p),
                            ("bpf_table_leaf_desc_id", ct.c_char_p)):
                getattr(lib, fn).restype = res
                getattr(lib, fn).argtypes = num
            lib.bpf_num_tables.restype = size
            lib.bpf_num_tables.argtypes = [ct.c_void_p]
            lib.bcc_create_map.restype = ct.c_int
            lib.bcc_create_map.argtypes = [ct.c_int, ct.c_char_p, ct.c_int, ct.c_int, ct.c_int, ct.c_int]
            lib.bcc_prog_load.restype = ct.c_int
            lib.bcc_prog_load.argtypes = [ct.c_int, ct.c_char_p, ct.c_void_p, ct.c_int, ct.c_char_p, ct.c_uint,
                                          ct.c_int, ct.c_char_p, ct.c_uint]
            lib.bpf_attach_tracepoint.restype = ct.c_int
            lib.bpf_attach_tracepoint.argtypes = [ct.c_int, ct.c_char_p, ct.c_char_p]
            lib.bpf_close_perf_event_fd.restype = ct.c_int
            lib.bpf_close_perf_event_fd.argtypes = [ct.c_int]
            _LIBS[name] = lib
    return lib


# --------------------------------------------------------------------------------------
# Compiling (bcc) and making an entry of it
# --------------------------------------------------------------------------------------
_CLASSES: dict[str, type] = {}


def _classes(bcc: Any) -> tuple[type, type]:
    """(Compiled, Cached): bcc.BPF subclasses, made once per bcc module. Compiled: bcc's compile,
    with loading and attaching left to :func:`attach_compiled`. Cached: built by
    :func:`load_entry`, without a module."""
    if "compiled" not in _CLASSES:
        class Compiled(bcc.BPF):
            def _trace_autoload(self) -> None:
                """Not while compiling: the caller fills its maps first (:func:`attach_compiled`)."""

            def attach_all(self) -> None:
                super()._trace_autoload()

        class Cached(bcc.BPF):
            def __init__(self) -> None:  # bcc.BPF's attributes, with nothing compiled
                self.kprobe_fds: dict = {}
                self.uprobe_fds: dict = {}
                self.tracepoint_fds: dict = {}
                self.raw_tracepoint_fds: dict = {}
                self.kfunc_entry_fds: dict = {}
                self.kfunc_exit_fds: dict = {}
                self.lsm_fds: dict = {}
                self.perf_buffers: dict = {}
                self.open_perf_events: dict = {}
                self._ringbuf_manager = None
                self.tracefile = None
                self.debug = 0
                self.funcs: dict = {}
                self.tables: dict = {}
                self.module = None
                self.map_fds: list[int] = []

            def cleanup(self) -> None:
                """What bcc's cleanup does for what this object holds (tracepoints, programs,
                the ring buffer), then the maps, which bcc would have closed with its module.
                Self-contained: it does not depend on the attributes bcc's cleanup walks."""
                for tp, fd in list(self.tracepoint_fds.items()):
                    bcc.lib.bpf_close_perf_event_fd(fd)
                    del self.tracepoint_fds[tp]
                for name, fn in list(self.funcs.items()):
                    os.close(fn.fd)
                    del self.funcs[name]
                if self._ringbuf_manager:
                    bcc.lib.bpf_free_ringbuf(self._ringbuf_manager)
                    self._ringbuf_manager = None
                fds, self.map_fds = self.map_fds, []
                for fd in fds:
                    os.close(fd)

        _CLASSES["compiled"], _CLASSES["cached"] = Compiled, Cached
    return _CLASSES["compiled"], _CLASSES["cached"]


def compile_program(bcc: Any, text: bytes, cflags: Sequence[str]) -> Any:
    """bcc's compile of ``text`` (maps made, nothing loaded or attached yet): a ``bcc.BPF``."""
    compiled, _ = _classes(bcc)
    return compiled(text=text, cflags=list(cflags))


def attach_compiled(bpf: Any) -> None:
    """Load and attach the ``tracepoint__``/``kprobe__`` functions of :func:`compile_program`'s
    result, as bcc does when it is not told to wait."""
    bpf.attach_all()


def tracepoint_of(func: str) -> tuple[str, str] | None:
    """(category, event) of bcc's ``tracepoint__CATEGORY__EVENT`` function, else ``None``."""
    if not func.startswith(TRACEPOINT_PREFIX):
        return None
    cat, sep, ev = func[len(TRACEPOINT_PREFIX):].partition("__")
    return (cat, ev) if sep and cat and ev else None


def _format_sha256(tracefs: str, cat: str, ev: str) -> str:
    try:
        with open(os.path.join(tracefs, "events", cat, ev, "format"), "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError as err:
        raise CacheError(f"tracepoint {cat}:{ev}: {err.strerror}") from None


def program_instructions(bpf: Any, name: str, fd_to_index: Mapping[int, int] | None = None
                         ) -> tuple[bytes, list[list[int]]]:
    """A compiled function's instructions with every map fd in them replaced by -1, and
    [instruction index, map index] of each (``fd_to_index``: map fd -> index; without it the
    indices are -1: enough to compare two compiles). :class:`CacheError` on a reference this
    format cannot carry (a map value, BTF object, ...)."""
    insns = bytearray(bpf.dump_func(name.encode()))
    if len(insns) % 8:
        raise CacheError(f"{name}: {len(insns)} bytes of instructions")
    relocs: list[list[int]] = []
    k = 0
    while k < len(insns):
        if insns[k] == LD_IMM64:
            src = insns[k + 1] >> 4
            if src == BPF_PSEUDO_MAP_FD:
                fd = struct.unpack_from("<i", insns, k + 4)[0]
                if fd_to_index is not None and fd not in fd_to_index:
                    raise CacheError(f"{name}: instruction {k // 8} refers to fd {fd}, not a map of the program")
                relocs.append([k // 8, -1 if fd_to_index is None else fd_to_index[fd]])
                struct.pack_into("<i", insns, k + 4, -1)
            elif src:
                raise CacheError(f"{name}: instruction {k // 8} is a 64-bit load of kind {src}")
            k += 16
        else:
            k += 8
    return bytes(insns), relocs


def make_entry(bcc: Any, bpf: Any, tracefs: str) -> dict[str, Any]:
    """An entry describing :func:`compile_program`'s result (before it is attached); tracepoint
    programs only (:class:`CacheError` otherwise: such a program is not cached)."""
    lib, mod = _libbcc(bcc), bpf.module
    maps: list[dict[str, Any]] = []
    fd_to_index: dict[int, int] = {}
    for i in range(lib.bpf_num_tables(mod)):
        mtype = lib.bpf_table_type_id(mod, i)
        name = (lib.bpf_table_name(mod, i) or b"").decode()
        if mtype not in TABLE_CLASSES:
            raise CacheError(f"map {name}: type {mtype} is not cached")
        fd_to_index[lib.bpf_table_fd_id(mod, i)] = i
        maps.append({"name": name, "type": mtype, "key_size": lib.bpf_table_key_size_id(mod, i),
                     "leaf_size": lib.bpf_table_leaf_size_id(mod, i),
                     "max_entries": lib.bpf_table_max_entries_id(mod, i), "flags": lib.bpf_table_flags_id(mod, i),
                     "key_desc": (lib.bpf_table_key_desc_id(mod, i) or b"").decode(),
                     "leaf_desc": (lib.bpf_table_leaf_desc_id(mod, i) or b"").decode()})
    progs: list[dict[str, Any]] = []
    for i in range(bcc.lib.bpf_num_functions(mod)):
        name = bcc.lib.bpf_function_name(mod, i).decode()
        tp = tracepoint_of(name)
        if tp is None:
            raise CacheError(f"function {name} is not a tracepoint program")
        insns, relocs = program_instructions(bpf, name, fd_to_index)
        progs.append({"name": name, "category": tp[0], "event": tp[1], "insns": base64.b64encode(insns).decode(),
                      "relocs": relocs, "format_sha256": _format_sha256(tracefs, *tp)})
    if not progs:
        raise CacheError("no programs")
    return {"license": bcc.lib.bpf_module_license(mod).decode(), "kern_version": bcc.lib.bpf_module_kern_version(mod),
            "maps": maps, "progs": progs}


# --------------------------------------------------------------------------------------
# Loading an entry
# --------------------------------------------------------------------------------------
def _load_program(lib: Any, p: Mapping[str, Any], map_fds: Sequence[int], license: bytes, kern_version: int) -> int:
    insns = bytearray(base64.b64decode(p["insns"], validate=True))
    for index, m in p["relocs"]:
        if not 0 <= index * 8 + 8 <= len(insns) or insns[index * 8] != LD_IMM64:
            raise CacheError(f"{p['name']}: bad map reference at instruction {index}")
        struct.pack_into("<i", insns, index * 8 + 4, map_fds[m])
    if not insns or len(insns) % 8:
        raise CacheError(f"{p['name']}: {len(insns)} bytes of instructions")
    buf = (ct.c_ubyte * len(insns)).from_buffer(insns)
    name = p["name"].encode()
    fd = lib.bcc_prog_load(BPF_PROG_TYPE_TRACEPOINT, name, buf, len(insns), license, kern_version, 0, None, 0)
    if fd < 0:
        err = os.strerror(ct.get_errno())
        log = ct.create_string_buffer(VERIFIER_LOG_BYTES)
        again = lib.bcc_prog_load(BPF_PROG_TYPE_TRACEPOINT, name, buf, len(insns), license, kern_version, 1, log,
                                  len(log))
        if again >= 0:
            os.close(again)
        tail = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise CacheError(f"program {p['name']} does not load: {err}" + (f" ({' / '.join(tail)})" if tail else ""))
    return fd


def _load_programs(bcc: Any, lib: Any, bpf: Any, entry: Mapping[str, Any]) -> None:
    """Load every program of ``entry`` into ``bpf.funcs``, :data:`LOAD_THREADS` at a time: the
    verifier runs inside the bpf() call, without the GIL, and one program (sched_process_fork,
    with its loop over the fd table) takes as long as a dozen others."""
    progs = list(entry["progs"])
    license, kv = entry["license"].encode(), int(entry["kern_version"])
    fds: list[int | None] = [None] * len(progs)
    errors: list[BaseException] = []
    todo = iter(range(len(progs)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = None if errors else next(todo, None)
            if i is None:
                return
            try:
                fds[i] = _load_program(lib, progs[i], bpf.map_fds, license, kv)
            except BaseException as err:  # handed to the caller's thread below
                with lock:
                    errors.append(err)
                return

    threads = [threading.Thread(target=work, name="cfgaudit-bpf-load") for _ in range(min(LOAD_THREADS, len(progs)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p, fd in zip(progs, fds):  # cleanup() closes them, also when one failed
        if fd is not None:
            bpf.funcs[p["name"].encode()] = bcc.BPF.Function(bpf, p["name"].encode(), fd)
    if errors:
        raise errors[0]


def load_entry(bcc: Any, entry: Mapping[str, Any], tracefs: str, max_entries: Mapping[str, int] | None = None,
               setup: Callable[[Any], None] | None = None) -> Any:
    """Create the entry's maps (``max_entries``: sizes by map name, e.g. the ring buffer's),
    load its programs, call ``setup(bpf)`` (fill maps before anything runs), attach every
    program. Returns a ``bcc.BPF``; :class:`CacheError` when the entry does not fit this kernel
    (tracepoint formats changed, a program the verifier refuses, ...); nothing stays open then."""
    for p in entry["progs"]:  # the layouts the programs' offsets were compiled against
        if _format_sha256(tracefs, p["category"], p["event"]) != p["format_sha256"]:
            raise CacheError(f"tracepoint {p['category']}:{p['event']} changed its format")
    lib = _libbcc(bcc)
    _, cached = _classes(bcc)
    bpf = cached()
    try:
        for i, m in enumerate(entry["maps"]):
            n = (max_entries or {}).get(m["name"], m["max_entries"])
            fd = lib.bcc_create_map(m["type"], m["name"].encode(), m["key_size"], m["leaf_size"], n, m["flags"])
            if fd < 0:
                raise CacheError(f"map {m['name']}: {os.strerror(ct.get_errno())}")
            bpf.map_fds.append(fd)
            try:
                key = bcc.BPF._decode_table_type(json.loads(m["key_desc"])) if m["key_desc"] else None
                leaf = bcc.BPF._decode_table_type(json.loads(m["leaf_desc"]))
            except Exception as err:  # bcc raises bare Exception on a description it cannot read
                raise CacheError(f"map {m['name']}: type description: {err}") from None
            cls = getattr(bcc.table, TABLE_CLASSES[m["type"]])
            name = m["name"].encode()
            t = cls(bpf, i, fd, key, leaf, name) if m["type"] == BPF_MAP_TYPE_RINGBUF else cls(bpf, i, fd, key, leaf)
            t.ttype, t.flags, t.max_entries = m["type"], m["flags"], n  # bcc reads these from its module
            bpf.tables[name] = t
        _load_programs(bcc, lib, bpf, entry)
        if setup is not None:
            setup(bpf)
        for p in entry["progs"]:  # every program is loaded and set up before the first runs
            fd = bpf.funcs[p["name"].encode()].fd
            pfd = lib.bpf_attach_tracepoint(fd, p["category"].encode(), p["event"].encode())
            if pfd < 0:
                raise CacheError(f"cannot attach to tracepoint {p['category']}:{p['event']}")
            bpf.tracepoint_fds[f"{p['category']}:{p['event']}".encode()] = pfd
    except BaseException:
        bpf.cleanup()
        raise
    return bpf


# --------------------------------------------------------------------------------------
# Ending
# --------------------------------------------------------------------------------------
def detach_tracepoints(bcc: Any, bpf: Any) -> None:
    """Close every tracepoint attachment of ``bpf`` at once, one thread each. Each close waits
    for the kernel to retire the program from the tracepoint (~75 ms on the 6.18 VM); in turn
    that was 2.8 s for the syscall program's 39. bcc's ``cleanup()`` does the rest."""
    fds = dict(bpf.tracepoint_fds)
    if not fds:
        return
    lib = _libbcc(bcc)
    threads = [threading.Thread(target=lib.bpf_close_perf_event_fd, args=(fd,), name="cfgaudit-detach")
               for fd in fds.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tp in fds:
        del bpf.tracepoint_fds[tp]
