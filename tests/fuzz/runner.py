"""The fuzz loop: worker processes run cfgaudit's CLI in-process; the parent schedules, watches
and tallies.

Each worker is a fresh interpreter (``python -m fuzz --worker DIR``), not a fork of the parent:
forking a process whose pyarrow thread pools are running can deadlock the child. A job is one
input, named by (format, index): the worker rebuilds it from ``Random(f"{seed}/{format}/{index}")``,
so any input is reproduced from the seed alone, whatever ran before it. Before each command the
worker tells the parent which one it starts, so a worker killed by a signal, or silent past the
hard time limit, is pinned on one input and one command; the worker is then replaced.

Outcomes of one command (a *run*): ``ok`` (exit 0), ``findings`` (1), ``error`` (2 with exactly
one ``Error: `` line on stderr), ``traceback`` (exit 3 or any other code, an exception escaping
``main``, exit 2 without its one ``Error:`` line, or "Traceback" on stderr), ``signal``
(the worker died of one), ``hang`` (past the per-run time limit, seconds).
"""
from __future__ import annotations

import io
import json
import os
import random
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

__all__ = ["OUTCOMES", "FAILURES", "FormatStats", "Summary", "run_fuzz", "worker_main", "classify"]

OUTCOMES = ("ok", "findings", "error", "traceback", "signal", "hang")
FAILURES = ("traceback", "signal", "hang")
MEMORY_LIMIT = 3 << 30  # bytes of address space per worker: a runaway allocation is a MemoryError, not the OOM killer
JOBS_PER_WORKER = 600  # a fresh interpreter after this many inputs (bounded leaks, no state carried far)
HARD_GRACE_S = 20.0  # the parent kills a worker silent this long past the per-run wall limit
# A run's limit is CPU seconds (ITIMER_PROF: the process, all threads): a loop that never ends burns
# it whatever the machine's load. A run blocked without burning CPU (a FIFO read) is caught by the
# wall-clock limit, WALL_FACTOR times longer, so a busy machine does not turn slow runs into hangs.
WALL_FACTOR = 6.0
SAVE_PER_SIGNATURE = 3  # failure directories kept per distinct crash site


class _Hang(BaseException):
    """Raised in the worker by SIGALRM: not an ``Exception``, so cfgaudit's handlers cannot eat it."""


# ----------------------------------------------------------------------------------------------
# the worker
# ----------------------------------------------------------------------------------------------
def classify(code: int | None, stderr: str, escaped: BaseException | None = None) -> tuple[str, str]:
    """(outcome, detail) of one in-process run from its exit code and stderr."""
    if escaped is not None:
        tb = traceback.extract_tb(escaped.__traceback__)
        where = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
        return "traceback", f"escaped main at {where}: {type(escaped).__name__}: {str(escaped)[:200]}"
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    if "Traceback (most recent call last)" in stderr:
        return "traceback", "a traceback on stderr: " + (errors[0] if errors else stderr.strip()[-300:])
    if code == 0:
        return "ok", ""
    if code == 1:
        return "findings", ""
    if code == 2:
        if len(errors) == 1:
            return "error", errors[0][:300]
        return "traceback", f"exit 2 with {len(errors)} 'Error:' lines: {stderr.strip()[-300:]!r}"
    return "traceback", f"exit {code}: " + (errors[0][:300] if errors else stderr.strip()[-300:])


def signature(outcome: str, detail: str, argv: list[str]) -> str:
    """A short key grouping failures at one crash site (file:line and exception type)."""
    m = re.search(r"(?:internal error|escaped main) at (.+?:\d+): (\w+)", detail)
    cmd = argv[0] if argv else "?"
    if m:
        return f"{outcome} {m[1]} {m[2]}"
    if outcome == "signal":
        return f"signal {detail.split()[1] if detail.startswith('signal ') else detail} in {cmd}"
    if outcome == "hang":
        return f"hang in {cmd}"
    return f"{outcome} {detail[:60]}"


def _stop_timers() -> None:
    signal.setitimer(signal.ITIMER_PROF, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Hang("CPU" if signum == signal.SIGPROF else "wall-clock")


def _run_one(argv: list[str], limit_s: float) -> dict[str, Any]:
    """Run ``cfgaudit.cli.main(argv)`` with stdout/stderr captured, a CPU limit of ``limit_s``
    seconds and a wall-clock limit of ``WALL_FACTOR`` times that."""
    from cfgaudit.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    escaped: BaseException | None = None
    t0 = time.monotonic()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGPROF, _on_alarm)
    signal.setitimer(signal.ITIMER_PROF, limit_s)
    signal.setitimer(signal.ITIMER_REAL, limit_s * WALL_FACTOR)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)
    except _Hang as h:
        _stop_timers()
        which = h.args[0] if h.args else "time"
        limit = limit_s if which == "CPU" else limit_s * WALL_FACTOR
        return {"outcome": "hang", "detail": f"over {limit} s of {which} time", "code": None,
                "s": time.monotonic() - t0, "stderr": err.getvalue()[-2000:]}
    except BaseException as e:  # noqa: BLE001 - anything escaping main is what we are looking for
        escaped = e
    finally:
        _stop_timers()
    outcome, detail = classify(code, err.getvalue(), escaped)
    if escaped is not None:
        detail += "\n" + "".join(traceback.format_exception(escaped))[-3000:]
    return {"outcome": outcome, "detail": detail, "code": code, "s": time.monotonic() - t0,
            "stderr": err.getvalue()[-2000:]}


