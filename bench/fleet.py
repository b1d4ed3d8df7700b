#!/usr/bin/env python3
"""Issue 13's fleet figures: ``cfgaudit fleet analyze`` on a LocalCluster of 1 and 2 workers.

    .venv/bin/python bench/fleet.py --results bench-out/results-fleet.json
    .venv/bin/python bench/fleet.py --hosts 200 --events 1000 --out /tmp/f   # a quick check

Generates ``--hosts`` hosts of one Parquet segment each (``--events`` events: writes into owned
ranges and elsewhere, built with numpy; the device pictures are the dumps under tests/data/dumps,
a handful of snapshots reused across hosts with their own host names, kernels and drivers), in
the recorder's layout ``OUT/segments/host=NAME/seg-00000001-....parquet``. Then, one after the
other on the same segments:

* the peer: a serial in-process loop of :func:`cfgaudit.fleet.analyze_segment` (the very task,
  without Dask), ``--serial-max`` segments (default all; fewer: its rate is measured on those);
* ``fleet analyze`` (:func:`cfgaudit.run_fleet`) on a fresh LocalCluster of N worker processes
  (one thread each) for each N of ``--workers``: wall time, segments/s, the cluster's start-up,
  peak RSS of each worker (``getrusage`` in the worker at the end) and of this driver;
* ``fleet report`` on the result (wall time, peak RSS growth);

and checks that every run's dataset holds the same rows as the serial one. Figures go to
``--results`` (bench/summary.py prints them under "issue 13 fleet"). Times are wall seconds, RSS MiB.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from summary import save_results  # bench/summary.py: the format it reads

import cfgaudit
from cfgaudit import fleet
from cfgaudit.events import arrow_schema
from cfgaudit.probes.tracefile import TraceWriter, make_header
from cfgaudit.regions import load_devices
from cfgaudit.regions.configspace import snapshot_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DUMPS = os.path.join(ROOT, "tests", "data", "dumps")
CXL, RP = "0000:0d:00.0", "0000:0c:00.0"
# (dumps directory, kernel release, CXL driver): the snapshots hosts reuse
PLANS = (("qemu-6.1", "6.2.16", "cxl_pci"), ("qemu-6.1", "6.1.90", "cxl_pci"), ("qemu-6.12", "6.12.10", "cxl_pci"),
         ("qemu-6.12", "6.6.30", "vfio-pci"), ("host", "5.15.0", None), ("host", "6.1.0", None))
COMMS = ("setpci", "cxl-fwupd", "pcimem", "dpdk-devbind", "lspci", "nvme-cli")
WRITES = {CXL: ((0x198, 4, "01000000"), (0x1a0, 4, "00100000"), (0x42, 2, "0080"), (0x90, 2, "4000"),
                (0x04, 2, "0600"), (0x200, 4, "deadbeef")),
          RP: ((0x58, 2, "0020"), (0x3e, 2, "4000"), (0x1a0, 4, "00000000")),
          None: ((0x04, 2, "0700"), (0x10, 4, "ffffffff"), (0x44, 4, "00000000"), (0xa0, 2, "0000"))}


def peak_rss_mib() -> float:
    """This process's peak RSS, MiB (Linux ru_maxrss is KiB; the driver is not a spawned child)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _snapshots() -> list[tuple[dict, list[tuple[str, int, int, str]]]]:
    """Per plan: the snapshot document and the (bdf, offset, size, data) writes it gets."""
    out = []
    for sub, kernel, drv in PLANS:
        d = os.path.join(DUMPS, sub)
        files = [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.startswith("lspci-xxxx")]
        ds = load_devices(lspci_dumps=files)
        if CXL in ds.devices:
            ds.devices[CXL].driver = drv
        if RP in ds.devices:
            ds.devices[RP].driver = "pcieport"
        snap = snapshot_dict(ds) | {"kernel_release": kernel, "iomem_relaxed": False, "created_ns": 0}
        writes = [(b, *w) for b in ds.devices for w in WRITES.get(b, WRITES[None])]
        out.append((snap, writes))
    return out


