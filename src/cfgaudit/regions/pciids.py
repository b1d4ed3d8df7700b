"""Vendor and device names from the PCI ID database (pci.ids), as lspci shows them.

The file's format (pciutils' pci.ids, maintained at https://pci-ids.ucw.cz/): ``#`` comments;
a vendor line is four hex digits, two spaces, the name; a device line is a tab, four hex digits,
two spaces, the name; a subsystem line has two tabs; the class list starts at the first line
beginning ``C `` (device classes are not needed here and are not read). A ``.gz`` file is read
compressed, as pciutils does when built with zlib.

Names are looked up, never guessed: an ID the file does not list has no name (``None``), and
:meth:`PciIds.describe` then falls back to lspci's own wording (``Device 1234``).
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field

from ..errors import InputError
from ..files import open_input

__all__ = ["PCI_IDS_PATHS", "PCI_IDS_MAX_BYTES", "PciIds", "find_pci_ids"]

PCI_IDS_MAX_BYTES = 64 << 20  # the database is about 1.4 MB; a far larger file is not one

# Where distributions install the database: Debian/Ubuntu (package pci.ids) /usr/share/misc, Fedora/RHEL
# (hwdata) /usr/share/hwdata, pciutils' own default install /usr/share and /usr/local/share (pciutils
# Makefile IDSDIR; lspci(8) -i: "instead of /usr/share/misc/pci.ids" on Debian). Compressed variants follow.
PCI_IDS_PATHS: tuple[str, ...] = tuple(
    p + ext for p in ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids",
                      "/usr/local/share/pci.ids")
    for ext in ("", ".gz"))


def find_pci_ids(candidates: tuple[str, ...] = PCI_IDS_PATHS) -> str | None:
    """The first of ``candidates`` that is a regular file (None: this system has no pci.ids)."""
    return next((p for p in candidates if os.path.isfile(p)), None)


@dataclass
class PciIds:
    """The vendor and device names of one pci.ids file. ``path`` is the file read (None: none was
    found, and every lookup gives None). IDs are the 16-bit values of config offsets 0x00 and 0x02."""

    path: str | None = None
    vendors: dict[int, str] = field(default_factory=dict)
    devices: dict[tuple[int, int], str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | None = None) -> "PciIds":
        """Read ``path``, or (None) the system's database (:func:`find_pci_ids`); a missing system
        database gives an empty table. A given path that cannot be read is an :class:`InputError`."""
        if path is None:
            path = find_pci_ids()
            if path is None:
                return cls()
        with open_input(path, "pci.ids", max_bytes=PCI_IDS_MAX_BYTES) as fh:
            data = fh.read()
        if path.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as err:
                raise InputError(f"not a gzip file: {err}", path=path) from err
        return cls.parse(data.decode("utf-8", "replace"), path)

    @classmethod
    def parse(cls, text: str, path: str | None = None) -> "PciIds":
        """The names in ``text`` (pci.ids format). Lines that fit no rule are skipped, as lspci's
        own parser is the judge of the file, not cfgaudit."""
        ids = cls(path)
        vendor: int | None = None
        for line in text.splitlines():
            if not line or line[0] == "#":
                continue
            if line[0] == "\t":
                if line[1:2] == "\t" or vendor is None:
                    continue  # a subsystem line, or a device before any vendor
                dev = _hex4(line[1:5])
                if dev is not None and line[5:7] == "  ":
                    ids.devices[(vendor, dev)] = line[7:].strip()
                continue
            if line.startswith("C "):
                break  # the device class list: not needed
            vendor = _hex4(line[:4])
            if vendor is not None and line[4:6] == "  ":
                ids.vendors[vendor] = line[6:].strip()
            else:
                vendor = None
        return ids

    def vendor_name(self, vendor_id: int) -> str | None:
        """The vendor's name, or None when the database does not list it."""
        return self.vendors.get(vendor_id)

    def device_name(self, vendor_id: int, device_id: int) -> str | None:
        """The device's name, or None when the database does not list it."""
        return self.devices.get((vendor_id, device_id))

    def describe(self, vendor_id: int | None, device_id: int | None) -> str:
        """``VENDOR DEVICE`` as lspci prints a device's name; unlisted parts in lspci's wording
        (``Vendor 1234``, ``Device 5678``); an unknown ID is ``-``."""
        if vendor_id is None or device_id is None:
            return "-"
        ven = self.vendor_name(vendor_id) or f"Vendor {vendor_id:04x}"
        dev = self.device_name(vendor_id, device_id) or f"Device {device_id:04x}"
        return f"{ven} {dev}"


def _hex4(s: str) -> int | None:
    """Four hex digits as an int, else None."""
    if len(s) != 4:
        return None
    try:
        return int(s, 16)
    except ValueError:
        return None
