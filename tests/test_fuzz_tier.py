"""The fuzz tier at a small budget (``make fuzz`` runs the large one): every format through every
offline command, no traceback, no signal, no hang. See tests/fuzz and RELIABILITY.md."""
from __future__ import annotations

from fuzz import FAILURES, run_fuzz
from fuzz.formats import FORMATS

SMALL = 150  # inputs per format


def test_fuzz_small_budget(tmp_path) -> None:
    summ = run_fuzz(count=SMALL, seed=20260101, workers=2, runs=1, limit_s=10.0, faildir=str(tmp_path / "failures"))
    assert set(summ.formats) == set(FORMATS)
    for name, st in summ.formats.items():
        assert st.inputs == SMALL, (name, st.inputs)
    assert not summ.fuzzer_errors, summ.fuzzer_errors[0]
    bad = {o: sum(st.counts[o] for st in summ.formats.values()) for o in FAILURES}
    assert not any(bad.values()), summ.report()
