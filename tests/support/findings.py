"""One made-up finding row (a DOE mailbox write into an exclusive range), for report tests."""
from __future__ import annotations

from typing import Any

from cfgaudit.analyze.findings import FINDING_COLUMNS


def finding_row(i: int, **kw: Any) -> dict[str, Any]:
    """Finding ``i``: every column of FINDING_COLUMNS (None where not set), ts_ns 1e9 + i ns,
    pid 100 + i, the write the ``i``-th event; ``kw`` overrides any column."""
    row: dict[str, Any] = {c: None for c in FINDING_COLUMNS}
    row.update(ts_ns=1_000_000_000 + i, pid=100 + i, tid=None, uid=0, comm="setpci", op="write",
               bdf="0000:0d:00.0", offset=0x198, size=4, data="01000000", via="sysfs", ret=4,
               region_start=0x190, region_length=0x18, owner="cxl_pci", kind="exclusive", capability="DOE",
               rule="doe-mailbox", source="drivers/pci/doe.c", kernel_taints=True, kernel_logs=i == 0,
               kernel_message=None, allowed_by=None, severity="error", event_index=i)
    row.update(kw)
    return row
