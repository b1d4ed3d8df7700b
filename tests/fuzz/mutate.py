"""Seeded mutators: bytes, lines, JSON trees and the odd values they are filled with.

Every function takes a :class:`random.Random` and is deterministic for a given state, so an
input is reproduced from (seed, format, index) alone. Sizes are bytes; nesting depths are levels.
"""
from __future__ import annotations

import json
import math
import random
from typing import Any, Callable

__all__ = ["INTERESTING_INTS", "INTERESTING_FLOATS", "INTERESTING_STRS", "odd_value", "mutate_bytes",
           "mutate_lines", "mutate_tree", "dump_json", "deep", "DEEP_MARK"]

INTERESTING_INTS: tuple[int, ...] = (
    0, 1, -1, 2, 3, 4, 5, 7, 8, 15, 16, 63, 64, 255, 256, 257, 0x34, 0x100, 0x198, 0xFFC, 4095, 4096, 4097,
    65535, 65536, 2**31 - 1, 2**31, -(2**31), 2**32, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
    2**64, 2**64 + 1, 10**30, -(10**30), 9 * 10**18, 10**12,
)
INTERESTING_FLOATS: tuple[float, ...] = (0.0, -0.0, 0.5, 1.5, 4.0, 1e12, 1e308, -1e308, 5e-324, 4096.0,
                                         math.inf, -math.inf, math.nan)
INTERESTING_STRS: tuple[str, ...] = (
    "", " ", "x", "a" * 300, "\x00", "\n", "\r\n", "\t", "\x1b[31mred\x1b[0m", "\u202e", "\udc80", "\ud800",
    "\U0001f600", "\ufeff", "0000:0d:00.0", "0d:00.0", "0000:0c:00.0", "ffff:ff:1f.7", "ffffffff:ff:1f.7",
    "0000:0d:00.8", "0000:0d:20.0", "6.2.0", "6.2", "6.18.0", "3.0", "99999999999999999999.1", "6.2.0-rc1+",
    "-1", "0x190", "1e400", "write", "read", "sysfs", "procfs", "vfio", "ioport", "devmem", "unknown",
    "cxl_pci", "vfio-pci", "pcieport", "header", "footer", "unmediated", "cfgaudit-trace", "cfgaudit-snapshot",
    "iomem=relaxed", "nan", "null", "{}", "[]", "ZZ", "0", "00", "00" * 4097, "0g", "abc", "0100000",
    "01000000", "ff" * 8, "std:0x10", "ext:0x2e", "dvsec:1e98:0", "doe", "msix", "%s%n", "../../etc/passwd",
)


def deep(n: int, open_: str = "[", close: str = "]") -> str:
    """JSON text nested ``n`` levels deep."""
    return open_ * n + close * n


DEEP_MARK = "\x00__fuzz_deep__\x00"  # a string value replaced by deep nesting after serialisation


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    """One value of any JSON type, biased to boundaries: huge/negative ints, floats, odd strings,
    null, bools, lists, objects, a marker for deep nesting."""
    r = rng.random()
    if r < 0.35:
        v = rng.choice(INTERESTING_INTS)
        return v + rng.choice((0, 0, 0, 1, -1)) if rng.random() < 0.3 else v
    if r < 0.45:
        return rng.choice(INTERESTING_FLOATS)
    if r < 0.72:
        if rng.random() < 0.15:
            return "".join(
                chr(rng.choice((rng.randrange(0x20), rng.randrange(0x20, 0x7F), rng.randrange(0x80, 0x3000))))
                for _ in range(rng.randrange(1, 40)))
        return rng.choice(INTERESTING_STRS)
    if r < 0.78:
        return None
    if r < 0.83:
        return rng.random() < 0.5
    if r < 0.90 and depth < 3:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if r < 0.96 and depth < 3:
        return {rng.choice(("a", "bdf", "offset", "", "record", "x" * 50)): odd_value(rng, depth + 1)
                for _ in range(rng.randrange(0, 3))}
    return DEEP_MARK


