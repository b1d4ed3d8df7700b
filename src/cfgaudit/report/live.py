"""One line per finding as it happens (``cfgaudit replay``, ``cfgaudit trace``), bcc-tool style,
under 100 columns."""
from __future__ import annotations

import pandas as pd

__all__ = ["LIVE_HEADER", "live_lines", "value_text"]

LIVE_HEADER = f"{'TIME(s)':<10} {'PID':>7} {'COMM':<15} {'BDF':<12} {'OFF':>5} {'SZ':>2} {'VALUE':<8} {'OWNER':<12} VERDICT"


def value_text(data: object, size: int) -> str:
    """The value written, as setpci shows it: a hex number for 1/2/4-byte writes (the bytes in
    ``data`` are in file order, little-endian), else the first bytes of the hex."""
    if not isinstance(data, str) or not data:
        return "-"
    if size in (1, 2, 4) and len(data) == 2 * size:
        return f"{int.from_bytes(bytes.fromhex(data), 'little'):0{2 * size}x}"
    return data[:7] + "+"


def _verdict(row) -> str:
    if pd.notna(row.allowed_by):
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
        out.append(f"{(row.ts_ns - t0_ns) / 1e9:<10.6f} {row.pid:>7} {str(row.comm)[:15]:<15} {bdf:<12} "
                   f"{row.offset:>#5x} {row.size:>2} {val:<8} {str(row.owner)[:12]:<12} {_verdict(row)}")
        if verbose or isinstance(row.doe, str):
            if isinstance(row.doe, str):
                out.append(f"{'':>10} {row.doe[:88]}")
        if isinstance(row.kernel_message, str):
            out.append(f"    dmesg: {row.kernel_message[:89]}")
    return out
