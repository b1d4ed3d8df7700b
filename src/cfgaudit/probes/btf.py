"""Member offsets of kernel structs, read from the running kernel's BTF (/sys/kernel/btf/vmlinux).

The kernel backend reads two structs private to drivers/pci/doe.c (``struct pci_doe_mb`` in every
release, ``struct pci_doe_task`` from 6.4), which no header bcc can include describes. Their
layout differs between releases (``prot`` became ``feat`` in v6.15; ``work`` grows with lockdep),
so the offsets come from the kernel's own type information, never from a table of versions.

The format is the kernel's Documentation/bpf/btf.rst: a header (magic 0xEB9F, ``hdr_len``,
``type_off``/``type_len``, ``str_off``/``str_len``, offsets from the end of the header), then
``struct btf_type {u32 name_off; u32 info; u32 size_or_type}`` records (kind in bits 24-28 of
``info``, vlen in bits 0-15, kind_flag bit 31) each followed by kind-specific data; type IDs
count from 1. Struct members are ``{u32 name_off; u32 type; u32 offset}`` with ``offset`` in
bits (with kind_flag: bitfield size in bits 24-31, bit offset in 0-23). Only what member
lookups need is decoded. Offsets returned are bytes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["BtfError", "Btf", "VMLINUX_BTF"]

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
_MAGIC = 0xEB9F
# kinds (include/uapi/linux/btf.h)
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = range(1, 12)
_FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = range(12, 20)
_QUALIFIERS = (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)


class BtfError(Exception):
    """The BTF data is missing, malformed, or lacks the struct or member asked for."""


def _extra(kind: int, vlen: int) -> int:
    """Bytes of kind-specific data after a btf_type record."""
    if kind in (_INT, _VAR, _DECL_TAG):
        return 4
    if kind == _ARRAY:
        return 12
    if kind in (_STRUCT, _UNION, _DATASEC, _ENUM64):
        return 12 * vlen
    if kind in (_ENUM, _FUNC_PROTO):
        return 8 * vlen
    if kind in (_PTR, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _FUNC, _FLOAT, _TYPE_TAG):
        return 0
    raise BtfError(f"unknown BTF kind {kind}")


@dataclass(frozen=True)
class _Type:
    kind: int
    name_off: int
    vlen: int
    kind_flag: bool
    size_or_type: int
    pos: int  # byte position of the kind-specific data in the blob


class Btf:
    """One BTF blob (vmlinux's). ``struct_member_offset("pci_doe_task", "prot.vid")`` -> bytes."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF data too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != _MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x})")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._strs = hdr_len + str_off
        self._str_end = self._strs + str_len
        start, end = hdr_len + type_off, hdr_len + type_off + type_len
        if end > len(data) or self._str_end > len(data):
            raise BtfError("BTF sections run past the data")
        self._pos: list[int] = [-1]  # type ID -> byte position of its btf_type record (ID 0: void)
        self._structs: dict[int, list[int]] = {}   # name_off -> IDs of structs/unions with that name
        pos = start
        unpack = struct.unpack_from
        positions, structs = self._pos, self._structs
        fixed = {k: _extra(k, 0) for k in range(1, 20) if k not in (_STRUCT, _UNION, _DATASEC, _ENUM64, _ENUM,
                                                                      _FUNC_PROTO)}
        while pos < end:
            name_off, info = unpack("<II", data, pos)
            kind = (info >> 24) & 0x1F
            positions.append(pos)
            extra = fixed.get(kind)
            if extra is None:
                vlen = info & 0xFFFF
                if kind in (_STRUCT, _UNION):
                    if name_off:
                        structs.setdefault(name_off, []).append(len(positions) - 1)
                    extra = 12 * vlen
                elif kind in (_DATASEC, _ENUM64):
                    extra = 12 * vlen
                elif kind in (_ENUM, _FUNC_PROTO):
                    extra = 8 * vlen
                else:
                    raise BtfError(f"unknown BTF kind {kind}")
            pos += 12 + extra

    def _type(self, tid: int) -> _Type | None:
        if not 0 < tid < len(self._pos):
            return None
        pos = self._pos[tid]
        name_off, info, size_or_type = struct.unpack_from("<III", self._data, pos)
        return _Type((info >> 24) & 0x1F, name_off, info & 0xFFFF, bool(info >> 31), size_or_type, pos + 12)

    @classmethod
    def read(cls, path: str = VMLINUX_BTF) -> "Btf":
        """The BTF at ``path``; :class:`BtfError` when it cannot be read."""
        try:
            with open(path, "rb") as fh:
                return cls(fh.read())
        except OSError as err:
            raise BtfError(f"cannot read {path}: {err.strerror}") from err

    def _name(self, off: int) -> str:
        pos = self._strs + off
        stop = self._data.index(b"\0", pos, self._str_end)
        return self._data[pos:stop].decode("ascii", "replace")

    def _name_offset(self, name: str) -> int | None:
        needle = b"\0" + name.encode() + b"\0"
        i = self._data.find(needle, self._strs, self._str_end)
        while i != -1:
            off = i + 1 - self._strs
            if off in self._structs:
                return off
            i = self._data.find(needle, i + 1, self._str_end)
        return None

    def _resolve(self, tid: int) -> _Type:
        """The type ``tid`` names, through typedefs and qualifiers."""
        for _ in range(32):
            t = self._type(tid)
            if t is None:
                raise BtfError(f"BTF type {tid} is void or out of range")
            if t.kind not in _QUALIFIERS:
                return t
            tid = t.size_or_type
        raise BtfError("BTF typedef chain too long")

    def _member(self, t: _Type, name: str) -> tuple[int, int] | None:
        """(byte offset, type ID) of member ``name`` of struct/union ``t``; anonymous members are
        searched through."""
        for i in range(t.vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._data, t.pos + 12 * i)
            bits = moff & 0xFFFFFF if t.kind_flag else moff
            if name_off and self._name(name_off) == name:
                return bits // 8, mtype
            if not name_off:
                inner = self._resolve(mtype)
                if inner.kind in (_STRUCT, _UNION):
                    found = self._member(inner, name)
                    if found:
                        return bits // 8 + found[0], found[1]
        return None

    def struct_size(self, struct_name: str) -> int:
        """Bytes of ``struct struct_name``."""
        return self._struct(struct_name).size_or_type

    def _struct(self, struct_name: str) -> _Type:
        off = self._name_offset(struct_name)
        for tid in self._structs.get(off, ()) if off is not None else ():
            t = self._type(tid)
            if t is not None and t.kind == _STRUCT and t.vlen:
                return t
        raise BtfError(f"the kernel's BTF has no struct {struct_name}")

    def struct_member_offset(self, struct_name: str, path: str) -> int:
        """Byte offset of ``path`` (``member`` or ``member.inner``) in ``struct struct_name``."""
        t = self._struct(struct_name)
        total = 0
        for part in path.split("."):
            found = self._member(t, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            total += found[0]
            t = self._resolve(found[1])
        return total

    def first_member_offset(self, struct_name: str, *paths: str) -> int:
        """The offset of the first of ``paths`` the struct has (members renamed across releases)."""
        for p in paths:
            try:
                return self.struct_member_offset(struct_name, p)
            except BtfError:
                continue
        raise BtfError(f"struct {struct_name} has none of {', '.join(paths)}")
