"""Builders for synthetic devices used by several tests."""
from __future__ import annotations

import os
import struct

from cfgaudit.regions import ConfigSpace
from cfgaudit.regions.configspace import DeviceSet


def make_device(bdf: str, vendor: int, device: int, klass: int, driver: str | None = None,
                htype: int = 0, size: int = 256, on_root_bus: bool | None = None) -> ConfigSpace:
    raw = bytearray(size)
    struct.pack_into("<HH", raw, 0, vendor, device)
    raw[0x09:0x0C] = klass.to_bytes(3, "little")
    raw[0x0E] = htype
    cs = ConfigSpace(bdf=bdf, driver=driver, config_size=size, on_root_bus=on_root_bus)
    cs.set_bytes(0, raw)
    return cs


def devset(*devs: ConfigSpace) -> DeviceSet:
    ds = DeviceSet()
    for d in devs:
        ds.add(d)
    return ds


def make_fake_sysfs(root: str, devices: list[ConfigSpace]) -> str:
    """A pciutils-layout sysfs tree of regular files: root/devices/BDF/{config,vendor,...}.

    Writes through it (setpci -A linux-sysfs -O sysfs.path=root) touch only these files.
    """
    os.makedirs(os.path.join(root, "devices"), exist_ok=True)
    for cs in devices:
        d = os.path.join(root, "devices", cs.bdf)
        os.makedirs(d, exist_ok=True)
        size = cs.config_size or 256
        with open(os.path.join(d, "config"), "wb") as fh:
            fh.write(bytes(cs.data[:size]))
        for name, val, width in (("vendor", cs.vendor, 4), ("device", cs.device, 4), ("class", cs.class_code, 6)):
            with open(os.path.join(d, name), "w") as fh:
                fh.write(f"0x{(val or 0):0{width}x}\n")
        with open(os.path.join(d, "irq"), "w") as fh:
            fh.write("0\n")
        with open(os.path.join(d, "resource"), "w") as fh:
            fh.write("0x0000000000000000 0x0000000000000000 0x0000000000000000\n" * 7)
        if cs.driver:
            drv = os.path.join(root, "drivers", cs.driver)
            os.makedirs(drv, exist_ok=True)
            link = os.path.join(d, "driver")
            if not os.path.lexists(link):
                os.symlink(os.path.relpath(drv, d), link)
    return root
