"""Config-space bytes of PCI functions, with which bytes are known, and the loaders.

Three sources give the same model (:class:`ConfigSpace`):

* a sysfs tree in pciutils' layout (``DIR/devices/DDDD:BB:DD.F/{config,vendor,...}``),
  the live ``/sys/bus/pci`` or a fake tree of regular files;
* ``lspci -x/-xxx/-xxxx`` text dumps, with or without the ``-vvv`` decode;
* a cfgaudit snapshot (JSON), written by :func:`save_snapshot`.

Bytes never read are *unknown*, not zero (as in pciutils' dump backend). Offsets and
lengths are in bytes from the start of the function's configuration space.
"""
from __future__ import annotations

import errno
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..errors import InputError, is_utf8_text
from ..files import open_input
from ..pci_regs import (  # PCI_CFG_SPACE_SIZE, PCI_CFG_SPACE_EXP_SIZE: also imported from here
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_CLASS_PROG,
    PCI_DEVICE_ID,
    PCI_HEADER_TYPE,
    PCI_REVISION_ID,
    PCI_VENDOR_ID,
)
from .kernel import parse_kernel

__all__ = [
    "ConfigSpace",
    "DeviceSet",
    "normalize_bdf",
    "parse_bdf",
    "load_sysfs",
    "load_lspci_dump",
    "load_snapshot",
    "save_snapshot",
    "snapshot_dict",
    "devices_from_snapshot_dict",
    "SNAPSHOT_FORMAT",
]

SNAPSHOT_FORMAT = "cfgaudit-snapshot"
SNAPSHOT_VERSION = 1
MAX_INPUT_BYTES = 256 << 20  # dumps and snapshots are read whole: a larger file is refused, not read

Warn = Callable[[str], None]

_BDF_RE = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


def parse_bdf(text: str) -> tuple[int, int, int, int]:
    """Parse ``[DDDD:]BB:DD.F`` into (domain, bus, device, function); domain defaults to 0."""
    m = _BDF_RE.match(text.strip())
    if not m:
        raise InputError(f"not a PCI address (want [DDDD:]BB:DD.F): {text!r}")
    dom, bus, dev, fn = m.groups()
    d, b, s, f = int(dom or "0", 16), int(bus, 16), int(dev, 16), int(fn)
    if s > 0x1F:
        raise InputError(f"not a PCI address (device number > 1f): {text!r}")
    return d, b, s, f


def normalize_bdf(text: str) -> str:
    """``0d:00.0`` -> ``0000:0d:00.0`` (lower case, domain added)."""
    d, b, s, f = parse_bdf(text)
    return f"{d:04x}:{b:02x}:{s:02x}.{f}"


