"""The guard (issue 12): a BPF-LSM program that refuses user-space writes into owned config bytes.

bpf/cfgaudit_guard.bpf.c holds the hook (``lsm/file_permission``) and a kprobe on
``rw_verify_area()`` that hands it each write's position and length; this module detects whether
the running kernel can run it, fills its maps from a policy (regions/guard.py computes the
bitmaps; the session only writes them), and decodes its records (``EV_GUARD``: a write refused,
or with ``dry_run`` one that would have been) into events of the trace schema with ``guard`` set.

Nothing is pinned: the program and its hook go away when the session closes or the process
dies. Offsets and sizes are bytes; device codes index the policy's device list.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from ..errors import BackendError
from ..events import RECORD_TYPES, event_table
from ..hostpaths import DEFAULT, HostPaths
from .bccutil import bcc_problem, headers_problem, record_dtype, tracefs_problem
from .kernel import attachable_text, doe_setup, function_symbols, kprobes_available, resolve_symbol
from .session import EMPTY_EVENTS, Batch, LiveOptions, RingBufferSession

__all__ = ["GuardSession", "detect_guard", "lsm_list", "kernel_dev", "decode_guard_records", "GUARD_PROGRAM",
           "GUARD_SPAN_FUNCTION", "BITMAP_BYTES"]

GUARD_PROGRAM = "cfgaudit_guard.bpf.c"
# fs/read_write.c: rw_verify_area(int read_write, struct file *file, const loff_t *ppos, size_t count)
# calls security_file_permission(file, MAY_WRITE) last, for write(2), pwrite64(2), writev(2),
# pwritev(2) (vfs_write, do_iter_write / vfs_iocb_iter_write) and io_uring's io_write(), with the
# position and the byte count the hook itself is not given
GUARD_SPAN_FUNCTION = "rw_verify_area"
BITMAP_BYTES = 512  # one bit per config offset 0..4095
TRACEPOINTS = (("sched", "sched_process_fork"), ("sched", "sched_process_exit"))
VIA_SYSFS, VIA_PROCFS = 1, 2  # the KV_* codes of events.KERNEL_VIAS
_VIA_NAMES = {VIA_SYSFS: "sysfs", VIA_PROCFS: "procfs"}
_GUARD = RECORD_TYPES["EV_GUARD"]
_REFUSED, _DRY_RUN, _COLLISION = 1, 2, 4  # aux flags << 24
GUARD_MAILBOXES = 4  # DOE mailboxes per device the program follows (bpf: GUARD_MAILBOXES)


def lsm_list(paths: HostPaths = DEFAULT) -> list[str] | None:
    """The active LSMs (securityfs ``lsm``), or ``None`` when securityfs is not mounted there."""
    try:
        with open(os.path.join(paths.securityfs, "lsm")) as fh:
            return [x for x in fh.read().strip().split(",") if x]
    except OSError:
        return None


def detect_guard(paths: HostPaths = DEFAULT) -> str | None:
    """Why the guard cannot run here, or ``None`` (securityfs not mounted counts as fine: the
    session mounts it, then checks again). Only looks."""
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_MAC_ADMIN): run with sudo"
    lsms = lsm_list(paths)
    if lsms is not None and "bpf" not in lsms:
        return (f"BPF-LSM is not active: 'bpf' is not in the kernel's LSM list ({','.join(lsms)}); it needs "
                "CONFIG_BPF_LSM and 'bpf' in lsm= on the kernel command line")
    why = kprobes_available(tracefs=paths.tracefs_root()) or bcc_problem() or headers_problem() or \
        tracefs_problem(paths, TRACEPOINTS, mountable_ok=True)
    if why:
        return why
    syms = function_symbols(attachable_text(paths))
    if not resolve_symbol(GUARD_SPAN_FUNCTION, syms):
        return f"the kernel has no probe-able {GUARD_SPAN_FUNCTION} (the write's position and length)"
    if "bpf_lsm_file_permission" not in syms and lsms is None:
        return ("the kernel has no BPF-LSM hooks (no bpf_lsm_file_permission: CONFIG_BPF_LSM is off)")
    return None


def kernel_dev(st_dev: int) -> int:
    """The kernel's ``dev_t`` (``sb->s_dev``: major << 20 | minor) of a ``stat()`` st_dev."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def decode_guard_records(raw: bytes, bdfs: list[str]) -> pa.Table:
    """EV_GUARD records -> events (op ``write``, ``guard`` ``refused`` or ``dry-run``; ``ret``
    -EPERM when refused, unknown with a dry run: the write went on). ``bdfs``: device codes."""
    arr = np.frombuffer(raw, dtype=record_dtype("event"))
    arr = arr[arr["type"] == _GUARD]
    n = len(arr)
    if n == 0:
        return EMPTY_EVENTS
    aux = arr["aux"].astype(np.int64)
    code, via, flags = aux & 0xFFFF, (aux >> 16) & 0xFF, (aux >> 24) & 0xFF
    refused = (flags & _REFUSED) != 0
    names = [bdfs[int(c)] if int(c) < len(bdfs) else "" for c in code]
    cols = {
        "ts_ns": pa.array(arr["ts_ns"].astype(np.int64)),
        "pid": pa.array(arr["pid"].astype(np.int64)),
        "comm": pa.array([c.decode("utf-8", "replace") for c in arr["comm"]], type=pa.string()),
        "op": pa.array(["write"] * n, type=pa.string()),
        "bdf": pa.array(names, type=pa.string()),
        "offset": pa.array(arr["offset"].astype(np.int64)),
        "size": pa.array(arr["size"].astype(np.int64)),
        "tid": pa.array(arr["tid"].astype(np.int64)),
        "uid": pa.array(arr["uid"].astype(np.int64)),
        "via": pa.array([_VIA_NAMES.get(int(v), "unknown") for v in via], type=pa.string()),
        "ret": pa.array(arr["ret"].astype(np.int64), mask=~refused),
        "guard": pa.array(np.where(refused, "refused", "dry-run").tolist(), type=pa.string()),
    }
    t = event_table(cols, n)
    keep = pa.array([bool(b) for b in names])
    return t.filter(keep)


