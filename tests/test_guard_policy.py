"""The guard's refusal decision (issue 12, fast tier): byte bitmaps per level, allow rules, the DOE
mailbox at ``collision``, and the offsets each write syscall asks for. The registry is the DOE
sample's (sample-traces/cxl-doe-6.2: a cxl_pci CXL device, DOE capability at 0x190)."""
from __future__ import annotations

import dataclasses

import pytest

from cfgaudit.audit import open_analysis
from cfgaudit.errors import CfgauditError
from cfgaudit.regions.build import RegistryResult
from cfgaudit.regions.guard import (
    BITMAP_BYTES,
    GUARD_LEVELS,
    MAX_RW_COUNT,
    GuardArgumentError,
    GuardPolicy,
    bitmap,
    bitmap_bits,
    kernel_comm,
    write_range,
)
from cfgaudit.regions.registry import Region
from support.kdoe import CXL, DOE_CAP, SAMPLE

MB = 0x18  # a DOE mailbox's bytes (PCI_DOE_CAP_SIZEOF)


def registry(kernel: str = "6.2", claims: list[str] | None = None) -> RegistryResult:
    return open_analysis([SAMPLE], kernel=kernel, claims=claims or []).registry


@pytest.fixture(scope="module")
def res62() -> RegistryResult:
    return registry("6.2")  # DOE at 0x190+0x18 exclusive to cxl_pci


@pytest.fixture(scope="module")
def res68() -> RegistryResult:
    return registry("6.8")  # DOE at 0x190+0x18 managed by the PCI core


def claims_file(tmp_path, owner: str, offset: int = 0, length: int | None = None, cap: str | None = "doe") -> str:
    lines = ["[[claim]]", 'kind = "user"', f'owner = "{owner}"', f'bdf = "{CXL}"']
    if cap:
        lines.append(f'capability = "{cap}"')
    if offset:
        lines.append(f"offset = {offset:#x}")
    if length is not None:
        lines.append(f"length = {length}")
    p = tmp_path / f"claims-{owner[:8]}-{offset}.toml"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


# -------------------------------------------------------------------------- bitmap layout

def test_bitmap_bit_order_hand_computed() -> None:
    # offsets 0x198..0x19b: byte 0x198 // 8 = 0x33, bits 0-3 (LSB first) -> 0x0f
    bm = bitmap([(0x198, 4)])
    assert len(bm) == BITMAP_BYTES == 512
    assert bm[0x33] == 0x0F and sum(bm) == 0x0F
    # offsets 0x19e..0x1a1 straddle two bytes: 0x33 gets bits 6, 7 (0xc0), 0x34 bits 0, 1 (0x03)
    bm = bitmap([(0x19E, 4)])
    assert (bm[0x33], bm[0x34]) == (0xC0, 0x03)
    # offset 5 alone: byte 0, bit 5
    assert bitmap([(5, 1)])[0] == 0b0010_0000
    assert bitmap_bits(bitmap([(4095, 1)])) == 1 << 4095
    assert bitmap([(4090, 100), (-3, 4)]) == bitmap([(4090, 6), (0, 1)])  # clipped to 0..4095
    with pytest.raises(ValueError):
        bitmap_bits(b"\0" * 511)


def test_refused_bytes_of_the_sample_doe_mailbox(res62) -> None:
    bm = GuardPolicy(res62, "exclusive").refused_bytes(CXL)
    # exclusive at 6.2: the DOE mailbox 0x190..0x1a7 only: bytes 0x32, 0x33, 0x34 of the bitmap, all bits
    assert [i for i, b in enumerate(bm) if b] == [0x32, 0x33, 0x34]
    assert bm[0x32] == bm[0x33] == bm[0x34] == 0xFF
    assert GuardPolicy(res62, "exclusive").refused_bytes("0000:99:00.0") == bytes(512)  # unknown device


# -------------------------------------------------------------------------- levels and edges

