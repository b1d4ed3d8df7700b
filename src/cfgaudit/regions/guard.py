"""The guard's policy (``cfgaudit guard``, issue 12): which user-space config writes a BPF-LSM
program refuses, as byte bitmaps shared by the BPF map builder and the report (docs/guard.md).

One decision, one place: :class:`GuardPolicy` turns a registry into per-device bitmaps of
config offsets, and :meth:`GuardPolicy.decide` answers from exactly those bitmaps (the ones the
BPF maps are filled with), so the program in the kernel and the report cannot disagree.

Bitmaps are :data:`BITMAP_BYTES` (512) bytes for config offsets 0..4095: offset ``i`` is bit
``i % 8`` (least significant bit first) of byte ``i // 8``; read as one little-endian integer,
bit ``i`` is offset ``i``. Three maps per device:

* refused: bytes a write may never touch at the level (exclusive regions at ``exclusive``;
  exclusive and managed regions at ``managed``; nothing at ``collision``), minus the bytes of
  the table's own ``user`` regions (a vfio-pci device belongs to its VFIO user: writes there are
  not findings, so not refused either);
* allowed, per (device, comm): bytes a claims file's ``user`` claim hands to the tool whose comm
  its ``owner`` names; they lift refused bytes for that comm only;
* exchange, per DOE mailbox: its bytes ``[cap, cap + 0x18)``, refused at every level while the
  kernel has an exchange in flight on that mailbox (a collision ranks above every level, as in the
  analyzer; a claim cannot stop the kernel's exchange, so no ``user`` claim lifts them).

A comm named in ``--allow-comm`` is refused nothing. Reads are never refused: the BPF program
never asks (``MAY_READ``), and neither does the report. Offsets and lengths are bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Iterable, Sequence

from ..errors import UsageError
from ..pci_regs import PCI_DOE_CAP_SIZEOF, PCI_EXT_CAP_ID_DOE
from .build import RegistryResult
from .configspace import PCI_CFG_SPACE_EXP_SIZE
from .registry import Region

__all__ = ["GUARD_LEVELS", "GUARD_SYSCALLS", "BITMAP_BYTES", "COMM_LEN", "MAX_RW_COUNT", "GuardArgumentError",
           "GuardPolicy", "Decision", "RegionRef", "kernel_comm", "comm_bytes", "bitmap", "bitmap_bits",
           "write_range"]

GUARD_LEVELS = ("collision", "exclusive", "managed")  # strictest first, like audit.FAIL_LEVELS
# Region kinds refused at all times at each level (collisions: the exchange maps, at every level).
LEVEL_KINDS: dict[str, tuple[str, ...]] = {"collision": (), "exclusive": ("exclusive",),
                                           "managed": ("exclusive", "managed")}
CONFIG_BYTES = PCI_CFG_SPACE_EXP_SIZE  # 4096: offsets the bitmaps cover
BITMAP_BYTES = CONFIG_BYTES // 8  # 512
COMM_LEN = 15  # TASK_COMM_LEN (16) less the NUL: bytes of a task's comm
CLAIMS_RULE = "claims:"  # rule id prefix of the regions a claims file adds (regions/claims.py)
GUARD_SYSCALLS = ("write", "pwrite64", "writev", "pwritev", "pwritev2")
# include/linux/fs.h: MAX_RW_COUNT = INT_MAX & PAGE_MASK (4 KiB pages): the most one write moves
MAX_RW_COUNT = 0x7FFFF000
UIO_MAXIOV = 1024  # include/uapi/linux/uio.h: more iovecs is -EINVAL
_LLONG_MAX = (1 << 63) - 1
_FULL = (1 << CONFIG_BYTES) - 1


class GuardArgumentError(UsageError, ValueError):
    """An unknown guard level or syscall, or a syscall's arguments missing (a ValueError too)."""


def kernel_comm(name: str) -> str:
    """``name`` as the kernel keeps a comm and the trace decodes it: its UTF-8 bytes cut at
    :data:`COMM_LEN` (15) bytes, decoded with replacement (probes/syscalls.py's decode)."""
    return comm_bytes(name).decode("utf-8", "replace")


def comm_bytes(name: str) -> bytes:
    """The comm bytes the BPF side compares (at most 15; the map key pads them with NULs to 16)."""
    return name.encode("utf-8", "replace")[:COMM_LEN]


def _span(start: int, length: int) -> int:
    """Bits ``[start, start + length)`` clipped to config space, as an integer bitmap."""
    lo, hi = max(start, 0), min(start + length, CONFIG_BYTES)
    return ((1 << (hi - lo)) - 1) << lo if hi > lo else 0


