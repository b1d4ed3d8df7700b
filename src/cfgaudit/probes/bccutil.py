"""What the bcc backends share besides the session: finding bcc, the host checks and preparation
(kernel headers, tracefs), the BPF program text and its -D constants, and the record dtypes.

bcc is loaded lazily (:func:`import_bcc`), never by editing ``sys.path``: a virtualenv does not see
the distribution's dist-packages, so the package is loaded from its file with importlib.
Detection helpers only look; :func:`prepare_host` is the one function that mounts anything.
Sizes are bytes unless named otherwise (``buffer_pages``: 4 KiB pages).
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import subprocess
import sys
from types import ModuleType
from typing import Iterable, Mapping

import numpy as np

from ..errors import BackendError
from ..events import RECORD_LAYOUTS, record_fields, record_size
from ..hostpaths import DEFAULT, HostPaths

__all__ = ["BPF_DIR", "COMMON_HEADER", "BCC_HINT", "BCC_DIRS", "import_bcc", "bcc_problem", "kernel_headers",
           "headers_problem", "tracefs_problem", "tracefs_note", "mount_plan", "prepare_host", "program_text",
           "define_flags", "record_dtype", "check_buffer_pages"]

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")
COMMON_HEADER = "cfgaudit_common.bpf.h"
BCC_HINT = ("install bcc's Python module from the distribution: 'apt install python3-bpfcc' (Debian/Ubuntu) "
            "or 'dnf install python3-bcc' (Fedora/RHEL); PyPI's package named 'bcc' is unrelated")
# Where distributions put bcc's Python package (globs, in order).
BCC_DIRS = ("/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages",
            "/usr/lib64/python3*/site-packages")


# --------------------------------------------------------------------------------------
# bcc
# --------------------------------------------------------------------------------------
def _checked(mod: ModuleType) -> ModuleType:
    if not hasattr(mod, "BPF"):
        raise BackendError(f"the 'bcc' module found ({getattr(mod, '__file__', '?')}) is not BPF Compiler "
                           f"Collection: {BCC_HINT}")
    return mod


def import_bcc(search: Iterable[str] = BCC_DIRS) -> ModuleType:
    """The distribution's bcc module, also from inside a virtualenv, without touching ``sys.path``:
    the one on the import path if there is one, else the first ``bcc/__init__.py`` under the
    ``search`` directories (globs), loaded with importlib and registered as ``sys.modules['bcc']``."""
    mod = sys.modules.get("bcc")
    if mod is not None:
        return _checked(mod)
    if importlib.util.find_spec("bcc") is not None:
        return _checked(importlib.import_module("bcc"))
    for pattern in search:
        for d in sorted(glob.glob(pattern)):
            init = os.path.join(d, "bcc", "__init__.py")
            if not os.path.exists(init):
                continue
            spec = importlib.util.spec_from_file_location("bcc", init,
                                                          submodule_search_locations=[os.path.dirname(init)])
            if spec is None or spec.loader is None:
                continue
            mod = importlib.util.module_from_spec(spec)
            sys.modules["bcc"] = mod
            try:
                spec.loader.exec_module(mod)
            except Exception:  # a broken install (libbcc missing ...): try the next place
                for name in [n for n in sys.modules if n == "bcc" or n.startswith("bcc.")]:
                    del sys.modules[name]
                continue
            return _checked(mod)
    raise BackendError(f"bcc is not installed: {BCC_HINT}")


def bcc_problem() -> str | None:
    """Why bcc cannot be used, or ``None``."""
    try:
        import_bcc()
    except BackendError as err:
        return err.message
    return None


# --------------------------------------------------------------------------------------
# The host: looking (detection) and preparing (sessions, doctor --fix)
# --------------------------------------------------------------------------------------
def kernel_headers() -> str | None:
    """A file showing the running kernel's headers are there (bcc compiles against them), or ``None``."""
    rel = os.uname().release
    for p in (f"/lib/modules/{rel}/build/include/generated/autoconf.h", "/sys/kernel/kheaders.tar.xz"):
        if os.path.exists(p):
            return p
    return None


def headers_problem() -> str | None:
    if kernel_headers() is not None:
        return None
    rel = os.uname().release
    return (f"no kernel headers for {rel}: install linux-headers-$(uname -r), or link /lib/modules/{rel}/build "
            "to a headers tree ('make deps' does this)")


def _is_debugfs_form(d: str) -> bool:
    """``.../debug/tracing``: tracefs appears there once debugfs is mounted on the parent."""
    return os.path.basename(os.path.normpath(d)) == "tracing" and \
        os.path.basename(os.path.dirname(os.path.normpath(d))) == "debug"


def mount_plan(paths: HostPaths = DEFAULT) -> list[tuple[str, str]]:
    """(fstype, mount point) for every tracing directory of ``paths`` that is not mounted but can
    be: its directory (or, for the debugfs form, its parent) exists and is not a mount point.
    Only looks."""
    plan: list[tuple[str, str]] = []
    for d in paths.tracefs:
        if os.path.isdir(os.path.join(d, "events")):
            continue
        fstype, where = ("debugfs", os.path.dirname(os.path.normpath(d))) if _is_debugfs_form(d) else ("tracefs", d)
        if os.path.isdir(where) and not os.path.ismount(where) and (fstype, where) not in plan:
            plan.append((fstype, where))
    return plan