@pytest.mark.parametrize(("offset", "length", "refused", "first", "last"), [
    (0x18C, 4, False, None, None),   # ends one byte before the region
    (0x18D, 4, True, 0x190, 0x190),  # straddles the start: one byte in
    (0x190, 1, True, 0x190, 0x190),  # the first byte
    (0x198, 4, True, 0x198, 0x19B),  # inside
    (0x1A7, 1, True, 0x1A7, 0x1A7),  # the last byte
    (0x1A6, 4, True, 0x1A6, 0x1A7),  # straddles the end
    (0x1A8, 4, False, None, None),   # one byte after
    (0x180, 0x40, True, 0x190, 0x1A7),  # covers it all
])
def test_exclusive_region_edges(res62, offset, length, refused, first, last) -> None:
    d = GuardPolicy(res62, "exclusive").decide(CXL, offset, length, "doe-tool")
    assert (d.refused, d.first, d.last) == (refused, first, last)
    if refused:
        assert d.why.startswith(f"refused: bytes {first:#x}-{last:#x} of {CXL} are exclusive to cxl_pci "
                                "(rule cxl-pci-doe-exclusive)")
        assert [(r.kind, r.owner, r.start, r.length) for r in d.regions] == [("exclusive", "cxl_pci", 0x190, MB)]
    else:
        assert d.why.startswith("allowed: no byte of") and d.regions == ()


def test_levels(res62, res68) -> None:
    cmd, doe = (0x04, 2), (0x198, 4)  # Command (managed by cxl_pci), the DOE control register
    want = {  # (kernel, level) -> (Command refused, DOE refused without an exchange in flight)
        ("6.2", "collision"): (False, False), ("6.2", "exclusive"): (False, True), ("6.2", "managed"): (True, True),
        ("6.8", "collision"): (False, False), ("6.8", "exclusive"): (False, False), ("6.8", "managed"): (True, True),
    }
    for (kernel, level), (w_cmd, w_doe) in want.items():
        pol = GuardPolicy(res62 if kernel == "6.2" else res68, level)
        assert pol.decide(CXL, *cmd, "setpci").refused is w_cmd, (kernel, level)
        assert pol.decide(CXL, *doe, "setpci").refused is w_doe, (kernel, level)
    d = GuardPolicy(res68, "managed").decide(CXL, 0x198, 4, "setpci")
    assert "are managed by PCI core (rule pci-doe-managed)" in d.why
    # each level refuses at least what the one above it does
    for res in (res62, res68):
        maps = [bitmap_bits(GuardPolicy(res, lv).refused_bytes(CXL)) for lv in GUARD_LEVELS]
        assert maps[0] & ~maps[1] == 0 and maps[1] & ~maps[2] == 0
    with pytest.raises(GuardArgumentError) as err:
        GuardPolicy(res62, "never")
    assert isinstance(err.value, ValueError) and isinstance(err.value, CfgauditError)


def test_collision_level_refuses_only_mailbox_writes_during_an_exchange(res68) -> None:
    pol = GuardPolicy(res68, "collision")
    assert pol.refused_bytes(CXL) == bytes(512)  # nothing at all times
    assert pol.mailboxes(CXL) == (DOE_CAP,)
    assert pol.exchange_bytes(CXL) == pol.exchange_bytes(CXL, DOE_CAP) == bitmap([(DOE_CAP, MB)])
    assert pol.exchange_bytes(CXL, 0x200) == bytes(512)
    assert not pol.decide(CXL, 0x1A0, 4, "doe-tool").refused  # no exchange in flight
    d = pol.decide(CXL, 0x1A0, 4, "doe-tool", in_flight={DOE_CAP})
    assert (d.refused, d.first, d.last) == (True, 0x1A0, 0x1A3)
    assert d.regions[0].kind == "collision" and d.regions[0].start == DOE_CAP and d.regions[0].length == MB
    assert "DOE mailbox at 0x190 (PCI core), with a kernel exchange in flight" in d.why
    assert not pol.decide(CXL, 0x1A8, 4, "doe-tool", in_flight={DOE_CAP}).refused  # past the mailbox
    assert not pol.decide(CXL, 0x04, 2, "doe-tool", in_flight={DOE_CAP}).refused  # Command: not a collision
    assert not pol.decide(CXL, 0x1A0, 4, "doe-tool", in_flight={0x200}).refused  # another (unknown) mailbox
    # an exchange in flight refuses the mailbox at every level, also where the level alone does not
    assert GuardPolicy(res68, "exclusive").decide(CXL, 0x1A0, 4, "x", in_flight=[DOE_CAP]).refused


# -------------------------------------------------------------------------- allow rules

def test_allow_comm_refuses_nothing(res62) -> None:
    pol = GuardPolicy(res62, "managed", allow_comms=["doe-tool"])
    assert pol.allow_comms == frozenset({"doe-tool"})
    d = pol.decide(CXL, 0x198, 4, "doe-tool", in_flight={DOE_CAP})
    assert not d.refused and d.allowed_by == "--allow-comm" and d.regions  # regions still named
    assert d.why == "allowed: comm doe-tool is allowed everywhere (--allow-comm)"
    assert pol.decide(CXL, 0x198, 4, "setpci").refused  # others still refused


