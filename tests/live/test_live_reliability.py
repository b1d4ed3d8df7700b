"""Issue 9 in the live tier: the gate follows orphaned descendants, signals at any moment (also
during set-up, also in a background job that ignores SIGINT) end a run cleanly, a full disk keeps
the recorded trace valid, and outputs are never written through a symbolic link."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from test_live_cli import EXE, cfg, setpci

from support import wait_loading

pytestmark = pytest.mark.live


def _orphan_writer(fake_tree, delay_s: float) -> list[str]:
    """sh exits at once; its background subshell writes DOE control 0x198 after ``delay_s``."""
    inner = " ".join(setpci(fake_tree, "0x198.L=0x1"))
    return ["sh", "-c", f"(sleep {delay_s}; {inner}) & exit 0"]


def test_run_follows_orphaned_descendants_until_the_last_exits(fake_tree) -> None:
    p = cfg("run", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0", "--", *_orphan_writer(fake_tree, 2))
    assert p.returncode == 1, p.stderr  # the orphan's exclusive write fails the gate
    assert "exclusive+taint+log" in p.stderr and "0x198" in p.stderr
    assert "sh exited (0); following" in p.stderr and "still running at the end" not in p.stderr


def test_run_wait_bound_names_descendants_still_running(fake_tree, tmp_path) -> None:
    t0 = time.monotonic()
    with open(tmp_path / "err", "w+") as err:  # a file, not a pipe: the orphans keep what they inherit open
        rc = subprocess.run([EXE, "run", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0",
                             "--wait-descendants", "0.5", "--", *_orphan_writer(fake_tree, 30)],
                            stdout=subprocess.DEVNULL, stderr=err, timeout=120).returncode
        err.seek(0)
        stderr = err.read()
    assert time.monotonic() - t0 < 25, "the bound was not kept"
    assert rc == 0, stderr
    assert "descendant(s) still running at the end (pid" in stderr, stderr
    pids = [int(x) for x in stderr.split("still running at the end (pid ")[1].split(")")[0].split(", ")]
    for pid in pids:  # tidy up the sleeping orphans
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a script's background job


def test_background_job_tracer_stops_on_sigint(fake_tree, tmp_path) -> None:
    out = str(tmp_path / "bg.jsonl")
    p = subprocess.Popen([EXE, "trace", "--sysfs-path", fake_tree["sysfs"], "-o", out], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint)
    assert p.stdout.readline().startswith("Tracing config-space writes")
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 0 and "0 events lost" in stdout, stderr
    assert json.loads(open(out).read().splitlines()[-1])["record"] == "footer"


# "loading": as soon as pyarrow is being loaded (support.wait_loading; a fixed delay that short could
# land in the interpreter's own start on a loaded machine, before any cfgaudit code runs); then
# seconds after start: loading, compiling BPF, tracing.
@pytest.mark.parametrize("delay_s", ["loading", 0.8, 1.5, 3.0])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_set_up_ends_cleanly(fake_tree, tmp_path, delay_s: float | str,
                                           sig: signal.Signals) -> None:
    """Whenever the signal lands (loading Python modules, compiling BPF, tracing), the run ends with
    no traceback: SIGINT while loading is 'Error: interrupted' (130); once the handler is in, a
    summary (0); SIGTERM before it is the default kill (-15). A trace file, if made, has its footer."""
    out = str(tmp_path / f"s-{sig.name}-{delay_s}.jsonl")
    p = subprocess.Popen([EXE, "trace", "--sysfs-path", fake_tree["sysfs"], "-o", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if delay_s == "loading":
        assert wait_loading(p.pid), "pyarrow was never loaded"
    else:
        time.sleep(float(delay_s))
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    if p.returncode == 130:
        assert stderr.strip().splitlines()[-1] == "Error: interrupted", stderr
    elif p.returncode == 0:
        assert "0 events lost" in stdout, stdout + stderr
    else:
        assert sig == signal.SIGTERM and p.returncode == -signal.SIGTERM, (p.returncode, stderr)
    if os.path.exists(out):
        assert json.loads(open(out).read().splitlines()[-1])["record"] == "footer"


def test_run_interrupted_during_set_up_never_starts_cmd(fake_tree, tmp_path) -> None:
    marker = tmp_path / "started"
    p = subprocess.Popen([EXE, "run", "--sysfs-path", fake_tree["sysfs"], "--", "touch", str(marker)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.2)  # modules loaded, probes compiling
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=60)
    assert "Traceback" not in stderr
    if p.returncode == 130:
        assert not marker.exists() and stderr.strip().splitlines()[-1] == "Error: interrupted"
    else:  # the probes were already up: CMD ran and the run ended normally
        assert p.returncode == 0 and marker.exists(), (p.returncode, stderr)


def test_trace_output_symlink_is_refused(fake_tree, tmp_path) -> None:
    target = tmp_path / "victim"
    target.write_text("keep me\n")
    target.chmod(0o644)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    p = cfg("trace", "--sysfs-path", fake_tree["sysfs"], "-d", "0.5", "-o", str(link))
    assert p.returncode == 2 and p.stderr.strip().startswith(f"Error: {link}: is a symbolic link"), p.stderr
    assert target.read_text() == "keep me\n" and oct(target.stat().st_mode & 0o777) == "0o644"


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a trace header (the fake tree's snapshot) and some 1,500 events fit."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_disk_full_keeps_a_valid_trace_and_tracing_goes_on(fake_tree, small_disk, ext: str) -> None:
    out = os.path.join(small_disk, f"t.{ext}")
    p = subprocess.Popen([EXE, "trace", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0", "-o", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("Tracing config-space writes")
    fd = os.open(fake_tree["config"], os.O_RDWR)
    try:
        for _ in range(6000):  # about 1 MB of trace: four times the disk
            os.pwrite(fd, b"\0\0\0\0", 0x198)
        time.sleep(1.5)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        os.close(fd)
    assert p.returncode == 2 and "Traceback" not in stderr, stderr
    assert "6000 config accesses" in stdout, "tracing (to the terminal) went on after the disk filled"
    recorded = out if ext == "jsonl" else out + ".partial.jsonl"
    err = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1 and err[0].startswith(f"Error: {recorded}: cannot write: No space left on device"), stderr
    assert stderr.count("Warning: ") == 1, "said once, when it happened"
    if ext == "parquet":
        assert not os.path.exists(out) and f"cfgaudit analyze reads {recorded}" in err[0]
    kept = int(err[0].split("keeps the ")[1].split()[0])
    assert 100 < kept < 6000
    a = cfg("analyze", recorded, "--format", "json")
    assert a.returncode == 1, a.stderr  # every kept event is a finding: a valid trace, none cut in half
    assert json.loads(a.stdout)["summary"]["events"] == kept


def test_run_gives_cmd_the_users_environment(fake_tree, tmp_path) -> None:
    """The allocator setting cfgaudit makes for itself at start-up (ondemand.keep_freed_memory)
    is not passed on to CMD; the user's own variables are, a user's own MIMALLOC_PURGE_DELAY too."""
    out = tmp_path / "env"
    p = cfg("run", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0", "--",
            "sh", "-c", f"env > {out}")
    assert p.returncode == 0, p.stderr
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert "MIMALLOC_PURGE_DELAY" not in env and env.get("PATH") == os.environ["PATH"]
    p = subprocess.run([EXE, "run", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0", "--",
                        "sh", "-c", f"env > {out}"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MIMALLOC_PURGE_DELAY": "7"})
    assert p.returncode == 0, p.stderr
    assert "MIMALLOC_PURGE_DELAY=7" in out.read_text().splitlines()
