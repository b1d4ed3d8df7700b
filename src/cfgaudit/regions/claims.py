"""User claim files (``--claims FILE``, TOML): ranges the kernel table does not know.

Example::

    # A proprietary driver owns its vendor capability's mailbox.
    [[claim]]
    kind = "managed"              # exclusive | managed | user
    owner = "acme_drv"
    vendor = 0x1234               # match: bdf, or any of vendor/device/class/driver
    capability = "std:0x09"       # std:ID, ext:ID, dvsec:VENDOR:ID, or a name (doe, msi, ...)
    offset = 0x04                 # inside the capability (absolute when no capability)
    length = 8                    # default: the capability's length

    # The administrator unbound the kernel from this DOE mailbox for an SPDM tool.
    [[claim]]
    kind = "user"
    owner = "spdm-tool"
    bdf = "0000:0d:00.0"
    capability = "doe"
    kernels = ">=6.4"             # optional: only on these releases

Every problem is reported as ``FILE:LINE: message``.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

from ..errors import InputError
from ..files import open_input
from .capabilities import EXT_CAPS, STD_CAPS
from .configspace import PCI_CFG_SPACE_EXP_SIZE, normalize_bdf
from .kernel import KernelRange, parse_kernel
from .rules import Abs, InCap, Match, Rule

__all__ = ["load_claims", "CLAIM_KEYS"]

CLAIM_KEYS = {"kind", "owner", "bdf", "vendor", "device", "class", "driver", "capability",
              "offset", "length", "kernels", "note", "name"}
_KINDS = ("exclusive", "managed", "user")
MAX_CLAIMS_BYTES = 16 << 20  # a claims file is read whole: a larger one is refused


def _cap_aliases() -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for cid, spec in STD_CAPS.items():
        out.setdefault(spec.tag.lower(), ("std", cid))
    for cid, spec in EXT_CAPS.items():
        out.setdefault(spec.tag.lower(), ("ext", cid))
    out.update({"pcie": ("std", 0x10), "express": ("std", 0x10), "msi-x": ("std", 0x11), "aer": ("ext", 0x01)})
    return out


@dataclass
class _Loc:
    path: str
    text_lines: list[str]
    headers: list[int]  # 1-based line of each [[claim]]

    def line_of(self, index: int, key: str | None = None) -> int:
        if index >= len(self.headers):
            return 1
        start = self.headers[index]
        end = self.headers[index + 1] if index + 1 < len(self.headers) else len(self.text_lines) + 1
        if key:
            pat = re.compile(rf"^\s*{re.escape(key)}\s*=")
            for ln in range(start, end):
                if pat.match(self.text_lines[ln - 1]):
                    return ln
        return start


def _int(v: object, what: str, path: str, line: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{what} must be an integer (e.g. 0x190), not {v!r}", path=path, line=line)
    if v < 0:
        raise InputError(f"{what} must not be negative", path=path, line=line)
    return v


def _parse_kernels(spec: str, path: str, line: int) -> KernelRange:
    since = until = None
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        m = re.match(r"^(>=|<)\s*(\S+)$", part)
        if not m:
            raise InputError(f"kernels: {part!r} is not '>=REL' or '<REL'", path=path, line=line)
        try:
            parse_kernel(m[2])
        except InputError as err:
            raise InputError(f"kernels: {err.message}", path=path, line=line) from err
        if m[1] == ">=":
            since = m[2]
        else:
            until = m[2]
    return KernelRange(since, until)


def _parse_cap(spec: str, path: str, line: int) -> tuple[str, int, int | None, int | None]:
    """-> (space, id, dvsec_vendor, dvsec_id)"""
    s = spec.strip().lower()
    try:
        if s.startswith("dvsec:"):
            parts = s.split(":")
            if len(parts) != 3:
                raise ValueError
            return "ext", 0x23, int(parts[1], 16), int(parts[2], 0)
        if s.startswith(("std:", "ext:")):
            space, cid = s.split(":", 1)
            return space, int(cid, 0), None, None
    except ValueError:
        raise InputError(f"capability {spec!r}: want std:ID, ext:ID, dvsec:VENDOR:ID or a name",
                         path=path, line=line) from None
    alias = _cap_aliases().get(s)
    if alias is None:
        raise InputError(f"capability {spec!r} is not known "
                         "(try std:ID, ext:ID, dvsec:VENDOR:ID, or doe, msi, msix, pcie, aer)",
                         path=path, line=line)
    return alias[0], alias[1], None, None


def load_claims(path: str) -> list[Rule]:
    """Parse and validate a claims file into rules (``rule`` id ``claims:FILE:LINE``)."""
    try:
        with open_input(path, "claims file", MAX_CLAIMS_BYTES) as fh:
            raw = fh.read()
    except OSError as err:
        raise InputError(f"cannot read claims file: {err.strerror}", path=path) from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:  # TOML is UTF-8
        raise InputError("not UTF-8 text (TOML must be UTF-8)", path=path,
                         line=raw[: err.start].count(b"\n") + 1) from err
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"\(at line (\d+), column \d+\)", str(err))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(err))
        raise InputError(f"not valid TOML: {msg}", path=path, line=int(m[1]) if m else None) from err
    except RecursionError as err:  # tomllib recurses on nested arrays and inline tables
        raise InputError("not valid TOML: nested too deeply", path=path) from err
    lines = text.splitlines()
    loc = _Loc(path, lines, [i for i, ln in enumerate(lines, 1) if re.match(r"^\s*\[\[\s*claim\s*\]\]", ln)])
    unknown_top = set(doc) - {"claim"}
    if unknown_top:
        key = sorted(unknown_top)[0]
        ln = next((i for i, t in enumerate(lines, 1) if re.match(rf"^\s*\[?\s*{re.escape(key)}\b", t)), 1)
        raise InputError(f"unknown top-level key {key!r} (claims go in [[claim]] tables)", path=path, line=ln)
    claims = doc.get("claim", [])
    bad = claims if not isinstance(claims, list) else next((c for c in claims if not isinstance(c, dict)), None)
    if bad is not None:
        ln = next((i for i, t in enumerate(lines, 1) if re.match(r"^\s*claim\s*=", t)), 1)
        what = f"not {bad!r}" if bad is claims else f"not an array holding {bad!r}"
        raise InputError(f"'claim' must be an array of tables ([[claim]]), {what}"[:200], path=path, line=ln)
    rules: list[Rule] = []
    for i, c in enumerate(claims):
        rules.append(_claim_rule(c, i, loc))
    return rules


def _claim_rule(c: dict, i: int, loc: _Loc) -> Rule:
    path = loc.path
    L = lambda key=None: loc.line_of(i, key)  # noqa: E731
    for key in c:
        if key not in CLAIM_KEYS:
            raise InputError(f"unknown key {key!r} (known: {', '.join(sorted(CLAIM_KEYS))})", path=path, line=L(key))
    kind = c.get("kind")
    if kind not in _KINDS:
        raise InputError(f"kind must be one of {', '.join(_KINDS)}, not {kind!r}", path=path,
                         line=L("kind" if "kind" in c else None))
    owner = c.get("owner")
    if not isinstance(owner, str) or not owner.strip():
        raise InputError("owner is required (a driver or tool name)", path=path,
                         line=L("owner" if "owner" in c else None))
    bdf = None
    if "bdf" in c:
        if not isinstance(c["bdf"], str):
            raise InputError("bdf must be a string like \"0000:0d:00.0\"", path=path, line=L("bdf"))
        try:
            bdf = normalize_bdf(c["bdf"])
        except InputError as err:
            raise InputError(err.message, path=path, line=L("bdf")) from err
    vendor = _int(c["vendor"], "vendor", path, L("vendor")) if "vendor" in c else None
    device = _int(c["device"], "device", path, L("device")) if "device" in c else None
    klass = _int(c["class"], "class", path, L("class")) if "class" in c else None
    driver = c.get("driver")
    if driver is not None and not isinstance(driver, str):
        raise InputError("driver must be a string", path=path, line=L("driver"))
    if bdf is None and vendor is None and device is None and klass is None and driver is None:
        raise InputError("a claim needs a device: bdf, or vendor/device/class/driver", path=path, line=L())
    offset = _int(c.get("offset", 0), "offset", path, L("offset"))
    length = _int(c["length"], "length", path, L("length")) if "length" in c else None
    if length == 0:
        raise InputError("length must be at least 1 byte", path=path, line=L("length"))
    # A capability lies inside config space, so no offset into it reaches byte 4096 either.
    if offset >= PCI_CFG_SPACE_EXP_SIZE:
        raise InputError(f"offset {offset:#x} is past the {PCI_CFG_SPACE_EXP_SIZE} bytes of config space",
                         path=path, line=L("offset"))
    if length is not None and offset + length > PCI_CFG_SPACE_EXP_SIZE:
        raise InputError(f"offset {offset:#x} + length {length} runs past {PCI_CFG_SPACE_EXP_SIZE} bytes of "
                         "config space", path=path, line=L("length"))
    kernels = KernelRange()
    if "kernels" in c:
        if not isinstance(c["kernels"], str):
            raise InputError("kernels must be a string like \">=6.2, <6.4\"", path=path, line=L("kernels"))
        kernels = _parse_kernels(c["kernels"], path, L("kernels"))
    line = L()
    label = c.get("name") or c.get("note")
    if "capability" in c:
        if not isinstance(c["capability"], str):
            raise InputError("capability must be a string like \"ext:0x2e\"", path=path, line=L("capability"))
        space, cid, dv, di = _parse_cap(c["capability"], path, L("capability"))
        target: Abs | InCap = InCap(space, cid, offset, length, label if isinstance(label, str) else None,
                                    dvsec_vendor=dv, dvsec_id=di)
    else:
        if length is None:
            raise InputError("length is required when no capability is given", path=path, line=L())
        target = Abs(offset, length, label if isinstance(label, str) else "claimed range")

    def test(d, bdf=bdf, vendor=vendor, device=device, klass=klass) -> bool:
        cs = d.cs
        if bdf is not None and cs.bdf != bdf:
            return False
        if vendor is not None and cs.vendor != vendor:
            return False
        if device is not None and cs.device != device:
            return False
        if klass is not None:
            cc = cs.class_code
            if cc is None or (cc if klass > 0xFFFF else cc >> 8) != klass:
                return False
        return True

    match = Match(drivers=frozenset({driver}) if driver else None, test=test)
    where = f"{path}:{line}"
    return Rule(f"claims:{where}", kind, owner.strip(), target, f"user claim, {where}", match, kernels)
