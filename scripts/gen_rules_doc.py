#!/usr/bin/env python3
"""Regenerates docs/rules.md from the ownership table (src/cfgaudit/regions/rules.py).

tests/test_docs.py fails when the committed file differs from what this prints.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from cfgaudit.regions.rules import RULES, Abs, InCap  # noqa: E402

HEAD = """# The ownership table

Generated from `src/cfgaudit/regions/rules.py` by `scripts/gen_rules_doc.py`; do not edit by hand.
Offsets are bytes. `cap+0xNN` is relative to each capability of that ID that the kernel's own
capability walk reaches. Kernel ranges are `[since, until)`; `-rc` releases sort before the final one.

Kinds: **exclusive** (pci_request_config_region_exclusive(); the kernel checks sysfs writes,
warns once per boot and taints), **managed** (programmed or cached by the kernel, no reservation:
a write silently desynchronises it), **user** (handed to user space).

| rule | kind | owner | bytes | devices | kernels | source |
|---|---|---|---|---|---|---|
"""


def _target(t) -> str:
    if isinstance(t, Abs):
        return f"[{t.offset:#05x}, {t.offset + t.length:#05x}) {t.label}"
    assert isinstance(t, InCap)
    cap = f"{t.space} {t.cap_id:#04x}"
    if t.dvsec_vendor is not None:
        cap += f" DVSEC vendor {t.dvsec_vendor:#06x}"
    if t.ranges is not None:
        return f"{cap}: registers computed from the capability"
    if t.length is None:
        return f"{cap}: whole capability"
    return f"{cap}: cap+{t.offset:#04x}, {t.length} bytes ({t.label})"


def _match(r) -> str:
    m = r.match
    parts = []
    if m.drivers:
        parts.append("driver " + "/".join(sorted(m.drivers)))
    if m.bound:
        parts.append("any driver bound")
    if m.vendors:
        parts.append("vendor " + "/".join(f"{v:#06x}" for v in sorted(m.vendors)))
    if m.header_types:
        parts.append("header type " + "/".join(str(h) for h in sorted(m.header_types)))
    if m.devfn is not None:
        parts.append(f"devfn {m.devfn:02x}")
    if m.root_bus:
        parts.append("root bus")
    if m.test is not None and not parts:
        parts.append("not vfio-pci" if r.kind != "user" else "see source")
    return ", ".join(parts) or "all"


def render() -> str:
    rows = [f"| `{r.id}` | {r.kind} | {r.owner} | {_target(r.target)} | {_match(r)} | {r.kernels} | {r.source}"
            + (f" ({r.note})" if r.note else "") + " |" for r in RULES]
    return HEAD + "\n".join(rows) + "\n"


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "rules.md")
    with open(path, "w") as fh:
        fh.write(render())