def bitmap(spans: Iterable[tuple[int, int]]) -> bytes:
    """The 512-byte bitmap of the (start, length) byte ranges (clipped to offsets 0..4095)."""
    bits = 0
    for start, length in spans:
        bits |= _span(start, length)
    return bits.to_bytes(BITMAP_BYTES, "little")


def bitmap_bits(bm: bytes) -> int:
    """A 512-byte bitmap as an integer whose bit ``i`` is config offset ``i``."""
    if len(bm) != BITMAP_BYTES:
        raise ValueError(f"a guard bitmap is {BITMAP_BYTES} bytes, not {len(bm)}")
    return int.from_bytes(bm, "little")


@dataclass(frozen=True)
class RegionRef:
    """A region a write overlaps: kind (``exclusive``, ``managed``, ``user`` or ``collision`` for a
    DOE mailbox with a kernel exchange in flight), owner, start and length in bytes, rule id."""

    kind: str
    owner: str
    start: int
    length: int
    rule: str = ""

    @property
    def end(self) -> int:
        """The last byte (inclusive)."""
        return self.start + self.length - 1


@dataclass(frozen=True)
class Decision:
    """The guard's answer for one write: ``refused``; ``first``/``last`` the first and last refused
    config offsets (``None`` when allowed); ``regions`` the refusing regions the write overlaps
    (whether or not an allow rule lifted them); ``allowed_by`` the allow rule that lifted them
    (``--allow-comm`` or a user claim's owner), if any; ``why``, one sentence."""

    refused: bool
    first: int | None
    last: int | None
    regions: tuple[RegionRef, ...]
    why: str
    allowed_by: str | None = None


def _ref(r: Region) -> RegionRef:
    return RegionRef(r.kind, r.owner, r.start, r.length, r.rule)


_VERB = {"exclusive": "are exclusive to", "managed": "are managed by"}


