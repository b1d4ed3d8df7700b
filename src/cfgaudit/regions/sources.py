"""Config-space sources as one table, like pciutils' ``struct pci_methods``.

A :class:`Source` row names where config spaces can come from: the CLI option that gives its
path, one line of help, whether the option repeats, and a loader. A loader takes one path,
a ``warn`` callback and the host's :class:`~cfgaudit.hostpaths.HostPaths`, and returns a
:class:`~cfgaudit.regions.configspace.DeviceSet`: the devices, plus the host facts the source
carries (a snapshot records kernel release, ``iomem=relaxed`` and host name; the live sysfs
tree gives this machine's, read from ``paths.proc``; dumps and fake trees carry none).

Adding a source is a loader and a row in :data:`SOURCES`; :func:`cfgaudit.regions.load_devices`
iterates the table. Rows load in table order: a later copy of a device's bytes wins, and so
do a later source's host facts (the live tree's over a snapshot's).

Offsets and sizes inside the loaded devices are bytes into config space.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

from ..hostpaths import DEFAULT, HostPaths
from .configspace import DeviceSet, Warn, load_lspci_dump, load_snapshot, load_sysfs
from .kernel import upstream_from_proc_version

__all__ = ["Source", "SOURCES", "Loader", "running_kernel", "host_facts", "HOST_FACTS"]

Loader = Callable[[str, Warn, HostPaths], DeviceSet]
"""``(path, warn, paths) -> DeviceSet``: one source's devices and the host facts it carries."""

HOST_FACTS = ("kernel_release", "kernel_version", "iomem_relaxed", "host")
"""The :class:`DeviceSet` fields a source may carry about the host it was read on."""


@dataclass(frozen=True)
class Source:
    """One config-space source: a row of :data:`SOURCES`.

    ``option`` is the CLI option with its metavar (``--lspci-dump FILE``); ``arg`` the keyword
    it arrives as (click's parameter name, :func:`~cfgaudit.regions.load_devices`'s legacy
    keyword, the field of ``inventory.Sources``). ``repeatable`` sources take several paths.
    ``default`` gives the path used when no source at all is named (the live sysfs tree).
    """

    name: str
    help: str
    option: str
    arg: str
    repeatable: bool
    load: Loader
    default: Callable[[HostPaths], str] | None = None

    @property
    def flag(self) -> str:
        """The option without its metavar: ``--lspci-dump``."""
        return self.option.split()[0]

    @property
    def metavar(self) -> str:
        """The option's metavar: ``FILE``."""
        parts = self.option.split()
        return parts[1] if len(parts) > 1 else ""


def running_kernel(paths: HostPaths = DEFAULT) -> tuple[str, str | None, bool]:
    """(release, upstream version if the release hides it, booted with ``iomem=relaxed``) of
    the host whose process file system is ``paths.proc``."""
    def rd(p: str) -> str:
        try:
            with open(os.path.join(paths.proc, p)) as fh:
                return fh.read().strip()
        except OSError:
            return ""
    release = rd("sys/kernel/osrelease") or os.uname().release
    upstream = upstream_from_proc_version(rd("version"))
    relaxed = "iomem=relaxed" in rd("cmdline").split()
    return release, upstream, relaxed


def host_facts(paths: HostPaths = DEFAULT) -> dict[str, object]:
    """This machine's :data:`HOST_FACTS` (kernel from ``paths.proc``, the host name)."""
    rel, upstream, relaxed = running_kernel(paths)
    return {"kernel_release": rel, "kernel_version": upstream, "iomem_relaxed": relaxed,
            "host": socket.gethostname()}


# ----------------------------------------------------------------------------------------------
# Loaders (the parsing itself is in configspace.py)
# ----------------------------------------------------------------------------------------------

def _from_list(devs: list, where: str) -> DeviceSet:
    ds = DeviceSet()
    for cs in devs:
        ds.add(cs, where)
    return ds


def _load_sysfs(path: str, warn: Warn, paths: HostPaths) -> DeviceSet:
    """A sysfs tree; this machine's facts when ``path`` is its live /sys/bus/pci."""
    ds = _from_list(load_sysfs(path, warn), f"{path}: ")
    if paths.with_(sysfs=path).is_live_sysfs:
        for k, v in host_facts(paths).items():
            setattr(ds, k, v)
    return ds


def _load_lspci_dump(path: str, warn: Warn, paths: HostPaths) -> DeviceSet:
    """An lspci -x/-xxx/-xxxx dump: devices only."""
    return _from_list(load_lspci_dump(path, warn), f"{path}: ")


def _load_snapshot(path: str, warn: Warn, paths: HostPaths) -> DeviceSet:
    """A cfgaudit snapshot: devices and the facts of the host it was taken on."""
    return load_snapshot(path)


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("snapshot", "snapshot written by 'cfgaudit snapshot'", "--snapshot FILE", "snapshot", False,
           _load_snapshot),
    Source("lspci-dump", "lspci -x/-xxx/-xxxx dump (repeatable; -vvv/-k text between is fine)",
           "--lspci-dump FILE", "lspci_dumps", True, _load_lspci_dump),
    Source("sysfs", "sysfs tree in pciutils' layout (DIR/devices/BDF/config); default /sys/bus/pci "
           "when no other source is given", "--sysfs-path DIR", "sysfs_path", False, _load_sysfs,
           default=lambda paths: paths.sysfs),
)}
"""Every config-space source, in load order (later rows win on conflicting bytes and facts)."""
