"""The one Arrow hex toolkit: bytes <-> lower-case hex string columns, without a Python loop per row.

Trace files carry the bytes of each access as hex text (``data``: two lower-case digits per byte,
in file order). Three places need it: the live backends turn fixed-size record buffers into that
column (:func:`encode_rows`), the trace readers check it (:func:`is_hex`), and the analyzer decodes
it back to bytes (:class:`HexColumn`) and writes old values and changed-bit masks
(:func:`encode_runs`). Every function works on Arrow string arrays' buffers with numpy.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["encode_runs", "encode_rows", "is_hex", "HexColumn", "expand"]

_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_PAIRS = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint8).reshape(256, 2)
_VALUE = np.full(256, 255, dtype=np.uint8)  # hex digit -> value; 255: not a lower-case hex digit
_VALUE[_DIGITS] = np.arange(16)
_LOWER_OK = np.zeros(256, dtype=bool)
_LOWER_OK[_DIGITS] = True
HEX_RE = r"^(?:[0-9a-f]{2})*$"


def expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(owner, k)`` for ``k in range(counts[owner])`` for every owner, flattened."""
    counts = counts.astype(np.int64, copy=False)
    rep = np.repeat(np.arange(counts.size), counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if counts.size else counts
    return rep, np.arange(rep.size) - np.repeat(starts, counts)


def _strings(n: int, lens_chars: np.ndarray, chars: np.ndarray) -> pa.Array:
    """A string array of ``n`` strings from their lengths (characters) and their characters back to back."""
    offsets = np.concatenate(([0], np.cumsum(lens_chars.astype(np.int64)))).astype(np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars)))


def encode_runs(flat: np.ndarray, lens: np.ndarray) -> pa.Array:
    """Hex strings of consecutive runs of the bytes ``flat`` (``lens[i]`` bytes for string ``i``)."""
    flat = flat.astype(np.uint8, copy=False)
    chars = np.empty(flat.size * 2, dtype=np.uint8)
    chars[0::2] = _DIGITS[flat >> 4]
    chars[1::2] = _DIGITS[flat & 15]
    return _strings(lens.size, 2 * lens.astype(np.int64), chars)


def encode_rows(data: np.ndarray, lens: np.ndarray) -> pa.Array:
    """Hex strings of the first ``lens[i]`` bytes of row ``i`` of the byte matrix ``data``
    (shape ``(n, width)``: fixed-size record buffers); null where ``lens[i]`` is 0."""
    n = len(data)
    lens = np.minimum(lens.astype(np.int64), data.shape[1] if data.ndim == 2 else 0)
    width = int(lens.max()) if n else 0
    chars = _PAIRS[data[:, :width]].reshape(n, 2 * width)
    buf = chars[np.arange(2 * width)[None, :] < 2 * lens[:, None]]
    out = _strings(n, 2 * lens, buf)
    return pc.if_else(pa.array(lens > 0), out, pa.scalar(None, pa.string()))


def is_hex(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """Per value: is it lower-case hex, two digits a byte (null stays null)? One pass over each
    chunk's bytes; the regular expression runs only on a chunk that fails it."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out = []
    for c in chunks:
        if pa.types.is_string(c.type) and c.null_count < len(c):
            bufs = c.buffers()
            offs = np.frombuffer(bufs[1], dtype=np.int32, count=len(c) + 1, offset=c.offset * 4)
            data = np.frombuffer(bufs[2], dtype=np.uint8)[offs[0]:offs[-1]] if bufs[2] is not None \
                else np.zeros(0, np.uint8)
            if not (np.diff(offs) % 2).any() and _LOWER_OK[data].all():
                ok = np.ones(len(c), dtype=bool)
                valid = c.is_valid().to_numpy(zero_copy_only=False)
                out.append(pa.array(ok, mask=~valid) if c.null_count else pa.array(ok))
                continue
        out.append(pc.match_substring_regex(c, HEX_RE))
    return pa.chunked_array(out, type=pa.bool_())


class HexColumn:
    """Hex strings decoded to bytes at once.

    ``present[i]``: row ``i`` has at least one byte; ``nbytes[i]``: how many; ``valid[i]``: the
    string is lower-case hex, two digits a byte, or null (a row that is not counts as having no
    bytes); ``flat``: every row's bytes back to back, row ``i``'s starting at ``start[i]``.
    """

    def __init__(self, col: pa.ChunkedArray | pa.Array) -> None:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        if arr.type != pa.string():
            arr = arr.cast(pa.string())
        n = len(arr)
        nonnull = arr.is_valid().to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
        bufs = arr.buffers()
        offs = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4).astype(np.int64) \
            if n else np.zeros(1, np.int64)
        data = np.frombuffer(bufs[2], dtype=np.uint8) if n and bufs[2] is not None else np.zeros(0, np.uint8)
        clen = np.where(nonnull, offs[1:] - offs[:-1], 0)
        ok = nonnull & (clen % 2 == 0)
        used = np.where(ok, clen, 0)
        if int(used.sum()) == int(offs[-1] - offs[0]):
            # the common case: every character between the first and last offset belongs to a
            # row of even length, in order, so the digits are one contiguous slice
            digits = _VALUE[data[offs[0]:offs[-1]]]
        else:
            rep, k = expand(used)
            digits = _VALUE[data[offs[:-1][rep] + k]]
        bad = digits == 255
        if bad.any():  # rows with a character that is not a lower-case hex digit count as no data
            row_of = np.repeat(np.arange(n), used)
            ok &= np.bincount(row_of[bad], minlength=n) == 0
            digits = digits[ok[row_of]]
            used = np.where(ok, clen, 0)
        self.valid: np.ndarray = ok | ~nonnull
        self.nbytes: np.ndarray = used // 2
        self.present: np.ndarray = self.nbytes > 0
        self.flat: np.ndarray = ((digits[0::2] << 4) | digits[1::2]).astype(np.uint8, copy=False)
        self.start: np.ndarray = np.concatenate(([0], np.cumsum(self.nbytes)[:-1])) if n else np.zeros(0, np.int64)

    def byte(self, rows: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Byte ``k[j]`` of row ``rows[j]`` (callers ask only for bytes that exist)."""
        return self.flat[self.start[rows] + k]

    def dword(self, rows: np.ndarray) -> np.ndarray:
        """The first up-to-4 bytes of each row as a little-endian integer (0 where there are none)."""
        out = np.zeros(rows.size, dtype=np.int64)
        nb = self.nbytes[rows]
        for k in range(4):
            m = nb > k
            out[m] |= self.flat[self.start[rows[m]] + k].astype(np.int64) << (8 * k)
        return out
