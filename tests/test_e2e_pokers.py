"""The e2e tier's small C programs that write config space by paths the syscall backend cannot
follow: uringpoke (the write submitted through io_uring) and vfiopoke (through a VFIO device's
config region). Both must compile as run.sh builds them (gcc -O2 -static); uringpoke is run here
against a regular temp file only, never a config file; vfiopoke is only compiled, never run (this
machine's devices are its disk and network)."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import pytest

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e", "src")
GCC = shutil.which("gcc")

pytestmark = pytest.mark.skipif(GCC is None, reason="gcc is not installed")


def _build(name: str, out_dir: str) -> str:
    exe = os.path.join(out_dir, name)
    p = subprocess.run([str(GCC), "-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o", exe,
                        os.path.join(SRC, f"{name}.c")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return exe


@pytest.fixture(scope="module")
def pokers(tmp_path_factory) -> dict[str, str]:
    d = str(tmp_path_factory.mktemp("pokers"))
    return {name: _build(name, d) for name in ("uringpoke", "vfiopoke")}


def _io_uring_refused() -> int:
    """errno of a refused io_uring_setup() here (sysctl kernel.io_uring_disabled, seccomp), or 0."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(425, 1, params)  # io_uring_setup: 425 on every architecture
    if fd >= 0:
        os.close(fd)
        return 0
    return ctypes.get_errno()


def test_vfiopoke_compiles_and_states_its_usage(pokers) -> None:
    # no arguments: usage only (exit 2), nothing opened
    p = subprocess.run([pokers["vfiopoke"]], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "usage:" in p.stderr and "BDF OFF LEN [HEXBYTES]" in p.stderr


def test_uringpoke_writes_at_the_offset_through_io_uring(pokers, tmp_path) -> None:
    f = tmp_path / "config"
    f.write_bytes(bytes(4096))
    refused = _io_uring_refused()
    p = subprocess.run([pokers["uringpoke"], str(f), "0x198", "4", "01020304"], capture_output=True, text=True,
                       timeout=30)
    if refused:  # this host refuses io_uring: the program must say so and fail
        assert p.returncode == 1 and f"= -{refused} " in p.stdout and "at io_uring_setup" in p.stdout, p.stdout
        assert f.read_bytes() == bytes(4096)
        return
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout == f"uringpoke: io_uring write({f}, off=0x198, len=4, bytes=01020304) = 4\n"
    data = f.read_bytes()
    assert data == bytes(0x198) + b"\x01\x02\x03\x04" + bytes(4096 - 0x19C)
    # without HEXBYTES: the bytes already there are written back (cfgpoke's default)
    p = subprocess.run([pokers["uringpoke"], str(f), "0x19a", "2"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout == f"uringpoke: io_uring write({f}, off=0x19a, len=2, bytes=0304) = 2\n"
    assert f.read_bytes() == data


def test_uringpoke_fails_like_cfgpoke(pokers, tmp_path) -> None:
    f = tmp_path / "config"
    f.write_bytes(bytes(16))
    assert subprocess.run([pokers["uringpoke"], str(f), "0", "2", "010"], capture_output=True).returncode == 2
    assert subprocess.run([pokers["uringpoke"], str(f), "0"], capture_output=True).returncode == 2
    p = subprocess.run([pokers["uringpoke"], str(tmp_path / "missing"), "0", "1", "00"], capture_output=True, text=True)
    assert p.returncode == 1 and "open" in p.stderr
    ro = tmp_path / "ro"
    ro.write_bytes(bytes(16))
    os.chmod(ro, 0o444)
    if os.geteuid() != 0:  # root opens it O_RDWR anyway
        p = subprocess.run([pokers["uringpoke"], str(ro), "0", "1", "00"], capture_output=True, text=True)
        assert p.returncode == 1
