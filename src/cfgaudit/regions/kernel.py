"""Kernel releases: parse ``uname -r``-style strings and compare them.

Ownership rules are tied to releases (a driver added or dropped a claim in a given
release), so this is one of the few places where cfgaudit compares versions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["KernelVersion", "parse_kernel", "KernelRange"]

_REL = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:-rc(\d+))?")
_DEBIAN_VERSION = re.compile(r"Debian (\d+\.\d+\.\d+)")
FINAL = 1000  # sorts after every -rcN


@dataclass(frozen=True, order=True)
class KernelVersion:
    """(major, minor, patch, rc); ``rc`` is 1000 for a final release so -rcN sorts first."""

    major: int
    minor: int
    patch: int = 0
    rc: int = FINAL
    release: str = ""  # the string it came from, for display

    def __str__(self) -> str:
        rc = f"-rc{self.rc}" if self.rc != FINAL else ""
        return self.release or f"{self.major}.{self.minor}.{self.patch}{rc}"

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.major, self.minor, self.patch, self.rc)


def parse_kernel(release: str, upstream: str | None = None) -> KernelVersion:
    """Parse ``6.1.0-56-amd64``, ``6.14.9``, ``6.18-rc5``.

    ``upstream`` is the real upstream version when the release string hides it (Debian's
    ``6.1.0-56-amd64`` is 6.1.192, found in /proc/version as ``Debian 6.1.192-2``); its
    patch level wins.
    """
    m = _REL.match(release or "")
    if not m:
        raise InputError(f"not a kernel release (want e.g. 6.2.0 or 6.1.0-56-amd64): {release!r}")
    major, minor, patch, rc = int(m[1]), int(m[2]), int(m[3] or 0), int(m[4]) if m[4] else FINAL
    if upstream:
        u = _REL.match(upstream)
        if u and (int(u[1]), int(u[2])) == (major, minor):
            patch = int(u[3] or 0)
    return KernelVersion(major, minor, patch, rc, release.strip())


def upstream_from_proc_version(text: str) -> str | None:
    """Debian puts the upstream version in /proc/version (``... #1 SMP Debian 6.1.192-2 ...``).
    The compiler's version comes earlier in the same line (``gcc-12 (Debian 12.2.0-14) 12.2.0``),
    so the kernel's is the last match (seen in the 6.1.0-56-amd64 QEMU guest)."""
    found = _DEBIAN_VERSION.findall(text or "")
    return found[-1] if found else None


def _v(text: str) -> tuple[int, int, int, int]:
    return parse_kernel(text).key


@dataclass(frozen=True)
class KernelRange:
    """Releases a rule holds on: ``[since, until)`` plus extra ``[a, b)`` spans (backports)."""

    since: str | None = None
    until: str | None = None
    also: tuple[tuple[str, str], ...] = ()

    def contains(self, k: KernelVersion) -> bool:
        key = k.key
        if (self.since is None or key >= _v(self.since)) and (self.until is None or key < _v(self.until)):
            return True
        return any(_v(a) <= key < _v(b) for a, b in self.also)

    def __str__(self) -> str:
        parts = []
        if self.since or self.until:
            parts.append(f"{self.since or ''}..{self.until or ''}")
        parts += [f"{a}..{b}" for a, b in self.also]
        return ", ".join(parts) or "all"