def generate(root: str, hosts: int, events: int, seed: int) -> float:
    """``hosts`` segments under ``root`` (reused when a finished set of the same size is there); seconds."""
    stamp = os.path.join(root, f".complete-{hosts}x{events}-{seed}")
    if os.path.exists(stamp):
        return 0.0
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    snaps = _snapshots()
    schema = arrow_schema()
    rng = np.random.default_rng(seed)
    for i in range(hosts):
        snap, writes = snaps[i % len(snaps)]
        host = f"node-{i:05d}"
        pick = rng.integers(0, len(writes), events)
        w = np.array(writes, dtype=object)[pick]
        pid = 1000 + rng.integers(0, 50, events)
        size = w[:, 2].astype(np.int64)
        cols = {"ts_ns": pa.array(2_000_000_000 + np.cumsum(rng.integers(1000, 5_000_000, events))),
                "pid": pa.array(pid), "tid": pa.array(pid), "uid": pa.array(np.zeros(events, np.int64)),
                "comm": pa.array(np.array(COMMS, dtype=object)[pid % len(COMMS)], pa.string()),
                "op": pa.array(np.where(rng.random(events) < 0.15, "read", "write").astype(object), pa.string()),
                "bdf": pa.array(w[:, 0], pa.string()), "offset": pa.array(w[:, 1].astype(np.int64)),
                "size": pa.array(size), "data": pa.array(w[:, 3], pa.string()),
                "via": pa.array(np.full(events, "sysfs", dtype=object), pa.string()), "ret": pa.array(size)}
        t = pa.table({f.name: cols.get(f.name, pa.nulls(events, f.type)) for f in schema}, schema=schema)
        started = 1_780_000_000_000_000_000 + i * 1_000_000_000
        d = os.path.join(root, f"host={host}")
        os.makedirs(d, exist_ok=True)
        header = make_header(host=host, kernel_release=snap["kernel_release"], kernel_version=None,
                             backend="syscalls", boot_flags=[], iomem_relaxed=False, snapshot=snap | {"host": host},
                             machine_id=f"{i:032x}", boot_id=f"boot-{i}",
                             segment={"seq": 1, "started_unix_ns": started})
        stamp_utc = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started // 10**9))
        wr = TraceWriter(os.path.join(d, f"seg-00000001-{stamp_utc}.parquet"), header)
        wr.write_table(t)
        wr.close({"lost": int(rng.integers(1, 50)) if rng.random() < 0.05 else 0, "closed_by": "rotation"})
    open(stamp, "w").close()
    return time.perf_counter() - t0


def same_rows(out: str, ref: str, records: list[dict]) -> bool:
    """Whether every segment's findings file in ``out`` holds the rows of the one in ``ref``
    (file by file: memory stays bounded by one segment's findings)."""
    for r in records:
        name = os.path.join(f"host={r['host']}", r["segment"] + ".parquet")
        if not pq.read_table(os.path.join(out, name)).equals(pq.read_table(os.path.join(ref, name))):
            return False
    return len(records) == len(os.listdir(os.path.join(ref, "_segments")))


def _dir_mib(path: str) -> float:
    return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(path) for f in fs) / 2**20