@dataclass
class ConfigSpace:
    """One PCI function's config space as far as it is known.

    ``data`` is 4096 bytes (unknown bytes hold 0xFF, as pciutils' dump backend);
    ``known`` is a same-length mask, 1 where the byte was actually read.
    ``config_size`` is the size the kernel gives the function (256 or 4096 bytes,
    ``dev->cfg_size``); ``None`` when the source cannot tell.
    """

    bdf: str
    data: bytearray = field(default_factory=lambda: bytearray(b"\xff" * PCI_CFG_SPACE_EXP_SIZE))
    known: bytearray = field(default_factory=lambda: bytearray(PCI_CFG_SPACE_EXP_SIZE))
    driver: str | None = None
    config_size: int | None = None
    source: str = ""
    on_root_bus: bool | None = None
    notes: list[str] = field(default_factory=list)

    # -- raw access -------------------------------------------------------------------
    def set_bytes(self, offset: int, values: bytes | Iterable[int]) -> None:
        """Record bytes read at ``offset`` (bytes) as known. Bytes past the end of config space
        are an IndexError, and none of them is recorded then."""
        vals = bytes(values)  # ValueError for an int outside 0..255, as item assignment
        end = offset + len(vals)
        if offset < 0 or end > len(self.data):
            raise IndexError(f"config space bytes [{offset:#x}, {end:#x}) past {len(self.data):#x}")
        self.data[offset:end] = vals  # one slice assignment: a device's 4 KiB in microseconds
        self.known[offset:end] = b"\x01" * len(vals)

    def is_known(self, offset: int, length: int = 1) -> bool:
        """True iff every byte of ``[offset, offset+length)`` was read."""
        if offset < 0 or offset + length > len(self.data):
            return False
        return all(self.known[offset : offset + length])

    def read(self, offset: int, length: int) -> int | None:
        """Little-endian value of ``length`` bytes at ``offset``; ``None`` if any byte is unknown."""
        if not self.is_known(offset, length):
            return None
        return int.from_bytes(self.data[offset : offset + length], "little")

    def byte(self, offset: int) -> int | None:
        return self.read(offset, 1)

    def word(self, offset: int) -> int | None:
        return self.read(offset, 2)

    def dword(self, offset: int) -> int | None:
        return self.read(offset, 4)

    @property
    def known_length(self) -> int:
        """Bytes known from offset 0 without a gap."""
        n = 0
        for k in self.known:
            if not k:
                break
            n += 1
        return n

    # -- header fields ----------------------------------------------------------------
    @property
    def vendor(self) -> int | None:
        return self.word(PCI_VENDOR_ID)

    @property
    def device(self) -> int | None:
        return self.word(PCI_DEVICE_ID)

    @property
    def revision(self) -> int | None:
        return self.byte(PCI_REVISION_ID)

    @property
    def class_code(self) -> int | None:
        """24-bit class code: base class << 16 | subclass << 8 | programming interface."""
        v = self.read(PCI_CLASS_PROG, 3)
        return v

    @property
    def header_type(self) -> int | None:
        """Header layout (0 endpoint, 1 bridge, 2 CardBus), without the multi-function bit."""
        v = self.byte(PCI_HEADER_TYPE)
        return None if v is None else v & 0x7F

    @property
    def devfn(self) -> int:
        _, _, s, f = parse_bdf(self.bdf)
        return (s << 3) | f

    @property
    def bus(self) -> int:
        return parse_bdf(self.bdf)[1]

    @property
    def domain(self) -> int:
        return parse_bdf(self.bdf)[0]

    def known_ranges(self) -> list[tuple[int, int]]:
        """Known bytes as sorted ``(start, length)`` runs."""
        out: list[tuple[int, int]] = []
        start = None
        for i, k in enumerate(self.known):
            if k and start is None:
                start = i
            elif not k and start is not None:
                out.append((start, i - start))
                start = None
        if start is not None:
            out.append((start, len(self.known) - start))
        return out


_KNOWN_RUN = re.compile(rb"[^\x00]+")  # a run of known bytes in a ConfigSpace.known mask


@dataclass
class DeviceSet:
    """Devices from one or more sources, keyed by BDF, plus host facts a snapshot carries."""

    devices: dict[str, ConfigSpace] = field(default_factory=dict)
    kernel_release: str | None = None
    kernel_version: str | None = None  # upstream version when the release string hides it (Debian)
    iomem_relaxed: bool | None = None
    host: str | None = None
    warnings: list[str] = field(default_factory=list)

    def add(self, dev: ConfigSpace, where: str = "") -> None:
        """Add a device; a second copy of a BDF merges its known bytes into the first."""
        old = self.devices.get(dev.bdf)
        if old is None:
            self.devices[dev.bdf] = dev
            return
        # Runs of known bytes, compared and copied as slices: a dump repeating one device
        # thousands of times must not cost 4096 Python steps per copy.
        zeros = dev.known.count(0)
        runs = [] if zeros == len(dev.known) else [(0, len(dev.known))] if not zeros else \
            [m.span() for m in _KNOWN_RUN.finditer(dev.known)]
        conflict = any(old.data[a:b] != dev.data[a:b]
                       for s, e in runs for a, b in (m.span() for m in _KNOWN_RUN.finditer(old.known, s, e)))
        if conflict:
            self.warnings.append(f"{where}device {dev.bdf} given twice with different bytes; the later copy wins")
        for s, e in runs:
            old.data[s:e] = dev.data[s:e]
            old.known[s:e] = b"\x01" * (e - s)
        old.driver = dev.driver or old.driver
        if dev.config_size and (old.config_size or 0) < dev.config_size:
            old.config_size = dev.config_size
        if dev.on_root_bus is not None:
            old.on_root_bus = dev.on_root_bus
        old.notes.extend(n for n in dev.notes if n not in old.notes)

    def sorted(self) -> list[ConfigSpace]:
        return [self.devices[k] for k in sorted(self.devices)]