def test_comm_truncated_to_15_bytes(res62, tmp_path) -> None:
    long = "spdm-requester-tool"  # 19 characters; the kernel keeps "spdm-requester-"
    assert kernel_comm(long) == "spdm-requester-"
    pol = GuardPolicy(res62, "exclusive", allow_comms=[long])
    assert pol.allow_comms == frozenset({"spdm-requester-"})
    assert not pol.decide(CXL, 0x198, 4, "spdm-requester-").refused
    assert not pol.decide(CXL, 0x198, 4, long).refused  # the same comm, as the kernel would see it
    assert pol.decide(CXL, 0x198, 4, "spdm-requester").refused  # 14 bytes: another name
    assert kernel_comm("é" * 8) == "é" * 7 + "\ufffd"  # cut inside a character, decoded like the trace's comm
    res = registry("6.2", [claims_file(tmp_path, long)])
    assert set(GuardPolicy(res, "exclusive").allowed_bytes()) == {(CXL, "spdm-requester-")}


def test_user_claim_lets_its_tool_through_inside_its_range_only(tmp_path) -> None:
    # doe-tool holds the mailbox's data registers 0x1a0..0x1a7 (write and read data mailboxes) only
    res = registry("6.2", [claims_file(tmp_path, "doe-tool", offset=0x10, length=8)])
    pol = GuardPolicy(res, "exclusive")
    assert pol.allowed_bytes() == {(CXL, "doe-tool"): bitmap([(0x1A0, 8)])}
    assert pol.allowed_bytes()[(CXL, "doe-tool")][0x34] == 0xFF  # 0x1a0 // 8 = 0x34, all 8 bits
    d = pol.decide(CXL, 0x1A0, 4, "doe-tool")
    assert not d.refused and d.allowed_by == "doe-tool"
    assert d.why == "allowed: comm doe-tool holds a user claim on 0x1a0+0x8"
    assert pol.decide(CXL, 0x1A0, 4, "other-tool").refused  # the claim names doe-tool only
    d = pol.decide(CXL, 0x19C, 8, "doe-tool")  # straddles: 0x19c..0x19f are outside the claim
    assert (d.refused, d.first, d.last) == (True, 0x19C, 0x19F)
    assert pol.decide(CXL, 0x198, 4, "doe-tool").refused  # the control register is not claimed
    # a claim cannot stop the kernel's exchange: in flight, the mailbox is refused for the tool too
    assert pol.decide(CXL, 0x1A0, 4, "doe-tool", in_flight={DOE_CAP}).refused


def test_whole_mailbox_claim(tmp_path) -> None:
    res = registry("6.2", [claims_file(tmp_path, "doe-tool")])
    pol = GuardPolicy(res, "managed")
    assert pol.allowed_bytes() == {(CXL, "doe-tool"): bitmap([(DOE_CAP, MB)])}
    assert not pol.decide(CXL, 0x190, MB, "doe-tool").refused
    assert not pol.decide(CXL, 0x18E, 4, "doe-tool").refused  # 0x18e..0x18f: nobody's
    # 0x168..0x197: the last 4 bytes of a cxl-dvsec region (managed), then claimed mailbox bytes
    d = pol.decide(CXL, 0x168, 0x30, "doe-tool")
    assert (d.refused, d.first, d.last) == (True, 0x168, 0x16B)
    assert "are managed by cxl_pci (rule cxl-dvsec)" in d.why
    assert [(r.kind, r.start) for r in d.regions] == [("managed", 0x15C), ("exclusive", 0x190)]


def test_table_user_regions_lift_bytes_for_everyone(res62) -> None:
    res = dataclasses.replace(res62)
    reg = res62.registry
    copy = type(reg)(reg.strict_iomem, reg.io_strict_devmem)
    for r in reg.regions():
        copy.add(r)
    copy.add(Region(CXL, 0, 0x1000, "vfio-pci", "user", None, "vfio-user"))
    res.registry = copy
    pol = GuardPolicy(res, "managed")
    assert pol.refused_bytes(CXL) == bytes(512) and pol.allowed_bytes() == {}
    assert not pol.decide(CXL, 0x04, 2, "qemu").refused
    assert pol.decide(CXL, 0x1A0, 4, "qemu", in_flight={DOE_CAP}).refused  # but never a collision