class GuardPolicy:
    """The refusal policy for ``level`` over a registry (see the module docstring for the maps).

    ``res``: the registry (its ``user`` regions included: claims files' hand bytes to the tool
    their ``owner`` names); ``level``: one of :data:`GUARD_LEVELS`; ``allow_comms``: process
    names refused nothing (``--allow-comm``), cut to 15 bytes like the kernel's comm.
    """

    def __init__(self, res: RegistryResult, level: str = "exclusive", allow_comms: Iterable[str] = ()) -> None:
        if level not in GUARD_LEVELS:
            raise GuardArgumentError(f"--level must be one of {', '.join(GUARD_LEVELS)}, not {level!r}")
        self.level = level
        self.allow_comms: frozenset[str] = frozenset(kernel_comm(c) for c in allow_comms)
        regions = res.registry.regions()
        kinds = LEVEL_KINDS[level]
        self._level_regions: dict[str, list[Region]] = {}
        self._claims: dict[tuple[str, str], list[Region]] = {}  # (bdf, comm) -> its user claims
        lifted: dict[str, int] = {}
        bdfs = {v.cs.bdf for v in res.views}
        for r in regions:
            bdfs.add(r.bdf)
            if r.kind in kinds:
                self._level_regions.setdefault(r.bdf, []).append(r)
            elif r.kind == "user":
                if r.rule.startswith(CLAIMS_RULE):
                    self._claims.setdefault((r.bdf, kernel_comm(r.owner)), []).append(r)
                else:  # the table's own (vfio-user): not findings, so not refused for anyone
                    lifted[r.bdf] = lifted.get(r.bdf, 0) | _span(r.start, r.length)
        self.devices: tuple[str, ...] = tuple(sorted(bdfs))
        self._refused: dict[str, bytes] = {}
        for bdf in self.devices:
            bits = 0
            for r in self._level_regions.get(bdf, ()):
                bits |= _span(r.start, r.length)
            self._refused[bdf] = (bits & ~lifted.get(bdf, 0) & _FULL).to_bytes(BITMAP_BYTES, "little")
        self._allowed: dict[tuple[str, str], bytes] = {
            key: bitmap((r.start, r.length) for r in claims) for key, claims in sorted(self._claims.items())}
        # DOE mailboxes the kernel sees (analyze/doe.py's DoeDecoder): bdf -> {cap: owner}
        self._mailboxes: dict[str, dict[int, str]] = {}
        for v in res.views:
            for c in v.caps.caps:
                if c.space == "ext" and c.id == PCI_EXT_CAP_ID_DOE and c.kernel_visible:
                    owner = next((r.owner for r in regions if r.bdf == v.cs.bdf and r.start <= c.offset <= r.end
                                  and r.kind != "user"), "the kernel")
                    self._mailboxes.setdefault(v.cs.bdf, {}).setdefault(c.offset, owner)

    # -- the maps (what the BPF map builder loads) -------------------------------------------
    def refused_bytes(self, bdf: str) -> bytes:
        """512-byte bitmap of the config offsets of ``bdf`` refused at all times at this level
        (all clear for a device the registry does not have: nothing outside the ranges)."""
        return self._refused.get(bdf, bytes(BITMAP_BYTES))

    def allowed_bytes(self) -> dict[tuple[str, str], bytes]:
        """(bdf, comm) -> 512-byte bitmap of the offsets a claims file's ``user`` claim hands to
        the tool named by the claim's ``owner`` (comm cut to 15 bytes). A new dict each call."""
        return dict(self._allowed)

    def mailboxes(self, bdf: str) -> tuple[int, ...]:
        """Config offsets of the DOE capabilities (mailboxes) of ``bdf`` the kernel sees."""
        return tuple(sorted(self._mailboxes.get(bdf, {})))

    def exchange_bytes(self, bdf: str, cap: int | None = None) -> bytes:
        """512-byte bitmap of the mailbox at ``cap`` (``[cap, cap + 0x18)``; every mailbox of
        ``bdf`` when ``cap`` is ``None``): refused at every level while the kernel has an exchange
        in flight on it. At ``collision`` these are the only bytes ever refused."""
        caps = self.mailboxes(bdf) if cap is None else [c for c in self.mailboxes(bdf) if c == cap]
        return bitmap((c, PCI_DOE_CAP_SIZEOF) for c in caps)

    # -- the decision ------------------------------------------------------------------------
    def decide(self, bdf: str, offset: int, length: int, comm: str, *,
               in_flight: Collection[int] = ()) -> Decision:
        """Would the guard refuse a write of ``length`` bytes at config offset ``offset`` of
        ``bdf`` by process ``comm``? ``in_flight``: the capability offsets of ``bdf``'s DOE
        mailboxes with a kernel exchange in flight (the BPF side knows it; a report knows it from
        ``doe_start``/``doe_end`` events). Refused iff some byte of ``[offset, offset+length)``
        clipped to 0..4095 is refused and not allowed for ``comm``, or lies in a mailbox in flight;
        never when ``comm`` is in ``--allow-comm``, ``length`` is 0 or ``offset`` is past 4095."""
        lo, hi = max(offset, 0), min(offset + length, CONFIG_BYTES)
        if length <= 0:
            return Decision(False, None, None, (), "allowed: a write of 0 bytes writes nothing")
        if hi <= lo:
            return Decision(False, None, None, (), f"allowed: bytes {offset:#x}+{length:#x} lie outside the "
                            f"{CONFIG_BYTES} bytes of config space")
        comm_k = kernel_comm(comm)
        write = _span(lo, hi - lo)
        # THE logic: the very bitmaps the BPF maps hold
        refused = bitmap_bits(self.refused_bytes(bdf))
        allowed = bitmap_bits(self._allowed.get((bdf, comm_k), bytes(BITMAP_BYTES)))
        flying = [c for c in self.mailboxes(bdf) if c in in_flight]
        exchange = 0
        for c in flying:
            exchange |= bitmap_bits(self.exchange_bytes(bdf, c))
        owner_bits = (refused | exchange) & write  # bytes someone keeps from this write
        hits = ((refused & ~allowed) | exchange) & write
        refs = self._overlapping(bdf, owner_bits, flying)
        where = f"{lo:#x}-{hi - 1:#x} of {bdf}"
        if comm_k in self.allow_comms:
            why = (f"allowed: comm {comm_k} is allowed everywhere (--allow-comm)" if owner_bits
                   else f"allowed: no byte of {where} is refused at level {self.level}")
            return Decision(False, None, None, refs, why, "--allow-comm" if owner_bits else None)
        if not hits:
            lifted = refused & allowed & write
            if lifted:
                claims = [r for r in self._claims.get((bdf, comm_k), ()) if _span(r.start, r.length) & lifted]
                spans = ", ".join(f"{r.start:#x}+{r.length:#x}" for r in claims)
                return Decision(False, None, None, refs,
                                f"allowed: comm {comm_k} holds a user claim on {spans}", comm_k)
            return Decision(False, None, None, refs, f"allowed: no byte of {where} is refused at level {self.level}")
        first, last = (hits & -hits).bit_length() - 1, hits.bit_length() - 1
        why = f"refused: bytes {first:#x}-{last:#x} of {bdf} " + self._blame(refs, hits)
        return Decision(True, first, last, refs, why)

    def _overlapping(self, bdf: str, bits: int, flying: Sequence[int]) -> tuple[RegionRef, ...]:
        """The level's regions and the in-flight mailboxes that hold a byte of ``bits``."""
        out = [RegionRef("collision", self._mailboxes[bdf][c], c, PCI_DOE_CAP_SIZEOF, "doe-exchange-in-flight")
               for c in flying if _span(c, PCI_DOE_CAP_SIZEOF) & bits]
        out += [_ref(r) for r in self._level_regions.get(bdf, ()) if _span(r.start, r.length) & bits]
        return tuple(out)

    @staticmethod
    def _blame(refs: tuple[RegionRef, ...], hits: int) -> str:
        """'are exclusive to cxl_pci (rule ...)' for the first region holding a refused byte."""
        first = (hits & -hits).bit_length() - 1
        r = next((r for r in refs if r.start <= first <= r.end), refs[0])
        if r.kind == "collision":
            text = f"are the DOE mailbox at {r.start:#x} ({r.owner}), with a kernel exchange in flight"
        else:
            text = f"{_VERB[r.kind]} {r.owner} (rule {r.rule})"
        more = sum(1 for x in refs if x is not r and _span(x.start, x.length) & hits)
        return text + (f" and {more} more region{'s' if more > 1 else ''}" if more else "")


