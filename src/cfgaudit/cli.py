"""The ``cfgaudit`` command line: a thin click layer over the library (the ``cfgaudit`` package).

Presentation lives here and in report/: the library returns data and Reports. Errors are
translated once, here: a :class:`~cfgaudit.errors.CfgauditError` or a usage error prints one
line ``Error: ...`` on stderr and exits 2.

Start-up imports only what the command uses: library names are looked up as ``cfgaudit.NAME``
when a command runs (the package loads them on first use), ``report.render`` likewise, and the
``--format``/``--fail-on`` choices of the trace commands when their help or options are read
(:class:`_LaterChoice`). So ``cfgaudit --help`` loads click alone, ``devices`` the regions package,
and neither numpy, pyarrow nor pandas (tests/test_startup.py; BENCHMARKS.md "Start-up").
"""
from __future__ import annotations

import io
import math
import os
import signal
import sys
import time
import traceback
from types import FrameType
from typing import Any, Callable, Sequence

import click

import cfgaudit

from . import report
from .errors import EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED, CfgauditError, OutputError, UsageError
from .report.inventory import render_devices, render_doctor, render_regions
from .report.listing import LISTING_FORMATS
from .report.live import (
    LIVE_HEADER,
    event_lines,
    live_lines,
    notice_line,
    pid_list,
    summary_lines,
    unknown_device_lines,
)
from .report.progress import Progress, SegmentProgress

FORMATS = LISTING_FORMATS


class _LaterChoice(click.Choice):
    """A :class:`click.Choice` whose names are looked up when first needed (the command's
    ``--help``, or parsing its options), not when the command line is built: the report formats
    are the rows of ``report.render.RENDERERS`` and the gate levels ``cfgaudit.FAIL_LEVELS``,
    and loading either loads pandas and pyarrow."""

    _choices: tuple[str, ...]

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        super().__init__(())
        self._names: Callable[[], Sequence[str]] | None = names

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._names is not None:
            self._choices, self._names = tuple(self._names()), None
        return self._choices

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        self._choices = tuple(value)


REPORT_FORMATS = _LaterChoice(lambda: report.render.FORMATS)
FAIL_LEVELS = _LaterChoice(lambda: cfgaudit.FAIL_LEVELS)

GUARD_LEVELS = _LaterChoice(lambda: cfgaudit.GUARD_LEVELS)


def _nonempty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option that, given, must not be empty (``--kernel ''`` would silently mean "not given")."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty", ctx=ctx, param=param)
    return value


def _seconds(zero_ok: bool = False) -> Callable[[click.Context, click.Parameter, float | None], float | None]:
    """Callback for a duration in seconds: finite and above 0 (nan and inf would run for ever),
    or with ``zero_ok`` 0 or more."""
    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
            want = "(0 or more)" if zero_ok else "above 0"
            raise click.BadParameter(f"{value} is not a number of seconds {want}", ctx=ctx, param=param)
        return value
    return check


