"""``python -m fuzz``: run the fuzz tier and print its table (exit 1 on any traceback, signal or hang).

Run from tests/ or with tests/ on PYTHONPATH (``make fuzz`` does). ``--worker DIR`` is the
worker side of the runner (internal).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .runner import run_fuzz, worker_main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="seed: the same seed gives the same inputs")
    ap.add_argument("--count", type=int, default=200, help="inputs per format")
    ap.add_argument("--start", type=int, default=0, help="index of the first input (to re-run one: --count 1)")
    ap.add_argument("--format", dest="formats", action="append", help="only this format (repeatable)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes")
    ap.add_argument("--runs", type=int, default=2, help="commands run per input (picked by the seed)")
    ap.add_argument("--limit", type=float, default=10.0, help="seconds per run before it counts as a hang")
    ap.add_argument("--failures", metavar="DIR", default="fuzz-failures",
                    help="copy failing inputs here, with command.txt and outcome.txt")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (inputs of the last job per worker)")
    ap.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    ap.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker_main(a.worker)
    summ = run_fuzz(a.formats, a.count, a.seed, a.start, a.workers, a.limit, a.runs, a.failures, sys.stderr, a.keep)
    print(summ.report())
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as fh:
            json.dump(summ.to_json(), fh, indent=1)
    return 1 if summ.failures() or summ.fuzzer_errors else 0


if __name__ == "__main__":
    sys.exit(main())