class GuardSession(RingBufferSession):
    """A loaded guard. ``refuse``: bdf -> :data:`BITMAP_BYTES` of refused config bytes (bit i of
    byte i // 8, LSB first); ``allow``: (bdf, comm) -> bytes that tool may write anyway;
    ``allow_comms``: tools nothing is refused to; ``dry_run``: refuse nothing, record what would
    have been. The maps are filled before the hook is attached; until the kprobe that reports
    each write's range is attached too, the hook refuses nothing."""

    name = "guard"
    program = GUARD_PROGRAM
    record_layout = "event"
    tracepoints = TRACEPOINTS
    detect = staticmethod(detect_guard)

    def __init__(self, opts: LiveOptions, refuse: Mapping[str, bytes], allow: Mapping[tuple[str, str], bytes],
                 allow_comms: frozenset[str] = frozenset(), dry_run: bool = False,
                 mailboxes: Mapping[str, tuple[int, ...]] | None = None, need_doe: bool = False) -> None:
        for bdf, bits in list(refuse.items()) + [(k[0], v) for k, v in allow.items()]:
            if len(bits) != BITMAP_BYTES:
                raise BackendError(f"guard: the bitmap of {bdf} has {len(bits)} bytes, not {BITMAP_BYTES}")
        self.bdfs = sorted(set(refuse) | {b for b, _ in allow})
        self.code = {b: i for i, b in enumerate(self.bdfs)}
        self.refuse, self.allow, self.allow_comms, self.dry_run = dict(refuse), dict(allow), allow_comms, dry_run
        self.mailboxes = {b: tuple(c)[:GUARD_MAILBOXES] for b, c in (mailboxes or {}).items() if c and b in self.code}
        self.files: dict[str, list[str]] = {}  # bdf -> the config files guarded
        # the kernel's DOE exchanges: a write into a mailbox while one is in flight is refused
        self._doe_consts, self.doe_problem = doe_setup(opts.paths) if self.mailboxes else ({}, "no DOE mailbox")
        if need_doe and self.doe_problem:
            raise BackendError(f"guard: --level collision needs the kernel's DOE exchanges: {self.doe_problem}")
        super().__init__(opts)

    def constants(self) -> dict[str, int | bool | str]:
        return {**super().constants(), "DRY_RUN": self.dry_run, "MAX_DEVS": max(1, len(self.bdfs)),
                "DOE_PROBES": not self.doe_problem, **self._doe_consts}

    def config_files(self, bdf: str) -> list[tuple[str, int]]:
        """(path, via code) of ``bdf``'s config files: sysfs ``devices/BDF/config`` and procfs
        ``BB/DD.F`` (``/proc/bus/pci`` names the domain only when it is not 0000)."""
        dom, bus, devfn = bdf.split(":")
        proc_bus = bus if dom == "0000" else f"{dom}:{bus}"
        p = self.opts.paths
        return [(os.path.join(p.sysfs, "devices", bdf, "config"), VIA_SYSFS),
                (os.path.join(p.procfs, proc_bus, devfn), VIA_PROCFS)]

    def setup_maps(self, bpf: Any) -> None:
        """The policy into the maps: config file inodes -> device code | via, bitmaps, allow lists."""
        super().setup_maps(bpf)
        files, refuse = bpf[b"guard_files"], bpf[b"guard_refuse"]
        for bdf in self.bdfs:
            code = self.code[bdf]
            for path, via in self.config_files(bdf):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                k = files.Key()
                k.ino, k.sdev = st.st_ino, kernel_dev(st.st_dev)
                files[k] = files.Leaf(code | (via << 16))
                self.files.setdefault(bdf, []).append(path)
            leaf = refuse.Leaf()
            bits = self.refuse.get(bdf, bytes(BITMAP_BYTES))
            for i in range(BITMAP_BYTES):
                leaf.b[i] = bits[i]
            refuse[refuse.Key(code)] = leaf
        allow = bpf[b"guard_allow"]
        for (bdf, comm), bits in self.allow.items():
            k = allow.Key()
            k.code = self.code[bdf]
            k.comm = comm.encode()[:15]
            leaf = allow.Leaf()
            for i in range(BITMAP_BYTES):
                leaf.b[i] = bits[i]
            allow[k] = leaf
        comms = bpf[b"guard_allow_comm"]
        for comm in self.allow_comms:
            k = comms.Key()
            k.comm = comm.encode()[:15]
            comms[k] = comms.Leaf(1)
        caps = bpf[b"guard_caps"]
        for bdf, offs in self.mailboxes.items():
            leaf = caps.Leaf()
            for j, off in enumerate(offs):
                leaf.cap[j] = off
            caps[caps.Key(self.code[bdf])] = leaf
        if not self.doe_problem:
            names = bpf[b"guard_devname"]
            for bdf in self.mailboxes:
                k = names.Key()
                k.name = bdf.encode()
                names[k] = names.Leaf(self.code[bdf])
        if not any(self.files.values()):
            raise BackendError("guard: none of the policy's devices has a config file here")

    def attach(self) -> None:
        """The kprobe that gives the hook each write's range (the hook itself is attached at load)."""
        sym = resolve_symbol(GUARD_SPAN_FUNCTION, function_symbols(attachable_text(self.opts.paths)))
        if not sym:
            raise BackendError(f"guard: the kernel has no probe-able {GUARD_SPAN_FUNCTION}")
        probes = [(sym, b"on_rw_verify_area", False)]
        if not self.doe_problem:  # doe_setup found doe_statemachine_work
            probes += [("doe_statemachine_work", b"on_doe_work", False), ("doe_statemachine_work",
                                                                         b"on_doe_work_return", True)]
        for name, fn, ret in probes:
            how = self.bpf.attach_kretprobe if ret else self.bpf.attach_kprobe
            try:
                how(event=name.encode(), fn_name=fn)
            except Exception as err:  # bcc raises bare Exception
                raise BackendError(f"guard: cannot attach to {name}: {err}") from err

    def stats_extra(self) -> dict[str, Any]:
        return {"guarded_files": sum(len(v) for v in self.files.values()), "dry_run": self.dry_run}

    def decode(self, records: list[bytes], odd: list[int]) -> Batch:
        return Batch(decode_guard_records(b"".join(records), self.bdfs), [])