# -- offsets and lengths from a syscall's arguments ------------------------------------------

def _verified(pos: int, count: int) -> tuple[int, int]:
    """rw_verify_area() (fs/read_write.c) for a file without FMODE_UNSIGNED_OFFSET (sysfs and
    procfs config files): a negative position, a count negative as ssize_t, or a sum past
    LLONG_MAX fail with -EINVAL before security_file_permission() runs: nothing is written, length
    0. A count past MAX_RW_COUNT is cut to it (vfs_write(), import_iovec())."""
    if pos < 0 or count < 0 or count > _LLONG_MAX or pos + count > _LLONG_MAX:
        return pos, 0
    return pos, min(count, MAX_RW_COUNT)


def write_range(syscall: str, *, count: int | None = None, iov_lens: Sequence[int] | None = None,
                pos: int | None = None, file_pos: int | None = None) -> tuple[int, int]:
    """(offset, length) in bytes a write syscall asks for, as the kernel computes them.

    ``write(fd, buf, count)`` and ``writev(fd, iov, n)`` write at the file position ``file_pos``;
    ``pwrite64(fd, buf, count, pos)`` and ``pwritev(fd, iov, n, pos)`` at ``pos`` (pwritev's
    ``pos_l``/``pos_h`` joined by the caller); ``pwritev2`` at ``pos``, or at ``file_pos`` when
    ``pos`` is -1 (pwritev2(2)). A vector's length is the sum of ``iov_lens`` (cut at MAX_RW_COUNT,
    as import_iovec() does). Arguments the kernel refuses with -EINVAL before
    ``security_file_permission()`` (a negative position, -1 to ``pwritev``, more than 1024 iovecs,
    a negative length) give length 0: nothing to refuse. Unknown syscalls and missing arguments
    raise :class:`GuardArgumentError`.
    """
    if syscall not in GUARD_SYSCALLS:
        raise GuardArgumentError(f"not a write syscall the guard knows: {syscall!r} "
                                 f"(known: {', '.join(GUARD_SYSCALLS)})")
    vector = syscall in ("writev", "pwritev", "pwritev2")
    if vector:
        if iov_lens is None:
            raise GuardArgumentError(f"{syscall}: iov_lens is required")
        if len(iov_lens) > UIO_MAXIOV or any(n < 0 or n > _LLONG_MAX for n in iov_lens):
            length = -1  # -EINVAL from import_iovec()
        else:
            length = min(sum(iov_lens), MAX_RW_COUNT)
    else:
        if count is None:
            raise GuardArgumentError(f"{syscall}: count is required")
        length = count
    if syscall in ("write", "writev") or (syscall == "pwritev2" and pos == -1):
        if file_pos is None:
            raise GuardArgumentError(f"{syscall}: file_pos (the file position) is required")
        at = file_pos
    else:
        if pos is None:
            raise GuardArgumentError(f"{syscall}: pos is required")
        at = pos
    return _verified(at, length)
