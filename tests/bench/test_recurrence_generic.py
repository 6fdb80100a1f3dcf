"""The recurrence bench's first-call measurements: which calls run, and the fresh processes."""
import pytest

from torchnewton.bench.suites import recurrence_generic as generic


@pytest.mark.parametrize("quick", [True, False])
def test_default_that_ran_newton_is_measured_once(monkeypatch, quick):
    calls = []

    def fake_cold(kind, seed, method):
        calls.append((kind, seed, method))
        return {"first_s": 0.1 * len(calls), "dynamo": False}

    monkeypatch.setattr(generic, "_cold", fake_cold)
    rows = [{"cell": "diagonal", "auto": {"ran": "newton"}, "loop_s": 2.0},
            {"cell": "dense", "auto": {"ran": "jacobi"}, "loop_s": 1.0}]
    generic._cold_rows(rows, 7, quick)

    methods = generic.QUICK_COLD if quick else generic.METHODS
    expected = [(cell, 7, m) for cell in ("diagonal", "dense") for m in ([] if quick else ["loop"]) + list(methods)
                if not (cell == "diagonal" and m == "newton")]
    assert calls == expected
    measured = {(cell, m): 0.1 * (k + 1) for k, (cell, _, m) in enumerate(expected)}
    diagonal, dense = rows
    assert diagonal["cold"]["newton"]["s"] == diagonal["cold"]["auto"]["s"] == measured["diagonal", "auto"]
    assert diagonal["cold"]["newton"]["same_call_as"] == "auto"
    assert "same_call_as" not in dense["cold"]["newton"]
    assert dense["cold"]["newton"]["s"] == measured["dense", "newton"]
    for row in rows:
        assert list(row["cold"]) == list(methods)
        loop = row["loop_s"] if quick else measured[row["cell"], "loop"]
        assert row["cold_loop_s"] == loop
        for cold in row["cold"].values():
            assert cold["speedup"] == pytest.approx(loop / cold["s"])


def test_first_call_in_a_fresh_process():
    cold = generic._cold("dense", 0, "jacobi")
    assert cold["first_s"] > 0
    assert cold["dynamo"] is False


def test_failing_first_call_is_reported():
    with pytest.raises(RuntimeError, match="cold-start subprocess failed"):
        generic._cold("dense", 0, "no-such-method")
