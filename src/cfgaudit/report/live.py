"""One line per finding as it happens (``cfgaudit replay``, ``cfgaudit trace``), bcc-tool style,
under 100 columns."""
from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the type only: the live lines need no pandas (cfgaudit --help loads this module)
    import pandas as pd

__all__ = ["LIVE_HEADER", "live_lines", "value_text", "notice_line", "event_lines", "summary_lines", "printable",
           "unknown_device_line", "unknown_device_lines", "unknown_device_total", "UNKNOWN_SHOWN", "NOT_FOLLOWED_KINDS",
           "not_followed", "notice_summary_lines", "NOTICES_SHOWN"]

LIVE_HEADER = (f"{'TIME(s)':<10} {'PID':>7} {'COMM':<15} {'BDF':<12} {'OFF':>5} {'SZ':>2} {'VALUE':<8} "
               f"{'OWNER':<12} VERDICT")


def printable(s: str) -> str:
    """``s`` with control and other non-printable characters escaped (``\\n``, ``\\x1b``): names
    come from unprivileged processes (comm, paths) and must not reach a terminal raw."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


def value_text(data: object, size: int) -> str:
    """The value written, as setpci shows it: a hex number for 1/2/4-byte writes (the bytes in
    ``data`` are in file order, little-endian), else the first bytes of the hex."""
    if not isinstance(data, str) or not data:
        return "-"
    if size in (1, 2, 4) and len(data) == 2 * size:
        return f"{int.from_bytes(bytes.fromhex(data), 'little'):0{2 * size}x}"
    return data[:7] + "+"


def _verdict(row) -> str:
    if isinstance(row.allowed_by, str):  # a claim's name; missing: pd.NA (string columns)
        return f"allowed({row.allowed_by})"[:18]
    v = str(row.kind)
    if row.kernel_taints:
        v += "+taint" + ("+log" if row.kernel_logs else "")
    return v


def live_lines(f: pd.DataFrame, t0_ns: int, verbose: bool = False) -> list[str]:
    """Lines for ``f``'s findings; one per (write, region). ``t0_ns``: time zero of the TIME column."""
    out = []
    for row in f.itertuples(index=False):
        val = value_text(row.data, row.size)
        bdf = str(row.bdf)[5:] if str(row.bdf).startswith("0000:") else str(row.bdf)[:12]
        out.append(f"{(row.ts_ns - t0_ns) / 1e9:<10.6f} {row.pid:>7} {printable(str(row.comm))[:15]:<15} {bdf:<12} "
                   f"{row.offset:>#5x} {row.size:>2} {val:<8} {str(row.owner)[:12]:<12} {_verdict(row)}")
        collision = getattr(row, "collision", None)
        if isinstance(collision, str):
            out.append(f"{'':>10} COLLISION: {printable(collision)[:77]}")
        if verbose or isinstance(row.doe, str):
            if isinstance(row.doe, str):
                out.append(f"{'':>10} {printable(row.doe)[:88]}")
        if isinstance(row.kernel_message, str):
            out.append(f"    dmesg: {printable(row.kernel_message)[:89]}")
    return out


UNKNOWN_SHOWN = 20  # unknown devices named one by one in a report; the rest are summed up in one line


def unknown_device_line(d: dict) -> str:
    """The sentence for the writes to one device not in the sources (an entry of the summary's
    ``unknown_devices``), control characters escaped."""
    first = d.get("first") or {}
    n = int(d.get("writes") or 0)
    off = first.get("offset")
    at = f"+{off:#x}" if isinstance(off, int) else "+?"
    return printable(f"Unknown device {d.get('bdf', '?')}: {n} write{'' if n == 1 else 's'} (first: pid "
                     f"{first.get('pid', '?')} {first.get('comm', '?')} at {at}): not in the sources "
                     "(snapshot, dumps, sysfs): its owned ranges are unknown")


def unknown_device_lines(s: dict, limit: int = UNKNOWN_SHOWN) -> list[str]:
    """One line per device not in the sources that was written to (from a report's summary
    ``s``), at most ``limit``, then one line for the rest."""
    devs = s.get("unknown_devices") or []
    out = [unknown_device_line(d) for d in devs[:limit]]
    if len(devs) > limit:
        rest = sum(int(d.get("writes") or 0) for d in devs[limit:])
        out.append(f"... and {len(devs) - limit} more unknown devices ({rest} writes)")
    return out


def unknown_device_total(s: dict) -> str | None:
    """All writes to devices not in the sources in one sentence (``None``: there were none)."""
    n = int(s.get("unknown_device_writes") or 0)
    if not n:
        return None
    k = len(s.get("unknown_devices") or [])
    return (f"{n} write{'' if n == 1 else 's'} to {k} device{'' if k == 1 else 's'} not in the sources "
            "(unknown devices): what they hit is unknown")


# Notice kinds (the syscall backend's UM_* names, lower case) that are paths to config space the
# syscall backend cannot follow, not grants of unmediated access: an open of /dev/vfio/* (config
# writes go through the VFIO device fd's region) and io_uring_setup() (writes submitted through a
# ring are no write syscall). The kernel backend sees the config writes of both.
NOT_FOLLOWED_KINDS = ("vfio", "io_uring")
NOTICES_SHOWN = 5  # notices of each kind described one by one in a report (all are counted)
_WIDTH = 100  # columns of a live line


