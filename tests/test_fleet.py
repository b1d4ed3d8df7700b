"""`cfgaudit fleet analyze` and `fleet report` (issue 13) on a 2-worker LocalCluster.

A synthetic fleet of 300 hosts (tests/support/fleet.py: the dumps under tests/data/dumps, six
kernel releases, cxl_pci / vfio-pci / no driver, the QEMU CXL guests and a virtio host; lost
events and notices here and there): the dataset holds exactly the rows `cfgaudit analyze` gives
for each segment alone; a worker SIGKILLed mid-run changes nothing; corrupt segments are named
and the others complete; the run resumes; the report's counts are the pandas groupbys of the
per-segment analyses, and its device names come from the pci.ids it is given.
"""
from __future__ import annotations

import json
import os
import shutil
import signal

import pandas as pd
import pyarrow.parquet as pq
import pytest

import cfgaudit
from cfgaudit import fleet
from cfgaudit.analyze.findings import FINDING_COLUMNS
from cfgaudit.errors import UsageError
from cfgaudit.ondemand import frame
from cfgaudit.regions.pciids import PciIds
from cfgaudit.report.fleet import FLEET_FORMATS, FRAMES, fleet_json, render_fleet
from support import run_cli
from support.fleet import base_snapshot, host_plan, make_fleet, write_segment

N_HOSTS = 300
N_EVENTS = 30
SORT = ["host", "segment", "event_index", "region_start", "kind"]


@pytest.fixture(scope="module")
def segments(tmp_path_factory) -> tuple[str, list[str]]:
    root = str(tmp_path_factory.mktemp("fleet") / "segments")
    return root, make_fleet(root, N_HOSTS, N_EVENTS)


@pytest.fixture(scope="module")
def expected(segments) -> pd.DataFrame:
    """Every segment analysed alone (cfgaudit.analyze_traces), with its host and segment id."""
    _, paths = segments
    parts = []
    for p in paths:
        f = cfgaudit.analyze_traces(p)
        f["host"] = os.path.basename(os.path.dirname(p)).removeprefix("host=")
        f["segment"] = fleet.segment_id(os.path.abspath(p))
        parts.append(f)
    return _canon(pd.concat(parts, ignore_index=True))


@pytest.fixture(scope="module")
def cluster():
    """A 2-worker LocalCluster (processes, one thread each) for the module; its scheduler address."""
    from dask.distributed import Client, LocalCluster
    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                     silence_logs=50)
    client = Client(c)
    yield c.scheduler_address, client
    client.close()
    c.close()


@pytest.fixture(scope="module")
def analysed(segments, cluster, tmp_path_factory) -> tuple[str, cfgaudit.FleetRun]:
    out = str(tmp_path_factory.mktemp("fleet") / "out")
    run = cfgaudit.run_fleet([segments[0]], out, scheduler=cluster[0])
    return out, run


def _canon(df: pd.DataFrame) -> pd.DataFrame:
    df = df.astype({**FINDING_COLUMNS, "host": "string", "segment": "string"})
    cols = list(FINDING_COLUMNS) + ["segment", "host"]
    return df[cols].sort_values(SORT, ignore_index=True)


def _dataset_rows(out: str) -> pd.DataFrame:
    return _canon(frame(fleet.findings_dataset(out).to_table()))


def test_fleet_rows_equal_per_segment_analysis(segments, analysed, expected) -> None:
    out, run = analysed
    assert run.segments == len(segments[1]) and run.analysed == run.segments and run.skipped == 0
    assert run.errors == [] and run.workers == 2
    got = _dataset_rows(out)
    assert len(got) > 1000 and set(got["kind"]) >= {"exclusive", "managed"}
    pd.testing.assert_frame_equal(got, expected)
    assert got["host"].nunique() > 0.9 * N_HOSTS  # a host may have no findings: its file is empty


