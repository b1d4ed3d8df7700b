#!/usr/bin/env python3
"""Writes tests/data/dumps/odd/*.txt: hand-made config spaces with odd capability chains.

Each is checked against `lspci -F FILE -vvv` by tests/test_capabilities_oracle.py. Rerun
this script after changing it (the dumps are committed so the oracle test needs no setup).
"""
from __future__ import annotations

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dumps", "odd")


class Space:
    def __init__(self, size: int = 4096, htype: int = 0, vendor: int = 0x1AF4, device: int = 0x1234,
                 klass: int = 0x020000) -> None:
        self.b = bytearray(size)
        struct.pack_into("<HH", self.b, 0, vendor, device)
        self.b[0x09:0x0C] = klass.to_bytes(3, "little")
        self.b[0x0E] = htype

    def caps(self, ptr: int, ptr_reg: int = 0x34) -> "Space":
        self.b[0x06] |= 0x10  # Status: capability list
        self.b[ptr_reg] = ptr
        return self

    def cap(self, off: int, cid: int, nxt: int, body: bytes = b"") -> "Space":
        self.b[off] = cid
        self.b[off + 1] = nxt
        self.b[off + 2 : off + 2 + len(body)] = body
        return self

    def express(self, off: int, nxt: int, ptype: int = 0, ver: int = 2) -> "Space":
        flags = (ptype << 4) | ver
        return self.cap(off, 0x10, nxt, struct.pack("<H", flags) + b"\x00" * 8 + struct.pack("<I", 0x00000411 | (4 << 4)))

    def ext(self, off: int, cid: int, nxt: int, ver: int = 1, body: bytes = b"") -> "Space":
        struct.pack_into("<I", self.b, off, cid | (ver << 16) | (nxt << 20))
        self.b[off + 4 : off + 4 + len(body)] = body
        return self


def dvsec(vendor: int, length: int, dvsec_id: int, rev: int = 1) -> bytes:
    return struct.pack("<IH", vendor | (rev << 16) | (length << 20), dvsec_id)


def dump(bdf: str, sp: Space, upto: int | None = None) -> str:
    n = upto or len(sp.b)
    lines = [f"{bdf} Ethernet controller: Made up"]
    for row in range(0, n, 16):
        w = 2 if row < 0x100 else 3
        lines.append(f"{row:0{w}x}: " + " ".join(f"{x:02x}" for x in sp.b[row : row + 16]))
    return "\n".join(lines) + "\n\n"


def cases() -> dict[str, str]:
    out: dict[str, str] = {}
    pm = struct.pack("<H", 0x0003)
    out["std-loop"] = dump("0000:01:00.0", Space().caps(0x40).cap(0x40, 0x01, 0x50, pm).cap(0x50, 0x05, 0x40), 256)
    out["std-self-loop"] = dump("0000:01:00.0", Space().caps(0x40).cap(0x40, 0x09, 0x40, b"\x08"), 256)
    out["std-misaligned"] = dump("0000:01:00.0", Space().caps(0x43).cap(0x40, 0x01, 0x51, pm).cap(0x50, 0x05, 0x00, struct.pack("<H", 0x0180)), 256)
    out["std-broken-ff"] = dump("0000:01:00.0", Space().caps(0x40).cap(0x40, 0x01, 0x60).cap(0x60, 0xFF, 0x70), 256)
    out["std-header-pointer"] = dump("0000:01:00.0", Space().caps(0x40).cap(0x40, 0x05, 0x10, struct.pack("<H", 0x0080)), 256)
    out["std-no-caplist-bit"] = dump("0000:01:00.0", (lambda s: (s.b.__setitem__(0x34, 0x40), s.cap(0x40, 0x01, 0), s)[2])(Space()), 256)
    out["std-unknown-id"] = dump("0000:01:00.0", Space().caps(0x40).cap(0x40, 0x42, 0x48).cap(0x48, 0x09, 0x00, b"\x0c"), 256)
    s = Space().caps(0x40)
    for i, off in enumerate(range(0x40, 0x100, 4)):
        s.cap(off, 0x09 if i % 2 else 0x0A, (off + 4) & 0xFF)
    out["std-48-slots"] = dump("0000:01:00.0", s, 256)
    cb = Space(htype=2, klass=0x060700).caps(0x80, ptr_reg=0x14).cap(0x80, 0x01, 0x00, pm)
    out["cardbus"] = dump("0000:02:00.0", cb, 256)
    # Extended lists need a PCI Express capability.
    base = lambda: Space().caps(0x40).express(0x40, 0x00)  # noqa: E731
    out["ext-loop"] = dump("0000:03:00.0", base().ext(0x100, 0x01, 0x140).ext(0x140, 0x03, 0x100))
    out["ext-below-0x100"] = dump("0000:03:00.0", base().ext(0x100, 0x0E, 0x040))
    out["ext-all-ones"] = dump("0000:03:00.0", (lambda s: (struct.pack_into("<I", s.b, 0x200, 0xFFFFFFFF), s)[1])(base().ext(0x100, 0x0D, 0x200)))
    out["ext-misaligned"] = dump("0000:03:00.0", base().ext(0x100, 0x18, 0x142).ext(0x140, 0x2E, 0x000))
    sp = base()
    for pos in range(0x100, 0x1000, 0x100):
        sp.b[pos : pos + 4] = sp.b[0:4]
    out["ext-aliased"] = dump("0000:03:00.0", sp)
    out["ext-256-byte-dump"] = dump("0000:03:00.0", base().ext(0x100, 0x01, 0x000), 256)
    out["x-64-byte-dump"] = dump("0000:03:00.0", base(), 64)
    cxl = (Space(vendor=0x8086, device=0x0D93, klass=0x050210).caps(0x40)
           .cap(0x40, 0x05, 0x60, struct.pack("<H", 0x0180)).cap(0x60, 0x09, 0x80, b"\x14")
           .express(0x80, 0x00)
           .ext(0x100, 0x23, 0x138, body=dvsec(0x1E98, 0x38, 0))
           .ext(0x138, 0x23, 0x160, body=dvsec(0x8086, 0x24, 8))
           .ext(0x160, 0x0B, 0x180, body=struct.pack("<I", 0x0001 | (1 << 16) | (0x20 << 20)))
           .ext(0x180, 0x2E, 0x1A0).ext(0x1A0, 0x2E, 0x1C0, ver=1)
           .ext(0x1C0, 0x10, 0x300).ext(0x300, 0x15, 0x400, body=b"\x00" * 4 + struct.pack("<I", 2 << 5))
           .ext(0x400, 0x1E, 0xFFC).ext(0xFFC, 0x2F, 0x000))
    out["ext-long-cxl"] = dump("0000:04:00.0", cxl)
    multi = dump("05:00.0", base().ext(0x100, 0x01, 0x000)) + dump("05:00.1", Space().caps(0x40).cap(0x40, 0x11, 0x00), 256)
    out["multi-no-domain"] = multi
    return out


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, text in cases().items():
        with open(os.path.join(OUT, f"{name}.txt"), "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