def dump_json(doc: Any, rng: random.Random, max_deep: int = 1) -> bytes:
    """``doc`` as JSON bytes, with varied spacing and escaping; lone surrogates become invalid
    UTF-8. The first ``max_deep`` :data:`DEEP_MARK` strings become nesting 10 to 100,000 levels
    deep, any others 3 levels (so repeated records cannot blow an input up to gigabytes)."""
    seps = rng.choice(((",", ":"), (", ", ": "), (",", ": ")))
    text = json.dumps(doc, separators=seps, ensure_ascii=rng.random() < 0.3, allow_nan=True)
    for m in {json.dumps(DEEP_MARK, ensure_ascii=False), json.dumps(DEEP_MARK)}:
        pieces = text.split(m)
        if len(pieces) == 1:
            continue
        out = [pieces[0]]
        for p in pieces[1:]:
            n = rng.choice((10, 200, 1000, 5000, 100000)) if max_deep > 0 else 3
            max_deep -= 1
            out.append(deep(n) if rng.random() < 0.7 else '{"a":' * n + "1" + "}" * n)
            out.append(p)
        text = "".join(out)
    return text.encode("utf-8", "surrogatepass")


# ----------------------------------------------------------------------------------------------
# JSON trees
# ----------------------------------------------------------------------------------------------
def _paths(doc: Any, limit: int = 4000) -> list[tuple[Any, Any]]:
    """(container, key) of every node under ``doc`` (breadth first, at most ``limit``)."""
    out: list[tuple[Any, Any]] = []
    todo = [doc]
    while todo and len(out) < limit:
        node = todo.pop(0)
        items: Any = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append((node, k))
            if isinstance(v, (dict, list)):
                todo.append(v)
    return out


def _tweak(v: Any, rng: random.Random) -> Any:
    """A value near ``v``, or ``v`` as another type."""
    if isinstance(v, bool):
        return rng.choice((not v, int(v), str(v).lower(), None))
    if isinstance(v, int):
        return rng.choice((v + 1, v - 1, -v, v * 2**rng.randrange(1, 64), v + 4096, str(v), float(v), hex(v), [v],
                           v ^ (1 << rng.randrange(64))))
    if isinstance(v, float):
        return rng.choice((int(v) if math.isfinite(v) else 0, -v, v * 1e300, str(v)))
    if isinstance(v, str):
        if not v:
            return rng.choice((" ", None, 0))
        i = rng.randrange(len(v))
        return rng.choice((v[:i], v + v, v.upper(), v[:i] + rng.choice("\x00\udc80\n:.gG") + v[i + 1:],
                           v * (rng.choice((2, 100, 5000)) if len(v) <= 64 else 2), len(v), [v], {"v": v}))
    if isinstance(v, list):
        return rng.choice(([], v + v, v[: len(v) // 2], [v], {"0": v}, None, len(v)))
    if isinstance(v, dict):
        return rng.choice(({}, [v], None, list(v.values())))
    return odd_value(rng)


def mutate_tree(doc: Any, rng: random.Random, focus: tuple[str, ...] = (), n: int | None = None) -> Any:
    """Mutate ``doc`` (a parsed JSON value) in place ``n`` times (default 1 to 4) and return it
    (a new value when the root itself was replaced). ``focus``: keys picked more often."""
    for _ in range(n if n is not None else rng.choice((1, 1, 1, 2, 2, 3, 4))):
        paths = _paths(doc)
        if not paths or rng.random() < 0.02:
            doc = rng.choice((odd_value(rng), [doc], None, 1, "x", [], DEEP_MARK))
            continue
        hot = [p for p in paths if p[1] in focus] if focus else []
        node, key = rng.choice(hot) if hot and rng.random() < 0.7 else rng.choice(paths)
        op = rng.random()
        if op < 0.35:
            node[key] = odd_value(rng)
        elif op < 0.65:
            node[key] = _tweak(node[key], rng)
        elif op < 0.75:
            del node[key]
        elif op < 0.85 and isinstance(node, dict):
            node[rng.choice(focus or ("x",)) if rng.random() < 0.5 else f"k{rng.randrange(9)}"] = odd_value(rng)
        elif op < 0.92 and isinstance(node, list):
            node.insert(rng.randrange(len(node) + 1), rng.choice((odd_value(rng), node[key])))
        else:
            node[key] = rng.choice(([node[key]] * rng.randrange(2, 40), {"v": node[key]}, DEEP_MARK))
    return doc


# ----------------------------------------------------------------------------------------------
# bytes and lines
# ----------------------------------------------------------------------------------------------
_MAGIC_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x0A, 0x0D, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0x30, 0x39,
                0x2D, 0x65, 0xC3, 0xED, 0xF0, 0xFE, 0x20, 0x09, 0x23, 0x3D)
_BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80\x80",
             b"\xe2\x82", b"\xef\xbb\xbf")


def _flip(d: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randrange(1, 9)):
        i = rng.randrange(len(d))
        d[i] ^= 1 << rng.randrange(8)


def _set(d: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randrange(1, 5)):
        d[rng.randrange(len(d))] = rng.choice(_MAGIC_BYTES)


def _insert(d: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(d) + 1)
    what = rng.choice((bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16))), rng.choice(_BAD_UTF8),
                       b"\n", b"\r\n", b"\x00", b'"', b"\\", b"null\n", b"]" * 5, b"9" * 30, b"-", b"e999"))
    d[i:i] = what