def test_dataset_layout_and_records(segments, analysed) -> None:
    out, run = analysed
    hosts = sorted(d for d in os.listdir(out) if d.startswith("host="))
    assert len(hosts) == N_HOSTS
    recs = {r["segment"]: r for r in run.records}
    assert len(recs) == len(segments[1])
    for name in os.listdir(os.path.join(out, "_segments")):
        rec = json.load(open(os.path.join(out, "_segments", name)))
        assert rec == {k: v for k, v in recs[name.removesuffix(".json")].items() if k != "seconds"}
        f = os.path.join(out, f"host={rec['host']}", rec["segment"] + ".parquet")
        assert pq.read_metadata(f).num_rows == rec["findings"]  # an empty file (with the schema) when none
        t = pq.read_table(f, columns=["kind", "allowed_by"])
        kinds = pd.Series(t.column("kind").to_pylist(), dtype="object")
        failing = kinds[pd.Series(t.column("allowed_by").to_pylist(), dtype="object").isna()]
        assert {k: n for k, n in rec["by_kind"].items() if n} == kinds.value_counts().to_dict()
        assert {k: n for k, n in rec["failing_by_kind"].items() if n} == failing.value_counts().to_dict()
        assert rec["kernel_release"] == host_plan(int(rec["host"].split("-")[1])).kernel
        assert rec["devices"] and all({"vendor", "device", "driver"} <= set(d) for d in rec["devices"].values())
    assert any(r["lost"] for r in recs.values()) and any(r["notices"] for r in recs.values())
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def test_cli_analyze_json_matches_the_dataset(segments, analysed) -> None:
    """The real `cfgaudit analyze SEG --format json` on a handful of segments: the same rows."""
    out, _ = analysed
    ds = fleet.findings_dataset(out)
    for p in segments[1][::67]:
        code, text, _ = run_cli("analyze", p, "--format", "json")
        assert code in (0, 1)
        want = json.loads(text)["findings"]
        sid = fleet.segment_id(os.path.abspath(p))
        t = ds.to_table(filter=fleet.pc.field("segment") == sid).sort_by([("event_index", "ascending"),
                                                                          ("region_start", "ascending")])
        got = [{k: v for k, v in r.items() if k not in ("segment", "host")} for r in t.to_pylist()]
        key = lambda r: (r["event_index"], r["region_start"] or -1)  # noqa: E731
        assert sorted(got, key=key) == sorted(want, key=key)


def test_resume_skips_done_segments_and_redoes_changed_ones(segments, analysed, cluster, expected) -> None:
    out, first = analysed
    again = cfgaudit.run_fleet([segments[0]], out, scheduler=cluster[0])
    assert (again.analysed, again.skipped, again.errors) == (0, first.segments, [])
    victim = sorted(first.records, key=lambda r: r["segment"])[5]
    os.unlink(os.path.join(out, "_segments", victim["segment"] + ".json"))
    touched = segments[1][17]
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new version of the file
    third = cfgaudit.run_fleet([segments[0]], out, scheduler=cluster[0])
    assert third.analysed == 2 and third.skipped == first.segments - 2
    assert {r["segment"] for r in third.records} == {victim["segment"], fleet.segment_id(touched)}
    pd.testing.assert_frame_equal(_dataset_rows(out), expected)


def test_a_killed_worker_changes_nothing(segments, cluster, expected, tmp_path) -> None:
    """SIGKILL one worker process after 40 segments: the nanny restarts it, the scheduler runs
    its tasks again, and the rows are the same."""
    _, client = cluster
    before = client.run(os.getpid)
    victim = sorted(before.values())[0]
    killed = []

    def progress(done: int, total: int) -> None:
        if done == 40 and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(done)

    out = str(tmp_path / "out")
    run = cfgaudit.run_fleet([segments[0]], out, scheduler=cluster[0], progress=progress)
    assert killed and run.errors == [] and run.analysed == len(segments[1])
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid).values()  # a new worker process took its place
    pd.testing.assert_frame_equal(_dataset_rows(out), expected)