def tracefs_problem(paths: HostPaths, tracepoints: Iterable[tuple[str, str]], mountable_ok: bool) -> str | None:
    """Why the ``(category, event)`` tracepoints cannot be used through ``paths.tracefs``, or
    ``None``. ``mountable_ok``: tracefs not mounted but mountable (root) counts as fine (the
    session mounts it at start; the tracepoints are checked then). Only looks."""
    root = paths.tracefs_root()
    if root is None:
        if mountable_ok and os.geteuid() == 0 and mount_plan(paths):
            return None
        return (f"tracefs is not mounted at {' or '.join(paths.tracefs)} and cannot be mounted here "
                "(as root: mount -t tracefs nodev /sys/kernel/tracing)")
    for cat, event in tracepoints:
        if not os.path.isdir(os.path.join(root, "events", cat, event)):
            need = "CONFIG_FTRACE_SYSCALLS" if cat == "syscalls" else "CONFIG_TRACEPOINTS"
            return f"the kernel has no tracepoint {cat}:{event} ({need})"
    return None


def tracefs_note(paths: HostPaths) -> str:
    """What a session will do to the host before it starts ("" when nothing). Only looks."""
    if paths.tracefs_root() is not None:
        return ""
    plan = mount_plan(paths)
    if not plan:
        return ""
    return ("tracefs is not mounted: a session mounts it when it starts (" +
            ", ".join(f"{t} on {w}" for t, w in plan) + "), or run 'cfgaudit doctor --fix'")


def prepare_host(paths: HostPaths = DEFAULT) -> list[str]:
    """Mount what the live backends need and is missing (tracefs, and debugfs where bcc also looks
    for tracing), as root. Returns what it did, one line each."""
    plan = mount_plan(paths)
    if not plan:
        root = paths.tracefs_root()
        return [f"tracefs is mounted at {root}: nothing to do"] if root else \
            [f"no tracing directory to mount on ({', '.join(paths.tracefs)})"]
    if os.geteuid() != 0:
        return [f"not root: did not mount {t} on {w}" for t, w in plan]
    done = []
    for fstype, where in plan:
        p = subprocess.run(["mount", "-t", fstype, "nodev", where], capture_output=True, text=True)
        done.append(f"mounted {fstype} on {where}" if p.returncode == 0 else
                    f"could not mount {fstype} on {where}: {(p.stderr or p.stdout).strip() or p.returncode}")
    return done


# --------------------------------------------------------------------------------------
# The BPF program
# --------------------------------------------------------------------------------------
def program_text(program: str, bpf_dir: str = BPF_DIR) -> str:
    """The compilation unit handed to bcc: bpf/cfgaudit_common.bpf.h, then ``program``, with
    ``#line`` markers so compiler messages name the right file. bcc rewrites map calls
    (``lost.lookup()``, ``events.ringbuf_reserve()``) only in its main file, never in an included
    header, so the shared header must be part of the main file; the program's own
    ``#include "cfgaudit_common.bpf.h"`` is then a no-op (include guard). Nothing is edited."""
    parts = []
    for name in (COMMON_HEADER, program):
        path = os.path.join(bpf_dir, name)
        with open(path) as fh:
            parts.append(f'#line 1 "{path}"\n{fh.read()}\n')
    return "".join(parts)


def _c_literal(v: int | bool | str) -> str:
    if isinstance(v, (bool, int)):
        return str(int(v))
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        raise BackendError(f"cannot pass {v!r} to the BPF program: control characters")
    return '"' + "".join("\\" + c if c in '\\"' else c for c in v) + '"'


def define_flags(constants: Mapping[str, int | bool | str]) -> list[str]:
    """``-DNAME=VALUE`` compiler flags (strings as C string literals) for the program's constants."""
    return [f"-D{k}={_c_literal(v)}" for k, v in constants.items()]


# A BPF map's max_entries is a u32 byte count (union bpf_attr, include/uapi/linux/bpf.h), so the
# largest power-of-two ring buffer is 2**31 bytes: 524288 pages of 4 KiB.
MAX_BUFFER_PAGES = (1 << 31) // 4096


def check_buffer_pages(pages: int) -> None:
    """Ring-buffer size in 4 KiB pages: a power of two, from 2 to :data:`MAX_BUFFER_PAGES`."""
    if pages < 2 or pages & (pages - 1) or pages > MAX_BUFFER_PAGES:
        # one page is refused in practice (even the first records are lost): seen on 6.18
        raise BackendError(f"--buffer-pages must be a power of two from 2 to {MAX_BUFFER_PAGES} "
                           f"(2 GiB: the kernel's limit for a ring buffer), not {pages}")


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------
_NP = {"__u64": "<u8", "__s64": "<i8", "__u32": "<u4", "__s32": "<i4", "__u16": "<u2", "__u8": "u1"}


def record_dtype(layout: str = "event") -> np.dtype:
    """A numpy structured dtype for records of the variant ``layout`` (events.RECORD_LAYOUTS)."""
    if layout not in RECORD_LAYOUTS:
        raise KeyError(layout)
    fields: list[tuple] = []
    for name, ctype, n, _ in record_fields(layout):
        if ctype == "char":
            fields.append((name, f"S{n}"))
        elif n:
            fields.append((name, _NP[ctype], (n,)))
        else:
            fields.append((name, _NP[ctype]))
    dt = np.dtype(fields)
    assert dt.itemsize == record_size(layout), (layout, dt.itemsize)
    return dt
