"""Where this host's kernel interfaces are mounted: one value passed down, never a global.

Tests point every path at a fake tree of regular files; the live commands use the defaults.
``sysfs`` is pciutils' ``sysfs.path`` (the directory holding ``devices/``), ``procfs`` the
``/proc/bus/pci`` tree, ``proc`` the process file system (cmdline, version, PID/fd), ``tracefs``
the tracing directories to look in (in order), ``securityfs`` where the LSM list lives.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

__all__ = ["HostPaths", "DEFAULT"]


@dataclass(frozen=True)
class HostPaths:
    sysfs: str = "/sys/bus/pci"
    procfs: str = "/proc/bus/pci"
    proc: str = "/proc"
    tracefs: tuple[str, ...] = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    securityfs: str = "/sys/kernel/security"

    def with_(self, **changes: object) -> "HostPaths":
        """A copy with some paths changed; ``None`` values keep the current path."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    @property
    def is_live_sysfs(self) -> bool:
        """True when ``sysfs`` is this machine's own /sys/bus/pci (host facts then apply)."""
        return os.path.realpath(self.sysfs) == os.path.realpath(DEFAULT.sysfs)

    def tracefs_root(self) -> str | None:
        """The first tracing directory that has ``events/`` (mounted), or ``None``."""
        for d in self.tracefs:
            if os.path.isdir(os.path.join(d, "events")):
                return d
        return None


DEFAULT = HostPaths()