def test_corrupt_segments_are_named_and_the_others_complete(segments, cluster, tmp_path) -> None:
    root = tmp_path / "segs"
    good = segments[1][:6]
    for p in good:
        dst = root / os.path.relpath(p, segments[0])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    bad_pq = root / "host=broken-1" / "seg-00000001-20260101T000000Z.parquet"
    bad_pq.parent.mkdir()
    data = open(good[0], "rb").read() if good[0].endswith(".parquet") else open(segments[1][0], "rb").read()
    bad_pq.write_bytes(data[: len(data) // 2])
    jl = next(p for p in segments[1] if p.endswith(".jsonl"))
    lines = open(jl).read().splitlines(keepends=True)
    bad_jl = root / "host=broken-2" / "seg-00000001-20260101T000000Z.jsonl"
    bad_jl.parent.mkdir()
    bad_jl.write_text("".join(lines[:4] + ['{"ts_ns": 5, "pid": \n'] + lines[4:]))
    head = json.loads(lines[0])
    assert head["record"] == "header" and "snapshot" in head
    del head["snapshot"]  # analyze would use this machine's devices: the fleet refuses it by name
    nosnap = root / "host=bare-1" / "seg-00000001-20260101T000000Z.jsonl"
    nosnap.parent.mkdir()
    nosnap.write_text(json.dumps(head) + "\n" + "".join(lines[1:]))
    nohost = root / "loose" / "seg-00000001.parquet"
    write_segment(str(tmp_path / "tmp"), host_plan(1), 1, 5, with_host=False)
    nohost.parent.mkdir()
    shutil.move(next((tmp_path / "tmp").rglob("*.parquet")), nohost)
    out = tmp_path / "out"
    code, _, err = run_cli("fleet", "analyze", str(root), "-o", str(out), "--scheduler", cluster[0])
    assert code == 2, err
    errors = [ln for ln in err.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 4, err
    assert errors[0] == f"Error: {nosnap}: the trace embeds no device snapshot (its own host's is needed, not this " \
        "machine's)"
    assert errors[1].startswith(f"Error: {bad_pq}: not a readable Parquet file")
    assert errors[2].startswith(f"Error: {bad_jl}: line 5: ")
    assert errors[3].startswith(f"Error: {nohost}: ") and "no host" in errors[3]
    assert "Traceback" not in err and "6 segments analysed" in err
    assert len(os.listdir(out / "_segments")) == 6
    code, _, err = run_cli("fleet", "analyze", str(root), "-o", str(out), "--scheduler", cluster[0])
    assert code == 2 and "0 segments analysed, 6 already done, 4 failed" in err  # bad ones are retried


def test_host_from_the_hive_directory_and_partials(tmp_path) -> None:
    plan = host_plan(7)
    p = write_segment(str(tmp_path / "segs"), plan, 1, 10, with_host=False)
    partial = os.path.join(os.path.dirname(p), "seg-00000002-20260101T000000Z.parquet.partial.jsonl")
    shutil.copy(write_segment(str(tmp_path / "x"), plan, 2, 10, ext=".jsonl"), partial)
    found = fleet.find_segments([str(tmp_path / "segs")])
    assert [s.url for s in found] == [p] and found[0].host_dir == plan.host  # partials: only when named
    assert [s.url for s in fleet.find_segments([partial])] == [partial]
    assert [s.url for s in fleet.find_segments([str(tmp_path / "segs" / "host=*" / "*.partial.jsonl")])] == [partial]
    res = fleet.analyze_segment(found[0], str(tmp_path / "out"))
    assert res["ok"] and res["record"]["host"] == plan.host and res["record"]["host_from"] == "path"
    with pytest.raises(UsageError, match="no such file"):
        fleet.find_segments([str(tmp_path / "nothing")])


def test_segments_and_output_on_an_fsspec_filesystem(segments, tmp_path) -> None:
    """A segment read through fsspec (memory://, copied locally in the task) and OUT on it."""
    import fsspec
    mem = fsspec.filesystem("memory")
    src = segments[1][3]
    mem.pipe("/segs/host=node-00003/" + os.path.basename(src), open(src, "rb").read())
    found = fleet.find_segments(["memory://segs"])
    assert len(found) == 1 and found[0].url.startswith("memory://")
    res = fleet.analyze_segment(found[0], "memory://out")
    assert res["ok"], res
    data = fleet.load_fleet("memory://out", columns=fleet.FLEET_COLUMNS + ("host",))
    want = cfgaudit.analyze_traces(src)
    assert len(data.findings) == len(want) == res["record"]["findings"]
    assert set(data.findings["host"]) <= {"node-00003"}


def _model_ids(host: str, bdf: str) -> tuple[int, int]:
    plan = host_plan(int(host.split("-")[1]))
    dv = next(d for d in base_snapshot(plan.base)["devices"] if d["bdf"] == bdf)
    raw = bytes.fromhex(dv["config"][:8])
    return int.from_bytes(raw[:2], "little"), int.from_bytes(raw[2:4], "little")


def test_report_counts_equal_pandas_groupbys(analysed, expected, tmp_path) -> None:
    out, _ = analysed
    ids_file = tmp_path / "pci.ids"
    ids_file.write_text("# test\n8086  Intel Test Vendor\n\t0d93  Test CXL Memory Device\n"
                        "1af4  Red Hat Test\nC 00  Unclassified device\n")
    rep = cfgaudit.fleet_report(out, str(ids_file))
    e = expected.copy()
    e["write"] = e["segment"] + "#" + e["event_index"].astype(str)
    e["kernel_release"] = [host_plan(int(h.split("-")[1])).kernel for h in e["host"]]
    models = [_model_ids(h, b) for h, b in zip(e["host"], e["bdf"])]
    e["vendor"], e["device"] = [m[0] for m in models], [m[1] for m in models]

    tool = rep.frames["by_tool"].set_index("comm")
    g = e.groupby("comm")
    assert tool["findings"].to_dict() == g.size().to_dict()
    assert tool["writes"].to_dict() == g["write"].nunique().to_dict()
    assert tool["hosts"].to_dict() == g["host"].nunique().to_dict()
    assert tool["exclusive"].to_dict() == e[e["kind"] == "exclusive"].groupby("comm").size() \
        .reindex(tool.index, fill_value=0).to_dict()
    assert tool["kernels"].to_dict() == g["kernel_release"].nunique().to_dict()

    model = rep.frames["by_model"]
    got = {(int(v), int(d)): int(w) for v, d, w in zip(model["vendor"], model["device"], model["writes"]) if w}
    assert got == e.groupby(["vendor", "device"])["write"].nunique().to_dict()
    row = model[model["ids"] == "8086:0d93"].iloc[0]
    assert (row["vendor_name"], row["device_name"]) == ("Intel Test Vendor", "Test CXL Memory Device")
    assert row["model"] == "Intel Test Vendor Test CXL Memory Device"
    other = model[model["ids"] == "1af4:1053"].iloc[0]
    assert other["model"] == "Red Hat Test Device 1053" and pd.isna(other["device_name"])
    ids = PciIds.load(str(ids_file))  # the names `cfgaudit devices --pci-ids` shows
    assert (row["vendor_name"], row["device_name"]) == (ids.vendor_name(0x8086), ids.device_name(0x8086, 0x0d93))

    kern = rep.frames["by_kernel"].set_index("kernel_release")
    hosts_by_kernel = pd.Series({h: host_plan(i).kernel for i, h in
                                 ((i, f"node-{i:05d}") for i in range(N_HOSTS))}).value_counts().to_dict()
    assert kern["hosts"].to_dict() == hosts_by_kernel
    assert kern["findings"].to_dict() == e.groupby("kernel_release").size().reindex(kern.index, fill_value=0) \
        .to_dict()

    host = rep.frames["by_host"].set_index("host")
    assert host["findings"].to_dict() == e.groupby("host").size().reindex(host.index, fill_value=0).to_dict()
    owner = rep.frames["by_owner"]
    assert int(owner["findings"].sum()) == len(e)
    assert rep.summary["findings"] == len(e) and rep.summary["hosts"] == N_HOSTS
    assert rep.summary["writes_with_findings"] == e["write"].nunique()
    att = rep.frames["attention"]
    assert len(att) and (att["lost"].gt(0) | att["notices"].gt(0)).all()


def test_every_format_renders_and_the_gate_exits_as_check(analysed, expected, tmp_path) -> None:
    out, _ = analysed
    rep = cfgaudit.fleet_report(out)
    for fmt in FLEET_FORMATS:
        text = render_fleet(rep, fmt)
        assert "node-" in text and len(text) > 500
    assert "<svg" in render_fleet(rep, "html")
    doc = json.loads(render_fleet(rep, "json"))
    assert list(doc) == ["format", "version", "summary", *FRAMES, "meta"] and doc == json.loads(
        json.dumps(fleet_json(rep)))
    n_ex = int((expected["kind"] == "exclusive").sum())
    assert n_ex > 0 and not (expected["kind"] == "collision").any()
    for level, want in (("exclusive", 1), ("managed", 1), ("collision", 0), ("never", 0)):
        code, _, err = run_cli("fleet", "report", out, "--fail-on", level, "--format", "json",
                               "-o", str(tmp_path / "r.json"))
        assert code == want, (level, err)
    assert cfgaudit.fleet_failing(rep, "exclusive") == int(((expected["kind"] == "exclusive")
                                                            & expected["allowed_by"].isna()).sum())
    code, _, err = run_cli("fleet", "report", str(tmp_path / "nope"))
    assert code == 2 and err.startswith("Error: ") and "not a fleet output directory" in err


def test_cli_on_its_own_local_cluster_and_a_clean_fleet(tmp_path) -> None:
    """Without --scheduler the command starts (and closes) a LocalCluster; a fleet without
    findings still reports (every format), and passes every gate."""
    root = tmp_path / "segs"
    for i in range(3):
        write_segment(str(root), host_plan(i), 1, 0, lost=0, notices=False)
    out = tmp_path / "out"
    code, _, err = run_cli("fleet", "analyze", str(root), "-o", str(out), "--workers", "1")
    assert code == 0 and "3 segments analysed, 0 already done, 0 failed, of 3" in err and "1 workers" in err, err
    for fmt in FLEET_FORMATS:
        code, text, err = run_cli("fleet", "report", str(out), "--format", fmt, "--fail-on", "managed")
        assert code == 0 and "node-00002" in text, (fmt, err)
    rep = cfgaudit.fleet_report(str(out))
    assert rep.summary["findings"] == 0 and rep.summary["hosts"] == 3 and rep.frames["attention"].empty
    code, _, err = run_cli("fleet", "analyze", str(root), "-o", str(out), "--workers", "1", "--scheduler", "tcp://x:1")
    assert code == 2 and "--workers" in err
    code, _, err = run_cli("fleet", "analyze", str(root), "-o", str(out), "--reads")
    assert code == 2 and "other options" in err