# -------------------------------------------------------------------------- out of range

def test_zero_length_and_offsets_past_config_space(res62) -> None:
    pol = GuardPolicy(res62, "managed")
    assert not pol.decide(CXL, 0x198, 0, "x").refused
    assert pol.decide(CXL, 0x198, 0, "x").why == "allowed: a write of 0 bytes writes nothing"
    assert not pol.decide(CXL, 0x1000, 4, "x", in_flight={DOE_CAP}).refused
    assert not pol.decide(CXL, 0x10000, 4, "x").refused
    d = pol.decide(CXL, 0xFFC, 0x100, "x")  # clipped to 0xffc..0xfff: nothing owned there
    assert not d.refused and "0xffc-0xfff" in d.why
    d = pol.decide(CXL, 0, 1 << 20, "x")  # everything: the first and last owned byte
    assert (d.refused, d.first, d.last) == (True, 0x04, 0x1A7)


# -------------------------------------------------------------------------- write_range

@pytest.mark.parametrize(("syscall", "kw", "want"), [
    ("write", {"count": 4, "file_pos": 0x198}, (0x198, 4)),
    ("write", {"count": 4, "file_pos": 0x198, "pos": 0x10}, (0x198, 4)),  # write ignores any pos
    ("pwrite64", {"count": 4, "pos": 0x1A0, "file_pos": 0}, (0x1A0, 4)),
    ("writev", {"iov_lens": [2, 2, 4], "file_pos": 0x190}, (0x190, 8)),
    ("writev", {"iov_lens": [], "file_pos": 0x190}, (0x190, 0)),
    ("pwritev", {"iov_lens": [4, 4], "pos": 0x1A0, "file_pos": 0}, (0x1A0, 8)),
    ("pwritev2", {"iov_lens": [4], "pos": 0x1A4, "file_pos": 0}, (0x1A4, 4)),
    ("pwritev2", {"iov_lens": [4], "pos": -1, "file_pos": 0x198}, (0x198, 4)),  # -1: the file position
    # -EINVAL before security_file_permission(): nothing written
    ("pwritev", {"iov_lens": [4], "pos": -1}, (-1, 0)),
    ("pwrite64", {"count": 4, "pos": -8}, (-8, 0)),
    ("pwritev2", {"iov_lens": [4], "pos": -2, "file_pos": 0}, (-2, 0)),
    ("write", {"count": -1, "file_pos": 0}, (0, 0)),
    ("writev", {"iov_lens": [4] * 1025, "file_pos": 0}, (0, 0)),
    ("writev", {"iov_lens": [4, -4], "file_pos": 0}, (0, 0)),
    ("pwrite64", {"count": 8, "pos": (1 << 63) - 4}, ((1 << 63) - 4, 0)),
    # cut at MAX_RW_COUNT
    ("write", {"count": 1 << 40, "file_pos": 0}, (0, MAX_RW_COUNT)),
    ("writev", {"iov_lens": [MAX_RW_COUNT, 4096], "file_pos": 0}, (0, MAX_RW_COUNT)),
])
def test_write_range(syscall, kw, want) -> None:
    assert write_range(syscall, **kw) == want


@pytest.mark.parametrize(("syscall", "kw"), [
    ("read", {"count": 4, "file_pos": 0}),
    ("io_uring_enter", {"count": 4, "pos": 0}),
    ("write", {"file_pos": 0}),  # no count
    ("write", {"count": 4}),  # no file position
    ("writev", {"count": 4, "file_pos": 0}),  # no iovecs
    ("pwrite64", {"count": 4, "file_pos": 0}),  # no pos
    ("pwritev2", {"iov_lens": [4], "pos": -1}),  # -1 wants the file position
])
def test_write_range_errors(syscall, kw) -> None:
    with pytest.raises(GuardArgumentError) as err:
        write_range(syscall, **kw)
    assert isinstance(err.value, ValueError)


def test_write_range_feeds_decide(res62) -> None:
    pol = GuardPolicy(res62, "exclusive")
    # writev of 2 + 2 bytes at file position 0x18e: 0x18e..0x191 reaches the mailbox's first two bytes
    d = pol.decide(CXL, *write_range("writev", iov_lens=[2, 2], file_pos=0x18E), "doe-tool")
    assert (d.refused, d.first, d.last) == (True, 0x190, 0x191)
    assert not pol.decide(CXL, *write_range("pwrite64", count=4, pos=-4), "doe-tool").refused