def _clean(d: str) -> None:
    if os.path.isdir(d):
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
    else:
        os.makedirs(d)


def worker_main(workdir: str) -> int:
    """The worker loop: jobs as JSON lines on stdin, results as JSON lines on the saved stdout.
    cfgaudit's own output is captured in memory; anything written to fds 1 and 2 below Python
    goes to ``workdir/worker.log`` (kept for a signal's post-mortem)."""
    from .formats import FORMATS
    from .seeds import Seeds

    proto: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open(os.path.join(workdir, "worker.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    seeds = Seeds.load(os.path.join(workdir, "seeds"))
    indir = os.path.join(workdir, "in")
    os.chdir(workdir)

    def send(msg: dict[str, Any]) -> None:
        proto.write(json.dumps(msg) + "\n")

    send({"ready": os.getpid()})
    for line in sys.stdin:
        job = json.loads(line)
        os.ftruncate(log, 0)
        os.lseek(log, 0, os.SEEK_SET)
        fmt = FORMATS[job["format"]]
        rng = random.Random(f"{job['seed']}/{fmt.name}/{job['index']}")
        _clean(indir)
        t0 = time.monotonic()
        try:
            inp = fmt.make(rng, seeds, indir)
            cmds = fmt.commands(rng, inp, seeds, indir)
        except Exception:  # noqa: BLE001 - a bug in the fuzzer itself: report it, do not count it as cfgaudit's
            send({"fuzzer_error": traceback.format_exc()[-3000:]})
            continue
        picked = cmds if job["runs"] >= len(cmds) else rng.sample(cmds, job["runs"])
        results = []
        for k, argv in enumerate(picked):
            send({"start": k, "argv": argv, "files": inp.files, "path": inp.path, "note": inp.note})
            results.append(dict(_run_one(argv, job["limit"]), argv=argv))
        send({"done": True, "results": results, "files": inp.files, "path": inp.path, "note": inp.note,
              "gen_s": time.monotonic() - t0})
    return 0


# ----------------------------------------------------------------------------------------------
# the parent
# ----------------------------------------------------------------------------------------------
@dataclass
class FormatStats:
    """Counts for one format. ``seconds``: wall time its inputs kept a worker busy."""

    inputs: int = 0
    runs: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {o: 0 for o in OUTCOMES})
    seconds: float = 0.0
    commands: dict[str, int] = field(default_factory=dict)


@dataclass
class Summary:
    """The result of a fuzz run: per-format stats, distinct failure signatures (with a count and
    the first saved example), and the settings that reproduce it."""

    seed: int
    count: int
    start: int
    formats: dict[str, FormatStats]
    signatures: dict[str, dict[str, Any]] = field(default_factory=dict)
    fuzzer_errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def failures(self) -> int:
        return sum(s.counts[o] for s in self.formats.values() for o in FAILURES)

    def table(self) -> str:
        head = ("format", "inputs", "runs", "ok", "findings", "errors", "tracebacks", "signals", "hangs", "seconds")
        rows = [head]
        tot = FormatStats()
        for name, s in self.formats.items():
            rows.append((name, str(s.inputs), str(s.runs), str(s.counts["ok"]), str(s.counts["findings"]),
                         str(s.counts["error"]), str(s.counts["traceback"]), str(s.counts["signal"]),
                         str(s.counts["hang"]), f"{s.seconds:.0f}"))
            tot.inputs += s.inputs
            tot.runs += s.runs
            tot.seconds += s.seconds
            for o in OUTCOMES:
                tot.counts[o] += s.counts[o]
        rows.append(("total", str(tot.inputs), str(tot.runs), str(tot.counts["ok"]), str(tot.counts["findings"]),
                     str(tot.counts["error"]), str(tot.counts["traceback"]), str(tot.counts["signal"]),
                     str(tot.counts["hang"]), f"{tot.seconds:.0f}"))
        w = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        lines.insert(len(lines) - 1, "  ".join("-" * x for x in w))
        return "\n".join(lines)

    def report(self) -> str:
        out = [f"fuzz: seed {self.seed}, inputs {self.start}..{self.start + self.count - 1} per format, "
               f"{self.wall_s:.0f} s wall", self.table()]
        if self.signatures:
            out.append("failures by site:")
            for sig, info in sorted(self.signatures.items(), key=lambda kv: -kv[1]["count"]):
                out.append(f"  {info['count']:6d}  {sig}")
                out.append(f"          e.g. {info['example']}")
        for e in self.fuzzer_errors[:5]:
            out.append("fuzzer error (not cfgaudit's): " + e.strip().splitlines()[-1])
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "count": self.count, "start": self.start, "wall_s": round(self.wall_s, 1),
                "formats": {k: {"inputs": s.inputs, "runs": s.runs, **s.counts, "seconds": round(s.seconds, 1),
                                "commands": s.commands} for k, s in self.formats.items()},
                "signatures": self.signatures, "fuzzer_errors": len(self.fuzzer_errors)}