def hwm_mib() -> float:
    """This process's peak RSS, MiB: VmHWM of /proc/self/status (ru_maxrss would not do for a
    worker: Linux keeps it across fork and exec, so a spawned worker reports its parent's peak)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=1_000, help="events per segment")
    ap.add_argument("--workers", default="1,2", help="LocalCluster sizes to run, comma-separated")
    ap.add_argument("--serial-max", type=int, default=0, help="segments of the serial peer (0: all)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out", "fleet"))
    ap.add_argument("--results", metavar="FILE", help="also write the figures as JSON (for bench/summary.py)")
    args = ap.parse_args(argv)
    # dask is what this benchmark measures: loaded here, not when bench/summary.py imports this file's peers
    from dask.distributed import Client, LocalCluster

    seg_dir = os.path.join(args.out, "segments")
    gen_s = generate(seg_dir, args.hosts, args.events, args.seed)
    segs = fleet.find_segments([seg_dir])
    print(f"fleet: {len(segs):,} segments x {args.events:,} events ({_dir_mib(seg_dir):,.0f} MiB; generated in "
          f"{gen_s:.1f} s{'' if gen_s else ', reused'})", flush=True)
    res: dict = {"hosts": args.hosts, "events_per_segment": args.events, "segments": len(segs),
                 "segments_mib": round(_dir_mib(seg_dir), 1), "generate_s": round(gen_s, 2), "runs": [],
                 "complete": False}

    # the peer: the same task, serially, in this process
    serial_out = os.path.join(args.out, "out-serial")
    shutil.rmtree(serial_out, ignore_errors=True)
    fleet._check_options(fleet._Out(serial_out), fleet.FleetOptions())
    some = segs[: args.serial_max] if args.serial_max else segs
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    for s in some:
        r = fleet.analyze_segment(s, serial_out)
        assert r["ok"], r
    serial_s = time.perf_counter() - t0
    res["serial"] = {"segments": len(some), "seconds": round(serial_s, 2),
                     "segments_per_s": round(len(some) / serial_s, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
                     "peak_rss_growth_mib": round(peak_rss_mib() - rss0, 1)}
    print(f"serial (one process, no Dask): {len(some):,} segments in {serial_s:.1f} s = "
          f"{len(some) / serial_s:,.1f} segments/s", flush=True)
    complete_ref = not args.serial_max or args.serial_max >= len(segs)

    identical = True
    for n in [int(x) for x in args.workers.split(",") if x]:
        out = os.path.join(args.out, f"out-{n}w")
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=40)
        client = Client(cluster)
        start_s = time.perf_counter() - t0
        try:
            run = cfgaudit.run_fleet([seg_dir], out, scheduler=cluster.scheduler_address)
            worker_rss = sorted(client.run(hwm_mib).values())
        finally:
            client.close()
            cluster.close()
        assert not run.errors, run.errors[:3]
        per = {"workers": n, "seconds": round(run.seconds, 2), "cluster_start_s": round(start_s, 2),
               "segments_per_s": round(run.analysed / run.seconds, 1), "analysed": run.analysed,
               "task_seconds_mean": round(sum(r["seconds"] for r in run.records) / max(1, len(run.records)), 4),
               "peak_rss_mib_per_worker": [round(x, 1) for x in worker_rss],
               "driver_peak_rss_mib": round(peak_rss_mib(), 1), "dataset_mib": round(_dir_mib(out), 1)}
        if complete_ref:
            same = same_rows(out, serial_out, run.records)
            per["identical"] = same
            identical &= same
        res["runs"].append(per)
        print(f"fleet analyze, {n} worker(s): {run.analysed:,} segments in {run.seconds:.1f} s = "
              f"{per['segments_per_s']:,.1f} segments/s (cluster start {start_s:.1f} s); peak RSS per worker "
              f"{', '.join(f'{x:,.0f}' for x in worker_rss)} MiB; rows identical to serial: "
              f"{per.get('identical', 'not checked')}", flush=True)

    last = os.path.join(args.out, f"out-{res['runs'][-1]['workers']}w") if res["runs"] else serial_out
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    rep = cfgaudit.fleet_report(last)
    report_s = time.perf_counter() - t0
    res["report"] = {"seconds": round(report_s, 2), "findings": rep.summary["findings"],
                     "peak_rss_growth_mib": round(peak_rss_mib() - rss0, 1)}
    res["findings"] = rep.summary["findings"]
    res["identical"] = identical if complete_ref else None
    res["complete"] = True
    print(f"fleet report: {rep.summary['findings']:,} findings of {rep.summary['hosts']:,} hosts in {report_s:.1f} s",
          flush=True)
    if args.results:
        save_results(args.results, "bench/fleet.py", res)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