def _existing_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A directory option that, given, must exist (a mistyped --procfs-path would watch nothing)."""
    given = ctx.get_parameter_source(param.name or "") is not click.core.ParameterSource.DEFAULT
    if value is not None and given and not os.path.isdir(value):
        raise click.BadParameter(f"{value}: no such directory", ctx=ctx, param=param)
    return value


def source_options(f: Callable) -> Callable:
    """--sysfs-path / --lspci-dump / --snapshot / --driver, shared by every command."""
    opts = [
        click.option("--sysfs-path", metavar="DIR",
                     help="sysfs tree in pciutils' layout (DIR/devices/BDF/config); default /sys/bus/pci "
                          "when no other source is given"),
        click.option("--lspci-dump", "lspci_dumps", metavar="FILE", multiple=True,
                     help="lspci -x/-xxx/-xxxx dump (repeatable; -vvv/-k text between is fine)"),
        click.option("--snapshot", metavar="FILE", help="snapshot written by 'cfgaudit snapshot'"),
        click.option("--driver", "drivers", metavar="BDF=NAME", multiple=True,
                     help="bound driver for a device (repeatable), e.g. 0d:00.0=cxl_pci"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def format_option(f: Callable) -> Callable:
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="output format")(f)


def output_option(f: Callable) -> Callable:
    return click.option("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")(f)


def rule_options(f: Callable) -> Callable:
    """--kernel / --claims / --iomem-relaxed: how the ownership table is evaluated."""
    opts = [
        click.option("--kernel", metavar="RELEASE", callback=_nonempty,
                     help="evaluate the rules for this kernel release (default: the snapshot's, else the running one)"),
        click.option("--claims", metavar="FILE", multiple=True, help="TOML file of extra claims (repeatable)"),
        click.option("--iomem-relaxed/--strict-iomem", "iomem_relaxed", default=None,
                     help="the host booted with iomem=relaxed (the kernel's exclusive check is then off)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _sources(sysfs_path, lspci_dumps, snapshot, drivers) -> cfgaudit.Sources:
    return cfgaudit.Sources(sysfs_path, list(lspci_dumps), snapshot, list(drivers))


def _emit(text: str, output: str | None) -> None:
    if output:
        try:
            with open(output, "w") as fh:
                fh.write(text)
        except OSError as err:
            raise CfgauditError(f"cannot write: {err.strerror}", path=output) from err
    else:
        click.echo(text, nl=False)


def _warn(msgs: list[str]) -> None:
    for m in msgs:
        click.echo(f"Warning: {m}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cfgaudit")
@click.option("--debug", is_flag=True, help="show the Python traceback of an internal error (exit 3)")
def cli(debug: bool) -> None:
    """Audit user-space writes to PCI configuration space against the ranges kernel drivers own.

    \b
    Examples:
      cfgaudit devices                              # this machine's functions and capabilities
      cfgaudit devices --lspci-dump dump.txt        # the same from an lspci -xxxx dump
      cfgaudit regions --lspci-dump cxl.txt --driver 0d:00.0=cxl_pci --kernel 6.2
      cfgaudit snapshot -o host.json                # keep a picture of this host for later
    """


def pci_ids_option(f: Callable) -> Callable:
    return click.option("--pci-ids", "pci_ids", metavar="FILE",
                        help="PCI ID database for vendor and device names, like lspci -i "
                             "(default: the system's, /usr/share/misc/pci.ids or /usr/share/hwdata/pci.ids)")(f)


@cli.command()
@source_options
@pci_ids_option
@format_option
@output_option
def devices(sysfs_path, lspci_dumps, snapshot, drivers, pci_ids, fmt, output) -> None:
    """List PCI functions with names, driver and capability map.

    Names come from the PCI ID database (pci.ids), as lspci's do. Capabilities are shown as
    [offset] name (length in bytes); a * marks one the kernel's own capability walk does not
    reach. Odd chains (loops, bad pointers) are listed as anomalies.

    \b
    Examples:
      cfgaudit devices
      cfgaudit devices --lspci-dump cxl.txt --format json
      cfgaudit devices --sysfs-path /tmp/fake-sysfs --format csv
      cfgaudit devices --pci-ids ./pci.ids
    """
    ds = cfgaudit.open_devices(_sources(sysfs_path, lspci_dumps, snapshot, drivers))
    text = render_devices(cfgaudit.devices_rows(ds, cfgaudit.PciIds.load(pci_ids)), fmt)
    _warn(ds.warnings)
    _emit(text, output)


@cli.command()
@source_options
@rule_options
@format_option
@output_option
def regions(sysfs_path, lspci_dumps, snapshot, drivers, kernel, claims, iomem_relaxed, fmt, output) -> None:
    """Show which config-space bytes the kernel owns, for a kernel release.

    Kinds: exclusive (claimed with pci_request_config_region_exclusive(); the kernel warns
    and taints on a sysfs write), managed (programmed by the kernel without a claim; a
    write silently desynchronises it) and user (handed to user space: vfio-pci, or a
    claims file).

    \b
    Examples:
      cfgaudit regions
      cfgaudit regions --lspci-dump cxl.txt --driver 0d:00.0=cxl_pci --kernel 6.2.0
      cfgaudit regions --snapshot host.json --claims site-claims.toml --format json
    """
    ds = cfgaudit.open_devices(_sources(sysfs_path, lspci_dumps, snapshot, drivers))
    res = cfgaudit.registry_for(ds, kernel, claims, iomem_relaxed)
    text = render_regions(cfgaudit.regions_rows(res), fmt, str(res.kernel), res.iomem_relaxed)
    _warn(ds.warnings + res.warnings)
    _emit(text, output)


@cli.command()
@source_options
@click.option("-o", "--output", metavar="FILE", required=True, help="snapshot file to write (JSON)")
@click.option("--kernel", metavar="RELEASE", callback=_nonempty,
              help="record this kernel release (for dumps, which carry none)")
@click.option("--iomem-relaxed/--strict-iomem", "iomem_relaxed", default=None,
              help="record whether the host booted with iomem=relaxed")
@click.option("--host", metavar="NAME", help="record this host name")
def snapshot(sysfs_path, lspci_dumps, snapshot, drivers, output, kernel, iomem_relaxed, host) -> None:
    """Save every device's config bytes, driver and the host's kernel facts to a file.

    A snapshot taken on the host is what offline analysis needs later: 'cfgaudit regions
    --snapshot FILE' and 'cfgaudit analyze --snapshot FILE' read it.

    \b
    Examples:
      sudo cfgaudit snapshot -o host.json
      cfgaudit snapshot --lspci-dump cxl.txt --driver 0d:00.0=cxl_pci --kernel 6.2.0 -o cxl.json
    """
    ds = cfgaudit.open_devices(_sources(sysfs_path, lspci_dumps, snapshot, drivers))
    n = cfgaudit.write_snapshot(ds, output, kernel=kernel, iomem_relaxed=iomem_relaxed, host=host)
    _warn(ds.warnings)
    click.echo(f"{output}: {n} devices", err=True)


def trace_options(f: Callable) -> Callable:
    """Options shared by the commands that read traces."""
    opts = [
        click.option("--reads", is_flag=True, help="report reads of owned bytes too (not findings by default)"),
        click.option("--skip-bad", is_flag=True, help="skip and count malformed trace lines instead of failing"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _analysis(traces, sysfs_path, lspci_dumps, snapshot, drivers, kernel, claims, iomem_relaxed, reads, skip_bad,
              speed: float = 0.0) -> tuple[cfgaudit.Analysis, int]:
    """Open an analysis and show its warnings so far; returns it with the number shown."""
    a = cfgaudit.open_analysis(list(traces), _sources(sysfs_path, lspci_dumps, snapshot, drivers), kernel, claims,
                      iomem_relaxed, reads, skip_bad, speed)
    _warn(a.warnings)
    return a, len(a.warnings)


def _finish(summary: dict, a: cfgaudit.Analysis, shown: int) -> None:
    _warn(a.warnings[shown:])
    if summary.get("skipped"):
        click.echo(f"Warning: skipped {summary['skipped']} malformed trace line(s)", err=True)
    if summary.get("lost"):
        click.echo(f"Warning: the tracer lost {summary['lost']} event(s): findings may be missing", err=True)
    for line in unknown_device_lines(summary, limit=5):  # every format: csv has no place for them
        click.echo(f"Warning: {line}", err=True)


@cli.command()
@click.argument("traces", nargs=-1, required=True, metavar="TRACE...")
@source_options
@rule_options
@trace_options
@click.option("--format", "fmt", type=REPORT_FORMATS, default="table", show_default=True,
              help="report format")
@output_option
def analyze(traces, sysfs_path, lspci_dumps, snapshot, drivers, kernel, claims, iomem_relaxed, reads, skip_bad,
            fmt, output) -> int:
    """Find writes that hit config-space bytes the kernel owns, and say what the kernel did.

    TRACE is a JSONL or Parquet trace (cfgaudit trace -o, or any file of event lines). A
    trace whose header embeds a snapshot needs no source options. Exit 1 when there are
    findings (not counting writes into user-claimed ranges), 0 when clean, 2 on bad input.

    \b
    Examples:
      cfgaudit analyze sample-traces/cxl-doe-6.2/trace.jsonl
      cfgaudit analyze t.jsonl --lspci-dump cxl.txt --driver 0d:00.0=cxl_pci --kernel 6.2.0
      cfgaudit analyze big.parquet --format csv -o findings.csv   # streams, bounded memory
      cfgaudit analyze t.jsonl --format html -o report.html
    """
    a, shown = _analysis(traces, sysfs_path, lspci_dumps, snapshot, drivers, kernel, claims, iomem_relaxed, reads,
                         skip_bad)
    progress = Progress(a.total_bytes)
    try:
        if output and report.render.RENDERERS[fmt].stream is not None:  # streamed: bounded memory, straight to the file
            try:
                with open(output, "w", newline="") as fh:
                    rep = cfgaudit.render_report(a, fmt, fh, progress)
            except OSError as err:
                raise CfgauditError(f"cannot write: {err.strerror}", path=output) from err
        elif output:  # the whole document, written once the analysis succeeded
            buf = io.StringIO()
            rep = cfgaudit.render_report(a, fmt, buf, progress)
            _emit(buf.getvalue(), output)
        else:
            rep = cfgaudit.render_report(a, fmt, sys.stdout, progress)
    finally:
        progress.done()
    _finish(rep.summary, a, shown)
    return 1 if rep.summary["failing"] else 0


@cli.command()
@click.argument("traces", nargs=-1, required=True, metavar="TRACE...")
@source_options
@rule_options
@trace_options
@click.option("--fail-on", type=FAIL_LEVELS, default="exclusive", show_default=True,
              help="lowest kind of finding that fails the check")
@click.option("--format", "fmt", type=REPORT_FORMATS, default="table", show_default=True,
              help="report format (github, sarif and junit suit CI)")
@output_option
def check(traces, sysfs_path, lspci_dumps, snapshot, drivers, kernel, claims, iomem_relaxed, reads, skip_bad,
          fail_on, fmt, output) -> int:
    """CI gate: exit 1 if any write hits bytes owned at or above --fail-on, else 0 (2: bad input).

    \b
    Examples:
      cfgaudit check trace.jsonl --fail-on exclusive --format github
      cfgaudit check trace.jsonl --fail-on managed --format junit -o cfgaudit.xml
      cfgaudit check trace.jsonl --snapshot host.json --claims site.toml --format sarif -o cfgaudit.sarif
    """
    a, shown = _analysis(traces, sysfs_path, lspci_dumps, snapshot, drivers, kernel, claims, iomem_relaxed, reads,
                         skip_bad)
    progress = Progress(a.total_bytes)
    try:
        rep = cfgaudit.run_analysis(a, progress)
    finally:
        progress.done()
    _emit(report.render.render(rep, fmt), output)
    _finish(rep.summary, a, shown)
    return 1 if cfgaudit.failing(rep, fail_on) else 0


@cli.command()
@click.argument("traces", nargs=-1, required=True, metavar="TRACE...")
@source_options
@rule_options
@trace_options
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="pace: 1 = as recorded, 10 = ten times faster, 0 = no waiting (pauses are cut to 10 s)")
@click.option("-v", "--verbose", is_flag=True, help="more detail under each finding")
def replay(traces, sysfs_path, lspci_dumps, snapshot, drivers, kernel, claims, iomem_relaxed, reads, skip_bad,
           speed, verbose) -> int:
    """Replay a recorded trace, printing findings as they would have appeared live.

    \b
    Examples:
      cfgaudit replay sample-traces/cxl-doe-6.2/trace.jsonl
      cfgaudit replay trace.parquet --speed 0 --snapshot host.json
    """
    a, shown = _analysis(traces, sysfs_path, lspci_dumps, snapshot, drivers, kernel, claims, iomem_relaxed, reads,
                         skip_bad, speed)
    click.echo(LIVE_HEADER)

    def show(t0: int, f: Any) -> None:
        for line in live_lines(f, t0, verbose):
            click.echo(line)

    rep = cfgaudit.replay(a, show)
    s = rep.summary
    click.echo(f"{s['events']} events, {s['writes']} writes: {s['writes_with_findings']} hit owned bytes "
               f"({s['exclusive_writes']} exclusive, {s['managed_writes']} managed); "
               f"the kernel would taint on {s['kernel_taints']}")
    _finish(rep.summary, a, shown)
    return 1 if cfgaudit.failing(rep, "managed") else 0


def live_options(f: Callable) -> Callable:
    """Options of the live commands (trace, run)."""
    opts = [
        click.option("--backend", default="auto", show_default=True, metavar="NAME",
                     help="live backend: auto or one of 'cfgaudit doctor'"),
        click.option("--sysfs-path", metavar="DIR", help="sysfs tree to watch (default /sys/bus/pci)"),
        click.option("--procfs-path", metavar="DIR", default="/proc/bus/pci", show_default=True,
                     callback=_existing_dir, help="procfs tree to watch"),
        click.option("--driver", "drivers", metavar="BDF=NAME", multiple=True,
                     help="bound driver for a device where the tree does not say (repeatable)"),
        click.option("-n", "--comm", metavar="NAME", help="only processes with this name"),
        click.option("--bdf", "bdfs", metavar="BDF", multiple=True, help="only this device (repeatable)"),
        click.option("--reads", is_flag=True, help="trace reads too"),
        click.option("-o", "--output", metavar="FILE", help="record a trace (.jsonl, or .parquet)"),
        click.option("--kernel", metavar="RELEASE", callback=_nonempty,
                     help="evaluate ownership rules for this release (what-if)"),
        click.option("--claims", metavar="FILE", multiple=True, help="TOML file of extra claims (repeatable)"),
        click.option("--iomem-relaxed/--strict-iomem", "iomem_relaxed", default=None,
                     help="override what /proc/cmdline says about iomem=relaxed"),
        click.option("--buffer-pages", type=int, default=4096, show_default=True,
                     help="ring buffer size in 4 KiB pages (a power of two)"),
        click.option("-v", "--verbose", is_flag=True, help="print every access, not only findings"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


class _Stop:
    """SIGINT/SIGTERM (or a deadline in seconds) end a live run cleanly: footer, summary.

    Made before the probes load, so a signal during set-up (compiling BPF takes seconds) is
    kept, not lost or raised mid-load: the run then ends as soon as it starts. The deadline
    counts from :meth:`arm`, the start of tracing."""

    def __init__(self, deadline_s: float | None = None) -> None:
        self.flag = False
        self.signum: int | None = None
        self.deadline_s = deadline_s
        self.end: float | None = None
        self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.flag = True
        self.signum = signum  # which one ended the run (cfgaudit record: the last footer's closed_by)

    def arm(self) -> None:
        """Tracing starts now: the deadline runs from here."""
        if self.deadline_s is not None:
            self.end = time.monotonic() + self.deadline_s

    def __call__(self) -> bool:
        return self.flag or (self.end is not None and time.monotonic() >= self.end)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _live_config(backend, sysfs_path, procfs_path, drivers, comm, bdfs, reads, output, kernel, claims, iomem_relaxed,
                 buffer_pages, pid=0, duration=None) -> cfgaudit.TraceConfig:
    paths = cfgaudit.HostPaths().with_(sysfs=sysfs_path, procfs=procfs_path)
    return cfgaudit.TraceConfig(backend=backend, paths=paths, pid=pid, comm=comm, bdfs=list(bdfs), duration_s=duration,
                                reads=reads, output=output, kernel=kernel, claims=list(claims),
                                iomem_relaxed=iomem_relaxed, buffer_pages=buffer_pages, drivers=list(drivers))


def _printer(verbose: bool, err: bool) -> Callable[[cfgaudit.LiveBatch], None]:
    """Prints a live batch: unmediated-access notices, findings (and with -v every other access)."""
    def show(b: cfgaudit.LiveBatch) -> None:
        for w in b.warnings:
            click.echo(f"Warning: {w}", err=True)
        for n in b.notices:
            click.echo(notice_line(n.pid, n.comm, n.what, n.kind), err=err)
        if verbose and b.events.num_rows:
            hit = set(b.findings["event_index"].tolist()) if not b.findings.empty else set()
            rows = [e for i, e in enumerate(b.events.to_pylist()) if b.base + i not in hit]
            for line in event_lines(rows, b.t0_ns):
                click.echo(line, err=err)
        for line in live_lines(b.findings, b.t0_ns):
            click.echo(line, err=err)
    return show


def _live_until_stopped(cfg: Any, duration: float | None, verbose: bool, started: str) -> Any:
    """``trace`` and ``guard``: load, say ``started`` and the column header, run until Ctrl-C,
    SIGTERM or ``duration`` seconds, and return the report."""
    stop = _Stop(duration)
    try:
        live = cfgaudit.LiveRun(cfg, on_batch=_printer(verbose, err=False))
        _warn(live.warnings)
        with live:
            _warn(live.load_warnings)
            stop.arm()
            click.echo(started)
            click.echo(LIVE_HEADER)
            live.run(stop)
            return live.finish()
    finally:
        stop.restore()


@cli.command()
@live_options
@click.option("-p", "--pid", type=click.IntRange(min=1), help="only this process (thread group)")
@click.option("-d", "--duration", type=float, callback=_seconds(), metavar="SECONDS",
              help="stop after this many seconds")
def trace(backend, sysfs_path, procfs_path, drivers, comm, bdfs, reads, output, kernel, claims, iomem_relaxed,
          buffer_pages, verbose, pid, duration) -> int:
    """Trace user-space config-space writes live (root), one line per finding.

    Ctrl-C (or SIGTERM, or --duration) ends the run with a summary; with -o the trace file
    gets a header embedding every device's config space, so 'cfgaudit analyze FILE' needs
    nothing else. Lost events are counted exactly and reported.

    \b
    Examples:
      sudo cfgaudit trace
      sudo cfgaudit trace -o cxl.jsonl --bdf 0d:00.0 -d 60
      sudo cfgaudit trace -n setpci -v --kernel 6.2.0   # what a 6.2 kernel would have said
    """
    paths = cfgaudit.HostPaths()
    if pid is not None and not os.path.isdir(os.path.join(paths.proc, str(pid))):
        raise UsageError(f"-p {pid}: no such process")
    cfg = _live_config(backend, sysfs_path, procfs_path, drivers, comm, bdfs, reads, output, kernel, claims,
                       iomem_relaxed, buffer_pages, pid or 0, duration)
    rep = _live_until_stopped(cfg, duration, verbose, "Tracing config-space writes ... Ctrl-C to end.")
    for line in summary_lines(rep.summary):
        click.echo(line, err=bool(rep.summary.get("lost")) and line.startswith("Possibly"))
    if rep.summary.get("record_error"):  # the trace asked for is incomplete: not a clean run
        raise OutputError(rep.summary["record_error"])
    return 0


@cli.command(context_settings={"ignore_unknown_options": False})
@live_options
@click.option("--fail-on", type=FAIL_LEVELS, default="exclusive", show_default=True,
              help="lowest kind of finding that makes the run fail (exit 1)")
@click.option("--wait-descendants", type=float, callback=_seconds(zero_ok=True), metavar="SECONDS",
              help="once CMD exits, follow its descendants still running at most this long "
                   "[default: until the last exits; 0: stop with CMD]")
@click.option("--guard", is_flag=True,
              help="refuse (BPF-LSM, EPERM) CMD's writes into owned bytes at or above --fail-on instead of only "
                   "reporting them; other processes are not touched (docs/guard.md)")
@click.argument("cmd", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
def run(backend, sysfs_path, procfs_path, drivers, comm, bdfs, reads, output, kernel, claims, iomem_relaxed,
        buffer_pages, verbose, fail_on, wait_descendants, guard, cmd) -> int:
    """Run CMD under the tracer, following it and every descendant; fail on findings.

    Like 'strace -f', the run lasts until CMD and every process it started have exited,
    also those left running in the background ('setpci ... &' in a script): cfgaudit adopts
    orphaned descendants (it is their child subreaper). --wait-descendants bounds the wait;
    the summary names descendants still running at the end, whose later writes are not seen.

    Exit 1 if CMD (or a descendant) wrote into owned bytes at or above --fail-on, 2 on
    cfgaudit errors, else CMD's own exit code.

    \b
    Examples:
      sudo cfgaudit run -- ./run-tool-tests.sh
      sudo cfgaudit run --fail-on managed -o run.jsonl -- setpci -s 0d:00.0 CAP_EXP+10.w=0:3
      sudo cfgaudit run --wait-descendants 30 -- ./start-daemons.sh
      sudo cfgaudit run --guard -- ./tool-test-suite.sh   # its owned writes fail with EPERM
    """
    cfgaudit.resolve_command(list(cmd))  # a command that cannot run is a usage error before any probe loads
    cfg = _live_config(backend, sysfs_path, procfs_path, drivers, comm, bdfs, reads, output, kernel, claims,
                       iomem_relaxed, buffer_pages)
    if guard:  # the guard's refusals are the run's events: the report shows what was stopped
        cfg.guard = cfgaudit.GuardConfig(level=fail_on if fail_on != "never" else "exclusive")

    def cmd_exited(code: int, left: list[int]) -> None:
        bound = f"at most {wait_descendants:g} s" if wait_descendants is not None else "until the last exits"
        click.echo(f"cfgaudit: {cmd[0]} exited ({code}); following {len(left)} descendant(s) still running "
                   f"({pid_list(left)}) {bound}; Ctrl-C ends the run", err=True)

    stop = _Stop()
    try:
        live = cfgaudit.LiveRun(cfg, follow=True, on_batch=_printer(verbose, err=True))
        _warn(live.warnings)
        with live:
            _warn(live.load_warnings)
            if stop():  # interrupted while the probes loaded: CMD never starts
                raise click.exceptions.Abort()
            click.echo(LIVE_HEADER, err=True)
            code = live.run_command(list(cmd), stop, wait_descendants, cmd_exited)
            rep = live.finish()
    finally:
        stop.restore()
    for line in summary_lines(rep.summary):
        click.echo(f"cfgaudit: {line}", err=True)
    if cfgaudit.failing(rep, fail_on):
        if rep.summary.get("record_error"):
            click.echo(f"Warning: {rep.summary['record_error']}", err=True)
        why = [f"writes into owned bytes at or above '{fail_on}'"] if cfgaudit.failing(rep.findings, fail_on) else []
        if fail_on == "managed" and rep.summary.get("unknown_device_writes"):
            why.append("writes to devices not in the sources")
        if rep.summary.get("collision_events"):
            why.append("collisions with the kernel's own DOE exchanges")
        click.echo(f"cfgaudit: FAIL: {'; '.join(why)}", err=True)
        return 1
    if rep.summary.get("record_error"):  # no conflict seen, but the trace asked for is incomplete
        raise OutputError(rep.summary["record_error"])
    return code


@cli.command()
@click.option("--level", type=GUARD_LEVELS, default="exclusive", show_default=True,
              help="refuse writes into bytes of this kind and stricter")
@click.option("--allow-comm", "allow_comms", metavar="NAME", multiple=True,
              help="a tool nothing is refused to (repeatable); a claims file's user claims name tools per range")
@click.option("--claims", metavar="FILE", multiple=True, help="TOML file of extra claims (repeatable)")
@click.option("--dry-run", is_flag=True, help="refuse nothing; report what would have been refused")
@click.option("-o", "--output", metavar="FILE", help="record the refusals (.jsonl, or .parquet)")
@click.option("-d", "--duration", type=float, callback=_seconds(), metavar="SECONDS",
              help="stop after this many seconds")
@click.option("--kernel", metavar="RELEASE", callback=_nonempty,
              help="evaluate ownership rules for this release (what-if)")
@click.option("--buffer-pages", type=int, default=64, show_default=True,
              help="ring buffer size in 4 KiB pages (a power of two)")
def guard(level, allow_comms, claims, dry_run, output, duration, kernel, buffer_pages) -> int:
    """Refuse user-space writes into owned config-space bytes (root, BPF-LSM), until stopped.

    A write to a sysfs or /proc/bus/pci config file whose bytes overlap a region of --level or
    stricter fails with EPERM before it reaches the device; reads and every other byte pass.
    Each refusal is printed and recorded. Nothing stays behind: the hook goes when cfgaudit
    exits. Exit 2 when the kernel cannot run it (no BPF-LSM: see 'cfgaudit doctor').
    docs/guard.md has the policy, its limits and a systemd unit.

    \b
    Examples:
      sudo cfgaudit guard
      sudo cfgaudit guard --dry-run -d 3600 -o would-refuse.jsonl
      sudo cfgaudit guard --level managed --allow-comm doe-fw-update --claims tools.toml
    """
    cfg = cfgaudit.TraceConfig(output=output, kernel=kernel, claims=list(claims), buffer_pages=buffer_pages,
                               guard=cfgaudit.GuardConfig(level=level, allow_comms=list(allow_comms), dry_run=dry_run))
    what = "Recording what would be refused" if dry_run else "Refusing"
    rep = _live_until_stopped(cfg, duration, False, f"{what}: writes into {level} bytes and stricter ... "
                                                    "Ctrl-C to end.")
    for line in summary_lines(rep.summary):
        click.echo(line)
    if rep.summary.get("record_error"):
        raise OutputError(rep.summary["record_error"])
    return 0


# ---- cfgaudit fleet (issue 13): many hosts' segments on a Dask cluster; docs/fleet.md
FLEET_FORMATS = _LaterChoice(lambda: report.fleet.FLEET_FORMATS)


@cli.group()
def fleet() -> None:
    """Analyse many hosts' trace segments on a Dask cluster, and summarise the fleet.

    'fleet analyze' analyses each segment against its own host's embedded snapshot and kernel
    (one Dask task per segment) into a Parquet dataset partitioned by host; 'fleet report'
    summarises it by tool, device model, owner, kernel release and host. docs/fleet.md.

    \b
    Examples:
      cfgaudit fleet analyze /srv/cfgaudit/segments -o /srv/cfgaudit/fleet
      cfgaudit fleet report /srv/cfgaudit/fleet --format html -o fleet.html
    """


@fleet.command("analyze")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("-o", "--output", "out", metavar="DIR", required=True,
              help="output directory or fsspec URL: the findings dataset (host=NAME/*.parquet) and _segments/")
@click.option("--scheduler", metavar="ADDRESS", callback=_nonempty,
              help="a running Dask scheduler, e.g. tcp://HOST:8786 (default: a LocalCluster on this machine)")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="worker processes of the LocalCluster [default: min(CPUs, 4)]")
@trace_options
@click.option("-v", "--verbose", is_flag=True, help="show the Dask cluster's own warnings")
def fleet_analyze(paths, out, scheduler, workers, reads, skip_bad, verbose) -> int:
    """Analyse trace segments of many hosts, one Dask task per segment, into a dataset.

    PATH is a segment file, a directory (searched recursively for *.parquet and *.jsonl; the
    open segments *.partial.jsonl of a running recorder are left out unless named), a glob or
    an fsspec URL (s3://bucket/segments/). Each segment is analysed as 'cfgaudit analyze
    SEGMENT' would, against its own embedded snapshot and kernel release. Resumable: segments
    already done (same file) are skipped. Exit 0 when every segment was analysed (findings or
    not: 'fleet report --fail-on' gates), 2 when some could not be (one Error line each; the
    others complete).

    \b
    Examples:
      cfgaudit fleet analyze /srv/segments -o /srv/fleet --workers 2
      cfgaudit fleet analyze '/srv/segments/host=web-*' -o /srv/fleet
      # a real cluster: 'dask scheduler' on one host, 'dask worker tcp://HOST:8786' on each
      # worker host (cfgaudit installed there too); segments on shared storage or s3://
      cfgaudit fleet analyze s3://bucket/segments -o s3://bucket/fleet --scheduler tcp://HOST:8786
    """
    if scheduler and workers:
        raise UsageError("--workers sizes the LocalCluster; a cluster given with --scheduler has its own workers")
    progress = SegmentProgress()
    try:
        run = cfgaudit.run_fleet(list(paths), out, scheduler, workers,
                                 cfgaudit.FleetOptions(reads=reads, skip_bad=skip_bad), progress, quiet=not verbose)
    finally:
        progress.done()
    click.echo(f"{run.out}: {run.analysed:,} segments analysed, {run.skipped:,} already done, {len(run.errors):,} "
               f"failed, of {run.segments:,} ({run.seconds:.1f} s, {run.workers} workers)", err=True)
    for e in run.errors:
        click.echo(f"Error: {e.url}: {e.reason}", err=True)
    return EXIT_ERROR if run.errors else 0


@fleet.command("report")
@click.argument("out", metavar="OUT")
@click.option("--format", "fmt", type=FLEET_FORMATS, default="table", show_default=True, help="report format")
@click.option("--fail-on", type=FAIL_LEVELS, default="exclusive", show_default=True,
              help="lowest kind of finding that fails the report (exit 1), as 'check'")
@click.option("--pci-ids", metavar="FILE", help="device names from this pci.ids (default: the system's, as lspci)")
@output_option
def fleet_report(out, fmt, fail_on, pci_ids, output) -> int:
    """Summarise a fleet analysed by 'fleet analyze': by tool, device model, owner and rule,
    kernel release and host; hosts with lost events or paths the tracer cannot follow.

    Exit 1 if any host wrote into owned bytes at or above --fail-on (as 'check'), else 0
    (2: bad input).

    \b
    Examples:
      cfgaudit fleet report /srv/fleet
      cfgaudit fleet report /srv/fleet --format html -o fleet.html
      cfgaudit fleet report s3://bucket/fleet --format json --fail-on managed
    """
    rep = cfgaudit.fleet_report(out, pci_ids)
    _emit(report.fleet.render_fleet(rep, fmt), output)
    return 1 if cfgaudit.fleet_failing(rep, fail_on) else 0


# ---- cfgaudit record (issue 13): the recorder as a service; docs/record.md
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(zero_ok: bool = False) -> Callable[[click.Context, click.Parameter, str | None], int | None]:
    """Callback for a size in bytes: an integer with an optional K, M, G or T (powers of 1024;
    a trailing B or iB is fine): 64M, 1.5G, 512KiB; above 0, or with ``zero_ok`` 0 or more."""
    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
        if value is None:
            return None
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
        try:
            n = float(text[: len(text) - len(unit)])
        except ValueError:
            n = math.nan
        if not math.isfinite(n) or n < 0 or (n == 0 and not zero_ok):
            want = "0 or more" if zero_ok else "above 0"
            raise click.BadParameter(f"{value!r} is not a size {want} (bytes, or with K, M, G: 64M)", ctx=ctx,
                                     param=param)
        return int(n * _SIZE_UNITS[unit])
    return check


def _without(name: str) -> Callable[[Callable], Callable]:
    """Drop the option ``name`` that an option decorator below added (record: no -o, DIR is the output)."""
    def drop(f: Callable) -> Callable:
        f.__click_params__ = [p for p in getattr(f, "__click_params__", []) if p.name != name]  # type: ignore[attr-defined]
        return f
    return drop


@cli.command()
@click.argument("directory", metavar="DIR")
@_without("output")
@live_options
@click.option("--host", metavar="NAME", help="the host's name in DIR/host=NAME [default: this host's name]")
@click.option("--rotate-bytes", default="64M", show_default=True, callback=_size(), metavar="SIZE",
              help="close the open segment once it holds this many bytes (JSON Lines; K, M, G)")
@click.option("--rotate-seconds", type=float, default=3600.0, show_default=True, callback=_seconds(),
              metavar="SECONDS", help="close the open segment once it is this old")
@click.option("--keep-bytes", default="0", callback=_size(zero_ok=True), metavar="SIZE",
              help="delete closed segments, oldest first, beyond this many bytes [default: 0, keep all]")
@click.option("--metrics", metavar="FILE",
              help="write counters here in Prometheus' text format (node_exporter's textfile collector: *.prom)")
@click.option("-d", "--duration", type=float, callback=_seconds(), metavar="SECONDS",
              help="stop after this many seconds")
def record(directory, backend, sysfs_path, procfs_path, drivers, comm, bdfs, reads, kernel, claims, iomem_relaxed,
           buffer_pages, verbose, host, rotate_bytes, rotate_seconds, keep_bytes, metrics, duration) -> int:
    """Record config-space accesses for ever (root), into rotated Parquet segments under DIR.

    Segments are DIR/host=HOST/seg-SEQ-UTCSTART.parquet, each a trace 'cfgaudit analyze'
    reads on its own (its header embeds the snapshot, host, machine and boot ids, kernel and
    backend; its footer counts events and losses). The open one is SEGMENT.partial.jsonl,
    readable at any time. SIGHUP rotates; SIGTERM or Ctrl-C closes the open segment and
    exits 0; a restart converts what a crash left and continues the numbering. Findings are
    printed as 'trace' prints them. docs/record.md has the layout, the metrics and a systemd
    unit (contrib/cfgaudit-record.service).

    \b
    Examples:
      sudo cfgaudit record /var/lib/cfgaudit
      sudo cfgaudit record /var/lib/cfgaudit --rotate-bytes 16M --rotate-seconds 900 --keep-bytes 2G
      sudo cfgaudit record /var/lib/cfgaudit --metrics /var/lib/node_exporter/textfile_collector/cfgaudit.prom
      sudo systemctl reload cfgaudit-record    # SIGHUP: close the open segment now
      cfgaudit analyze /var/lib/cfgaudit/host=$(hostname)/seg-00000042-*.parquet
    """
    cfg = cfgaudit.RecordConfig(
        directory=directory, host=host, rotate_bytes=rotate_bytes, rotate_seconds=rotate_seconds,
        keep_bytes=keep_bytes, metrics=metrics,
        trace=_live_config(backend, sysfs_path, procfs_path, drivers, comm, bdfs, reads, None, kernel, claims,
                           iomem_relaxed, buffer_pages))
    stop = _Stop(duration)
    held: list[Any] = []  # the recorder, once made: SIGHUP before then has nothing to rotate
    old_hup = signal.signal(signal.SIGHUP, lambda s, f: held and held[0].rotate_soon("sighup"))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def why() -> str | None:
        if stop.signum is not None:
            return signal.Signals(stop.signum).name.lower()  # "sigterm" | "sigint"
        return "duration" if stop() else None

    def closed(s: Any) -> None:
        click.echo(f"record: segment {s.seq} closed ({s.closed_by}): {s.events} events, {s.lost} lost -> "
                   f"{s.path}", err=True)

    try:
        rec = cfgaudit.Recorder(cfg, on_batch=_printer(verbose, err=False), on_segment=closed,
                                warn=lambda m: click.echo(f"record: {m}", err=True))
        _warn(rec.warnings)
        with rec:
            held.append(rec)
            _warn(rec.load_warnings)
            stop.arm()
            click.echo(f"Recording config-space accesses into {rec.dir} (segment {rec.seq}) ... "
                       "SIGHUP rotates, SIGTERM or Ctrl-C ends.")
            click.echo(LIVE_HEADER)
            rec.run(why)
    finally:
        stop.restore()
        signal.signal(signal.SIGHUP, old_hup)
    c = rec.counters
    click.echo(f"{c.accesses} config accesses, {sum(c.findings.values())} findings, {c.lost} events lost, "
               f"{c.segments_closed} segments closed ({c.segments_deleted} deleted), ended by {rec.stopped_by}")
    return 0


@cli.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="output format")
@click.option("--fix", is_flag=True, help="mount what the live backends need (tracefs, debugfs), as root")
def doctor(fmt, fix) -> int:
    """Say which live backends can run here, and why the others cannot. It only looks: with --fix
    it also mounts what the live backends need (they do so themselves when a session starts).

    \b
    Examples:
      sudo cfgaudit doctor
      cfgaudit doctor --format json
      sudo cfgaudit doctor --fix
    """
    paths = cfgaudit.HostPaths()
    if fix:
        for line in cfgaudit.prepare_host(paths):
            click.echo(f"doctor: {line}", err=True)
    click.echo(render_doctor(cfgaudit.doctor_rows(paths), fmt), nl=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI, translate errors, return the exit code."""
    try:
        rv = cli.main(args=argv, prog_name="cfgaudit", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("Error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        msg = " ".join(e.format_message().split())
        ctx_name = getattr(getattr(e, "ctx", None), "command_path", None)
        hint = f" (see '{ctx_name} --help')" if ctx_name else ""
        click.echo(f"Error: {msg}{hint}", err=True)
        return EXIT_ERROR
    except CfgauditError as e:
        click.echo(f"Error: {' '.join(str(e).split())}", err=True)
        return EXIT_ERROR
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the one place an unexpected exception becomes an exit code
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            traceback.print_exc()
        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        at = f" at {os.path.basename(where.filename)}:{where.lineno}" if where else ""
        msg = " ".join(str(e).split())[:200]
        click.echo(f"Error: internal error{at}: {type(e).__name__}: {msg} (a bug in cfgaudit; "
                   "'cfgaudit --debug ...' shows the traceback)", err=True)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover - python -m cfgaudit.cli (the program is cfgaudit.__main__)
    sys.exit(main())