def _delete(d: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(d))
    del d[i:i + rng.choice((1, 1, 2, 4, 16, 256, 4096))]


def _duplicate(d: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(d))
    n = rng.choice((1, 8, 64, 1024))
    d[i:i] = d[i:i + n] * rng.choice((1, 2, 10))


def _truncate(d: bytearray, rng: random.Random) -> None:
    del d[rng.randrange(len(d)):]


def _zero(d: bytearray, rng: random.Random) -> None:
    i = rng.randrange(len(d))
    n = min(len(d) - i, rng.choice((4, 16, 256, 4096)))
    d[i:i + n] = bytes([rng.choice((0, 0xFF, 0x20))]) * n


def _splice(d: bytearray, rng: random.Random, other: bytes) -> None:
    if not other:
        return
    i, j = rng.randrange(len(d) + 1), rng.randrange(len(other))
    d[i:] = other[j:j + rng.choice((16, 256, 65536))] + (d[i:] if rng.random() < 0.5 else b"")


_BYTE_OPS: tuple[Callable[[bytearray, random.Random], None], ...] = (
    _flip, _set, _insert, _delete, _duplicate, _truncate, _zero)


def mutate_bytes(data: bytes, rng: random.Random, others: list[bytes] = (), n: int | None = None,  # type: ignore[assignment]
                 tail: int | None = None) -> bytes:
    """``n`` (default 1 to 5) stacked byte-level mutations: bit flips, magic bytes, insertions
    (invalid UTF-8 among them), deletions, duplications, truncation, zeroed ranges, splices from
    ``others``. ``tail``: only touch the last ``tail`` bytes (e.g. a Parquet footer)."""
    d = bytearray(data)
    if not d:
        d = bytearray(b"\n")
    keep = b""
    if tail is not None and len(d) > tail:
        keep, d = bytes(d[:-tail]), d[-tail:]
    for _ in range(n if n is not None else rng.choice((1, 1, 1, 2, 2, 3, 5))):
        if not d:
            d = bytearray(b"{")
        if others and rng.random() < 0.08:
            _splice(d, rng, rng.choice(others))
        else:
            rng.choice(_BYTE_OPS)(d, rng)
    return keep + bytes(d)


def mutate_lines(data: bytes, rng: random.Random, odd_lines: list[bytes], n: int | None = None) -> bytes:
    """``n`` (default 1 to 4) line-level mutations: insert an odd line, delete, duplicate (up to
    thousands of times), swap, join or split lines, CRLF endings, a BOM, a missing final newline."""
    lines = data.split(b"\n")
    for _ in range(n if n is not None else rng.choice((1, 1, 2, 2, 3, 4))):
        if not lines:
            lines = [b""]
        op = rng.random()
        i = rng.randrange(len(lines))
        if op < 0.40:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(odd_lines))
        elif op < 0.55:
            lines[i] = rng.choice(odd_lines)
        elif op < 0.65:
            del lines[i]
        elif op < 0.73:
            lines[i:i] = [lines[i]] * rng.choice((1, 2, 50, 3000))
        elif op < 0.80:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op < 0.85 and i + 1 < len(lines):
            lines[i:i + 2] = [lines[i] + rng.choice((b"", b" ", b"\r")) + lines[i + 1]]
        elif op < 0.90 and lines[i]:
            k = rng.randrange(len(lines[i]))
            lines[i:i + 1] = [lines[i][:k], lines[i][k:]]
        elif op < 0.94:
            lines = [ln + b"\r" for ln in lines]
        elif op < 0.97:
            lines[0] = b"\xef\xbb\xbf" + lines[0]
        else:
            while lines and not lines[-1]:
                lines.pop()
    return b"\n".join(lines)