class _Worker:
    """One worker process and the job it is on."""

    def __init__(self, root: str, n: int) -> None:
        self.dir = os.path.join(root, f"w{n}")
        os.makedirs(self.dir, exist_ok=True)
        tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p),
                   PYTHONHASHSEED="0", COLUMNS="100")
        self.proc = subprocess.Popen([sys.executable, "-m", "fuzz", "--worker", self.dir], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                                     bufsize=1)
        self.job: dict[str, Any] | None = None
        self.started: dict[str, Any] | None = None  # the command in flight
        self.last = time.monotonic()
        self.t_job = 0.0
        self.jobs = 0
        self.ready = False
        self.buf = ""
        self.slot = n

    def send(self, job: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.job, self.started, self.last, self.t_job = job, None, time.monotonic(), time.monotonic()
        self.jobs += 1
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _save(faildir: str, fmt: str, index: int, k: int, outcome: str, info: dict[str, Any], res: dict[str, Any],
          seed: int, runs: int) -> str:
    """Copy the input into ``faildir/FORMAT/INDEX-k-OUTCOME/`` with the command and the outcome."""
    d = os.path.join(faildir, fmt, f"{index:06d}-{k}-{outcome}")
    os.makedirs(d, exist_ok=True)
    mapping = {}
    work = os.path.dirname(os.path.dirname(info.get("path", "") or "/"))  # the worker's directory
    side = [a for a in res.get("argv", []) if work != "/" and a.startswith(work + os.sep)]
    for f in list(info.get("files", [])) + side:
        if os.path.isfile(f) and f not in mapping:
            dst = os.path.join(d, os.path.basename(f))
            shutil.copyfile(f, dst)
            mapping[f] = dst
    argv = [mapping.get(a, a) for a in res.get("argv", [])]
    with open(os.path.join(d, "command.txt"), "w") as fh:
        fh.write("cfgaudit " + " ".join(_quote(a) for a in argv) + "\n")
        fh.write(f"# regenerate: python -m fuzz --format {fmt} --seed {seed} --start {index} --count 1 --runs {runs} "
                 "--keep DIR\n")
        fh.write(f"# input: {info.get('note', '')} (path {info.get('path', '')})\n")
    with open(os.path.join(d, "outcome.txt"), "w") as fh:
        fh.write(f"{outcome} (exit {res.get('code')})\n{res.get('detail', '')}\n"
                 f"--- stderr ---\n{res.get('stderr', '')}\n")
    return d


def _quote(a: str) -> str:
    return a if re.match(r"^[\w@%+=:,./-]+$", a) else "'" + a.replace("'", "'\\''") + "'"


def run_fuzz(formats: list[str] | None = None, count: int = 200, seed: int = 1, start: int = 0, workers: int = 2,
             limit_s: float = 10.0, runs: int = 2, faildir: str | None = None, progress: IO[str] | None = None,
             keep: str | None = None) -> Summary:
    """Fuzz ``count`` inputs per format (indices ``start``.. ``start+count-1``), ``runs`` commands
    each, in ``workers`` processes; ``limit_s``: seconds per run before it counts as a hang.
    Failing inputs are copied under ``faildir``; ``keep``: a directory to work in (kept), else a
    temporary one (removed)."""
    from .formats import FORMATS

    names = formats or list(FORMATS)
    for n in names:
        if n not in FORMATS:
            raise ValueError(f"unknown format {n!r} (known: {', '.join(FORMATS)})")
    summ = Summary(seed, count, start, {n: FormatStats() for n in names})
    jobs = [{"format": n, "index": i, "seed": seed, "runs": runs, "limit": limit_s}
            for i in range(start, start + count) for n in names]
    jobs.reverse()
    faildir = os.path.abspath(faildir) if faildir else None
    root = keep or tempfile.mkdtemp(prefix="cfgaudit-fuzz-")
    os.makedirs(root, exist_ok=True)
    t0 = time.monotonic()
    done = 0
    total = len(jobs)
    last_note = t0
    sel = selectors.DefaultSelector()
    pool: list[_Worker] = []

    def spawn(slot: int) -> _Worker:
        """A new worker in ``slot`` (its directory); it is fed once it says it is ready."""
        w = _Worker(root, slot)
        assert w.proc.stdout is not None
        os.set_blocking(w.proc.stdout.fileno(), False)
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        pool.append(w)
        return w

    def retire(w: _Worker, kill: bool) -> None:
        assert w.proc.stdout is not None
        sel.unregister(w.proc.stdout)
        pool.remove(w)
        w.kill() if kill else w.stop()

    def record(w: _Worker, results: list[dict[str, Any]], info: dict[str, Any]) -> None:
        nonlocal done
        assert w.job is not None
        fmt, index = w.job["format"], w.job["index"]
        st = summ.formats[fmt]
        st.inputs += 1
        st.seconds += time.monotonic() - w.t_job
        for k, res in enumerate(results):
            st.runs += 1
            o = res["outcome"]
            st.counts[o] += 1
            cmd = res["argv"][0] if res.get("argv") else "?"
            st.commands[cmd] = st.commands.get(cmd, 0) + 1
            if o in FAILURES:
                sig = signature(o, res.get("detail", ""), res.get("argv", []))
                entry = summ.signatures.setdefault(sig, {"count": 0, "example": "", "saved": 0, "formats": []})
                entry["count"] += 1
                if fmt not in entry["formats"]:
                    entry["formats"].append(fmt)
                if faildir and entry["saved"] < SAVE_PER_SIGNATURE:
                    entry["saved"] += 1
                    path = _save(faildir, fmt, index, k, o, info, res, seed, runs)
                    entry["example"] = entry["example"] or path
                elif not entry["example"]:
                    entry["example"] = f"--format {fmt} --seed {seed} --start {index} --count 1"
        done += 1
        w.job = None

    def feed(w: _Worker) -> None:
        if w.jobs >= JOBS_PER_WORKER and jobs:
            retire(w, kill=False)
            spawn(w.slot)
            return
        if jobs:
            w.send(jobs.pop())

    for slot in range(max(1, min(workers, len(jobs)))):
        spawn(slot)
    try:
        while done < total:
            for key, _ in sel.select(timeout=1.0):
                w = key.data
                assert w.proc.stdout is not None
                chunk = w.proc.stdout.read()
                if chunk is None:
                    continue
                if chunk == "":  # the worker died
                    rc = w.proc.wait()
                    if w.job is not None:
                        res = dict(w.started or {}, outcome="signal" if rc < 0 else "traceback",
                                   detail=(f"signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else
                                           f"worker exited {rc}") + " " + _tail(w.dir), code=None, stderr="")
                        res.setdefault("argv", [])
                        record(w, [res], w.started or {})
                    elif not w.ready:
                        raise RuntimeError(f"fuzz worker failed to start (exit {rc}): {_tail(w.dir)}")
                    retire(w, kill=True)
                    if done < total:
                        spawn(w.slot)
                    continue
                w.buf += chunk
                w.last = time.monotonic()
                while "\n" in w.buf:
                    line, w.buf = w.buf.split("\n", 1)
                    msg = json.loads(line)
                    if "ready" in msg:
                        w.ready = True
                        feed(w)
                    elif "start" in msg:
                        w.started = msg
                    elif "fuzzer_error" in msg:
                        summ.fuzzer_errors.append(msg["fuzzer_error"])
                        done += 1
                        w.job = None
                        feed(w)
                    elif "done" in msg:
                        record(w, msg["results"], msg)
                        feed(w)
            now = time.monotonic()
            for w in list(pool):
                if w.job is not None and now - w.last > limit_s * WALL_FACTOR + HARD_GRACE_S:
                    res = dict(w.started or {}, outcome="hang", detail=f"no answer in "
                               f"{limit_s * WALL_FACTOR + HARD_GRACE_S} s "
                               "(killed)", code=None, stderr="")
                    res.setdefault("argv", [])
                    record(w, [res], w.started or {})
                    retire(w, kill=True)
                    spawn(w.slot)
            if progress is not None and now - last_note > 30:
                last_note = now
                fails = summ.failures()
                progress.write(f"fuzz: {done}/{total} inputs, {fails} failures, {now - t0:.0f} s\n")
                progress.flush()
    finally:
        for w in list(pool):
            retire(w, kill=w.job is not None)
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    summ.wall_s = time.monotonic() - t0
    return summ


def _tail(d: str) -> str:
    try:
        with open(os.path.join(d, "worker.log"), "rb") as fh:
            t = fh.read()[-500:].decode("utf-8", "replace").strip()
        return f"(worker log: {t!r})" if t else ""
    except OSError:
        return ""