# ----------------------------------------------------------------------------------------
# Extended config size, as the kernel decides it
# ----------------------------------------------------------------------------------------
def ext_space_aliased(cs: ConfigSpace) -> bool:
    """True when extended space mirrors the header, as drivers/pci/probe.c
    pci_ext_cfg_is_aliased() tests it: the dword at every 0x100 step from 0x100 to 0xF00
    equals the dword at offset 0 (such hardware has no real extended space)."""
    head = cs.dword(0)
    if head is None:
        return False
    for pos in range(PCI_CFG_SPACE_SIZE, PCI_CFG_SPACE_EXP_SIZE, PCI_CFG_SPACE_SIZE):
        if cs.dword(pos) != head:
            return False
    return True


def infer_config_size(cs: ConfigSpace, has_ext_capable_cap: bool) -> int:
    """The kernel's ``dev->cfg_size`` for a dump that does not say it (bytes).

    The kernel gives 4096 to PCIe and PCI-X 2.0 functions whose dword at 0x100 is not
    all-ones and whose extended space does not alias the header (probe.c
    pci_cfg_space_size_ext()); a dump of more than 256 bytes shows the function had it.
    """
    if not has_ext_capable_cap:
        return PCI_CFG_SPACE_SIZE
    if cs.is_known(0x100, 4):
        if cs.dword(0x100) == 0xFFFFFFFF or ext_space_aliased(cs):
            return PCI_CFG_SPACE_SIZE
    return PCI_CFG_SPACE_EXP_SIZE