def not_followed(n: dict[str, Any]) -> bool:
    """Is the notice record ``n`` (``{"record": "unmediated", ...}``) a path the syscall backend
    cannot follow, rather than a grant? Records without ``kind`` (older traces) are grants,
    unless their ``via`` is vfio."""
    kind = n.get("kind") or ""
    return kind in NOT_FOLLOWED_KINDS if kind else n.get("via") == "vfio"


def notice_line(pid: int, comm: str, what: str, kind: str = "") -> str:
    """The line(s) for a notice: a grant of unmediated access (ioperm/iopl, /dev/mem, /dev/port;
    ``UNMEDIATED``) or a path the syscall backend cannot follow (``kind`` vfio or io_uring; ``NOT
    SEEN``). A ``what`` too long for one line of 100 columns goes on indented lines below."""
    label = "NOT SEEN" if kind in NOT_FOLLOWED_KINDS else "UNMEDIATED"
    head = f"{'':>10} {pid:>7} {printable(comm)[:15]:<15} {label:<10} "
    return "\n".join(textwrap.wrap(printable(what), _WIDTH, initial_indent=head, subsequent_indent=" " * 11,
                                    break_long_words=True, break_on_hyphens=False) or [head.rstrip()])


def notice_summary_lines(s: dict[str, Any], shown: int = 0) -> list[str]:
    """Sentences for the notices of a report's summary ``s`` (``s["unmediated"]``: notice
    records): the grants of unmediated access, the opens of /dev/vfio/* and the io_uring set-ups,
    each counted, and with ``shown`` the first that many of each as ``pid N (comm) what``."""
    notes = [n for n in s.get("unmediated") or [] if isinstance(n, dict)]
    grants = [n for n in notes if not not_followed(n)]
    vfio = [n for n in notes if not_followed(n) and (n.get("kind") or "vfio") == "vfio"]
    uring = [n for n in notes if not_followed(n) and n.get("kind") == "io_uring"]
    out: list[str] = []
    for group, line in (
            (grants, f"{len(grants)} grant(s) of unmediated access (ioperm/iopl, /dev/mem, /dev/port)"),
            (vfio, f"{len(vfio)} open(s) of /dev/vfio/*: config writes through VFIO devices are not visible to "
                   "the syscall backend (the kernel backend sees them)"),
            (uring, f"{len(uring)} io_uring set-up(s): writes to config files submitted through io_uring are not "
                    "visible to the syscall backend (the kernel backend sees them)")):
        if not group:
            continue
        out.append(line)
        for n in group[:shown]:
            out.append(printable(f"  pid {n.get('pid', '?')} ({n.get('comm', '?')}) {n.get('what', '?')}"))
        if shown and len(group) > shown:
            out.append(f"  ... and {len(group) - shown} more")
    return out


def event_lines(events: list[dict], t0_ns: int) -> list[str]:
    """``-v`` lines for accesses without a finding (``events``: rows of the event schema)."""
    return [f"{(e['ts_ns'] - (t0_ns or e['ts_ns'])) / 1e9:<10.6f} {e['pid']:>7} {printable(e['comm'])[:15]:<15} "
            f"{e['bdf'][5:]:<12} {e['offset']:>#5x} {e['size']:>2} {value_text(e['data'], e['size']):<8} "
            f"{'-':<12} {e['op']}" for e in events]


def pid_list(pids: list[int], most: int = 8) -> str:
    """'pid 12, 15' (at most ``most`` of them, then '...')."""
    return "pid " + ", ".join(map(str, pids[:most])) + (", ..." if len(pids) > most else "")


def summary_lines(s: dict) -> list[str]:
    """The closing lines of a live run, from its report's ``summary``."""
    out = [f"{s.get('events', 0)} config accesses ({s.get('writes', 0)} writes, {s.get('reads', 0)} reads); "
           f"{s.get('writes_with_findings', 0)} writes hit owned bytes: {s.get('exclusive_writes', 0)} exclusive, "
           f"{s.get('managed_writes', 0)} managed; the kernel would taint on {s.get('kernel_taints', 0)}"]
    if s.get("collision_events"):
        out.append(f"COLLISION: {s['collision_events']} event(s) where user space and the kernel's own DOE exchange "
                   "met on one mailbox")
    out += unknown_device_lines(s, limit=5)
    out += notice_summary_lines(s)  # the notices themselves were printed as they came
    if s.get("unresolved_opens"):
        out.append(f"{s['unresolved_opens']} relative open(s) of a possible config file closed before cfgaudit "
                   "could resolve them: their writes are not reported")
    if s.get("still_running"):
        pids = s["still_running"]
        out.append(f"{len(pids)} descendant(s) still running at the end ({pid_list(pids)}): their later "
                   "accesses were not traced")
    if s.get("lost"):
        out.append(f"Possibly lost {s['lost']} events (ring buffer full): raise --buffer-pages")
    else:
        out.append("0 events lost")
    return out