# ----------------------------------------------------------------------------------------
# sysfs
# ----------------------------------------------------------------------------------------
def _read_text(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def load_sysfs(root: str, warn: Warn | None = None, bdfs: Iterable[str] | None = None) -> list[ConfigSpace]:
    """Read every function under ``root/devices`` (pciutils' ``sysfs.path`` layout).

    The config file's size is the kernel's ``cfg_size``. Reading it as non-root gives only
    the first 64 bytes (128 for CardBus; drivers/pci/pci-sysfs.c pci_read_config): the rest
    stays unknown and a warning says so.
    """
    warn = warn or (lambda m: None)
    devdir = os.path.join(root, "devices")
    try:
        names = sorted(os.listdir(devdir))
    except OSError as err:
        raise InputError(f"cannot list PCI devices: {err.strerror}", path=devdir) from err
    wanted = {normalize_bdf(b) for b in bdfs} if bdfs else None
    out: list[ConfigSpace] = []
    short_reads = 0
    for name in names:
        try:
            bdf = normalize_bdf(name)
        except InputError:
            continue
        if wanted is not None and bdf not in wanted:
            continue
        d = os.path.join(devdir, name)
        cfg = os.path.join(d, "config")
        try:
            size = os.stat(cfg).st_size
            with open_input(cfg, "config space") as fh:  # a FIFO in a fake tree would block
                raw = fh.read(PCI_CFG_SPACE_EXP_SIZE)
        except OSError as err:
            raise InputError(f"cannot read config space: {err.strerror}", path=cfg) from err
        cs = ConfigSpace(bdf=bdf, source=f"sysfs:{root}")
        cs.set_bytes(0, raw)
        cs.config_size = size if size in (PCI_CFG_SPACE_SIZE, PCI_CFG_SPACE_EXP_SIZE) else (
            PCI_CFG_SPACE_EXP_SIZE if len(raw) > PCI_CFG_SPACE_SIZE else PCI_CFG_SPACE_SIZE)
        if size and len(raw) < min(size, PCI_CFG_SPACE_EXP_SIZE):
            cs.notes.append(f"only {len(raw)} of {size} config bytes readable (not root?); the rest is unknown")
            short_reads += 1
        link = os.path.join(d, "driver")
        if os.path.islink(link):
            cs.driver = os.path.basename(os.readlink(link))
        real = os.path.realpath(d)
        parent = os.path.basename(os.path.dirname(real))
        if parent.startswith("pci") and ":" in parent:
            cs.on_root_bus = True
        elif re.match(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$", parent):
            cs.on_root_bus = False
        out.append(cs)
    if short_reads:
        warn(f"{devdir}: {short_reads} device(s) gave only part of their config space "
             "(the kernel shows non-root readers 64 bytes); run as root for the whole space")
    return out


# ----------------------------------------------------------------------------------------
# lspci hex dumps
# ----------------------------------------------------------------------------------------
_DEV_LINE = re.compile(r"^(?:([0-9a-fA-F]{4,6}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])(?:\s|$)")
_HEX_LINE = re.compile(r"^([0-9a-fA-F]{2,8}):(?:\s+(.*))?$")
_BARE_HEX = re.compile(r"^[0-9a-fA-F]{2}(?: [0-9a-fA-F]{2})*$")
_DRIVER_LINE = re.compile(r"^\s*Kernel driver in use:\s*(\S+)")
_QUOTE = re.compile(r"^(?:>\s?)+")


def load_lspci_dump(path: str, warn: Warn | None = None) -> list[ConfigSpace]:
    """Parse an ``lspci -x``/``-xxx``/``-xxxx`` dump (``-vvv``/``-k`` lines allowed between).

    Follows pciutils' lib/dump.c: a device line ``[DDDD:]BB:DD.F <text>`` starts a
    device, ``OFF: hh hh ...`` lines fill its bytes, a blank line ends it, other lines are
    ignored. Mail damage is tolerated where the intent is clear (quote marks ``> ``,
    CRLF, a hex line wrapped onto a bare continuation line: each gives a warning); a hex
    line that cannot be read is an error naming ``FILE:LINE``.
    """
    warn = warn or (lambda m: None)
    try:
        with open_input(path, "lspci dump", MAX_INPUT_BYTES) as fh:
            raw = fh.read()
    except OSError as err:
        raise InputError(f"cannot read lspci dump: {err.strerror}", path=path) from err
    text = raw.decode("utf-8", errors="replace")
    out: list[ConfigSpace] = []
    cur: ConfigSpace | None = None
    next_off: int | None = None  # where a wrapped continuation line would continue
    quoted_warned = False
    byte_line: dict[int, int] = {}  # the current device's bytes -> the line that gave them

    def put(at: int, vals: bytes, lineno: int) -> None:
        """Set the current device's bytes; a byte given twice is an error (a warning when equal)."""
        assert cur is not None
        again = [i for i in range(at, at + len(vals)) if i in byte_line]
        if again:
            i = again[0]
            first = byte_line[i]
            if any(cur.data[j] != vals[j - at] for j in again):
                raise InputError(f"offset {i:#x} of {cur.bdf} given again with other bytes (first at line {first})",
                                 path=path, line=lineno)
            warn(f"{path}:{lineno}: offset {i:#x} of {cur.bdf} given again (same bytes as line {first})")
        cur.set_bytes(at, vals)
        byte_line.update((j, lineno) for j in range(at, at + len(vals)) if j not in byte_line)

    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r\n").rstrip()
        if _QUOTE.match(line):
            line = _QUOTE.sub("", line, count=1)
            if not quoted_warned:
                warn(f"{path}:{lineno}: quoted lines ('> '): mail quoting removed")
                quoted_warned = True
        if not line.strip():
            cur, next_off = None, None
            continue
        m = _DEV_LINE.match(line)
        if m and not _HEX_LINE.match(line):
            dom, bus, dev, fn = m.groups()
            bdf = f"{int(dom or '0', 16):04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{fn}"
            cur = ConfigSpace(bdf=bdf, source=f"lspci-dump:{path}")
            byte_line = {}
            next_off = None
            out.append(cur)
            continue
        if cur is None:
            early = _HEX_LINE.match(line)
            if early and _looks_like_hex_payload(early.group(2)):
                raise InputError("hex dump line before any device line (want '[DDDD:]BB:DD.F ...' first)",
                                 path=path, line=lineno)
            continue
        dm = _DRIVER_LINE.match(line)
        if dm:
            cur.driver = dm.group(1)
            continue
        hm = _HEX_LINE.match(line)
        if hm and not line.startswith(("\t", " ")):
            off = int(hm.group(1), 16)
            payload = hm.group(2) or ""
            vals = _parse_hex_bytes(payload, path, lineno)
            if off + len(vals) > PCI_CFG_SPACE_EXP_SIZE:
                raise InputError(f"offset {off + len(vals) - 1:#x} is past the 4096 bytes of config space",
                                 path=path, line=lineno)
            put(off, vals, lineno)
            next_off = off + len(vals) if len(vals) < 16 else None
            continue
        stripped = line.strip()
        if next_off is not None and _BARE_HEX.match(stripped) and not line.startswith("\t"):
            vals = bytes(int(t, 16) for t in stripped.split())
            if next_off + len(vals) > PCI_CFG_SPACE_EXP_SIZE:
                raise InputError("wrapped hex line runs past 4096 bytes", path=path, line=lineno)
            warn(f"{path}:{lineno}: hex line wrapped (mail?): joined to the line before it")
            put(next_off, vals, lineno)
            next_off = next_off + len(vals)
            if (next_off & 0xF) == 0:
                next_off = None
            continue
        # Anything else (the -vvv decode, -k lines, titles) is ignored, like pciutils does.
    for cs in out:
        if not cs.known[0:1] or not cs.is_known(0, 4):
            warn(f"{path}: {cs.bdf}: no config bytes in the dump (was it taken without -x?)")
    return out


def _looks_like_hex_payload(payload: str | None) -> bool:
    return payload is not None and bool(re.match(r"^[0-9a-fA-F]{2}(\s|$)", payload.strip()))


def _parse_hex_bytes(payload: str, path: str, lineno: int) -> bytes:
    toks = payload.split()
    vals = []
    for t in toks:
        if len(t) != 2 or not all(c in "0123456789abcdefABCDEF" for c in t):
            raise InputError(f"malformed hex dump line: {t!r} is not a two-digit hex byte", path=path, line=lineno)
        vals.append(int(t, 16))
    if len(vals) > 16:
        raise InputError(f"malformed hex dump line: {len(vals)} bytes on one line (at most 16)", path=path, line=lineno)
    return bytes(vals)


# ----------------------------------------------------------------------------------------
# snapshots
# ----------------------------------------------------------------------------------------
def snapshot_dict(ds: DeviceSet) -> dict:
    """The JSON-ready snapshot of a :class:`DeviceSet` (every device's bytes, driver, host facts)."""
    devs = []
    for cs in ds.sorted():
        ranges = cs.known_ranges()
        last = max((s + n for s, n in ranges), default=0)
        devs.append({
            "bdf": cs.bdf,
            "driver": cs.driver,
            "config_size": cs.config_size,
            "on_root_bus": cs.on_root_bus,
            "config": cs.data[:last].hex(),
            "known": [[s, n] for s, n in ranges],
            "notes": list(cs.notes),
        })
    return {
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "created_ns": time.time_ns(),
        "host": ds.host,
        "kernel_release": ds.kernel_release,
        "kernel_version": ds.kernel_version,
        "iomem_relaxed": ds.iomem_relaxed,
        "devices": devs,
    }


def save_snapshot(ds: DeviceSet, path: str, fd: int | None = None) -> None:
    """Write ``ds`` as a snapshot file (JSON) to ``fd`` (an open descriptor for ``path``, which is
    closed), or else to ``path`` opened here: a snapshot holds config bytes non-root cannot read, so
    a new file is made mode 0600 and a symbolic link is refused (``cfgaudit snapshot`` opens its
    output with :func:`cfgaudit.files.create_output`, which does the same)."""
    try:
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(snapshot_dict(ds), fh, indent=1)
            fh.write("\n")
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError("is a symbolic link: give the real path (cfgaudit does not write through links)",
                             path=path) from err
        raise InputError(f"cannot write snapshot: {err.strerror}", path=path) from err


def _snapshot_device(d: object, where: str) -> ConfigSpace:
    """One device of a snapshot, checked: every field has its type, the bytes fit in 4096."""
    if not isinstance(d, dict):
        raise ValueError("must be a JSON object")
    bdf, config, known = d.get("bdf"), d.get("config", ""), d.get("known")
    if not isinstance(bdf, str):
        raise ValueError(f"'bdf' must be a string like \"0000:0d:00.0\", not {bdf!r}")
    cs = ConfigSpace(bdf=normalize_bdf(bdf), source=f"snapshot:{where}")
    if not isinstance(config, str):
        raise ValueError("'config' must be a hex string")
    data = bytes.fromhex(config)
    if len(data) > PCI_CFG_SPACE_EXP_SIZE:
        raise ValueError(f"'config' holds {len(data)} bytes; config space has {PCI_CFG_SPACE_EXP_SIZE}")
    if known is None:
        known = [[0, len(data)]]
    if not isinstance(known, list):
        raise ValueError("'known' must be a list of [start, length] pairs")
    for rng in known:
        if not (isinstance(rng, list) and len(rng) == 2 and all(type(x) is int for x in rng)):
            raise ValueError(f"'known' must be a list of [start, length] pairs, not {rng!r}")
        start, n = rng
        if start < 0 or n < 0 or start + n > len(data):
            raise ValueError(f"known range {start}+{n} outside the {len(data)} config bytes")
        cs.set_bytes(start, data[start : start + n])
    for key, typ, what in (("driver", str, "a string"), ("on_root_bus", bool, "true or false"),
                           ("notes", list, "a list of strings")):
        v = d.get(key)
        texts = v if isinstance(v, list) else [v] if isinstance(v, str) else []
        if v is not None and (not isinstance(v, typ) or not all(isinstance(x, str) and is_utf8_text(x) for x in texts)):
            raise ValueError(f"{key!r} must be {what} or null, not {v!r}")
    size = d.get("config_size")
    if size is not None and (type(size) is not int or size not in (PCI_CFG_SPACE_SIZE, PCI_CFG_SPACE_EXP_SIZE)):
        raise ValueError(f"'config_size' must be {PCI_CFG_SPACE_SIZE} or {PCI_CFG_SPACE_EXP_SIZE} (bytes) or null, "
                         f"not {size!r}")
    cs.driver, cs.config_size, cs.on_root_bus = d.get("driver"), size, d.get("on_root_bus")
    cs.notes = list(d.get("notes") or [])
    return cs


def devices_from_snapshot_dict(doc: dict, where: str, line: int | None = None) -> DeviceSet:
    """Rebuild a :class:`DeviceSet` from a snapshot document (a file's or a trace header's);
    a problem is an :class:`InputError` naming ``where`` (and ``line``)."""
    if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
        raise InputError(f"not a cfgaudit snapshot (no \"format\": \"{SNAPSHOT_FORMAT}\")", path=where, line=line)
    if doc.get("version") != SNAPSHOT_VERSION:
        raise InputError(f"snapshot version {doc.get('version')!r} is not supported (want {SNAPSHOT_VERSION})",
                         path=where, line=line)
    for key, typ, what in (("kernel_release", str, "a string"), ("kernel_version", str, "a string"),
                           ("host", str, "a string"), ("iomem_relaxed", bool, "true or false"),
                           ("devices", list, "a list of devices")):
        v = doc.get(key)
        if v is not None and (not isinstance(v, typ) or (isinstance(v, str) and not is_utf8_text(v))):
            raise InputError(f"snapshot: {key!r} must be {what} or null, not {v!r}", path=where, line=line)
    if doc.get("kernel_release"):
        try:
            parse_kernel(doc["kernel_release"], doc.get("kernel_version"))
        except InputError as err:
            raise InputError(f"snapshot: 'kernel_release': {err.message}", path=where, line=line) from err
    ds = DeviceSet(kernel_release=doc.get("kernel_release"), kernel_version=doc.get("kernel_version"),
                   iomem_relaxed=doc.get("iomem_relaxed"), host=doc.get("host"))
    for i, d in enumerate(doc.get("devices") or []):
        try:
            cs = _snapshot_device(d, where)
        except (ValueError, InputError) as err:
            raise InputError(f"snapshot device #{i}: {err.message if isinstance(err, InputError) else err}",
                             path=where, line=line) from err
        ds.add(cs)
    return ds


def load_snapshot(path: str) -> DeviceSet:
    """Read a snapshot file written by :func:`save_snapshot`."""
    try:
        with open_input(path, "snapshot", MAX_INPUT_BYTES) as fh:
            doc = json.loads(fh.read().decode("utf-8"))
    except OSError as err:
        raise InputError(f"cannot read snapshot: {err.strerror}", path=path) from err
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text (byte {err.start})", path=path) from err
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON: {err.msg}", path=path, line=err.lineno) from err
    except RecursionError as err:
        raise InputError("not valid JSON: nested too deeply", path=path) from err
    return devices_from_snapshot_dict(doc, path)


def format_lspci_dump(cs: ConfigSpace, title: str = "Device") -> str:
    """``cs`` as an ``lspci -xxxx``-style dump (known 16-byte rows only; unknown bytes as ``ff``
    inside a row that has any known byte)."""
    lines = [f"{cs.bdf} {title}"]
    top = max((s + n for s, n in cs.known_ranges()), default=0)
    for row in range(0, (top + 15) // 16 * 16, 16):
        if not any(cs.known[row : row + 16]):
            continue
        width = 2 if row < 0x100 else 3
        lines.append(f"{row:0{width}x}: " + " ".join(f"{b:02x}" for b in cs.data[row : row + 16]))
    return "\n".join(lines) + "\n\n"
