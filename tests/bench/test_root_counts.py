"""The root solved-count bench: the equation-problem loader, the shared checker, a smoke run."""
import math

import numpy as np
import pytest
import torch

from torchnewton.bench.peers.root_runs import run_scipy, run_torchnewton
from torchnewton.bench.problems.equations import mgh_equations, residual_norm, s2mpj_equation, solved
from torchnewton.bench.suite import BenchContext
from torchnewton.bench.suites import root_homotopy, root_solved_counts

MGH = {p.name: p for p in mgh_equations()}


def central_differences(fun, x, h=1e-6):
    columns = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h * max(1.0, abs(x[j]))
        columns.append((fun(x + e) - fun(x - e)) / (2 * e[j]))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("problem", [s2mpj_equation("CUBENE"), s2mpj_equation("BROYDN3D"),
                                     MGH["MGH:freudenstein_roth"], MGH["MGH:trigonometric_10"]],
                         ids=lambda p: p.name)
def test_loader_jacobians_match_finite_differences(problem):
    rng = np.random.default_rng(0)
    for x in (problem.x0.numpy(), problem.x0.numpy() + 0.3 * rng.standard_normal(problem.n)):
        J = problem.jacobian_np(x)
        assert J.shape == (problem.n, problem.n)
        np.testing.assert_allclose(J, central_differences(problem.residual_np, x), rtol=1e-6, atol=1e-6)
        torch_F = problem.residual(torch.from_numpy(x))
        np.testing.assert_allclose(torch_F.numpy(), problem.residual_np(x), rtol=1e-14, atol=1e-14)
        if problem.jacobian is not None:
            np.testing.assert_allclose(problem.jacobian(torch.from_numpy(x)).numpy(), J, rtol=1e-14)


def test_the_shared_checker():
    rosenbrock = MGH["MGH:rosenbrock"]
    assert solved(rosenbrock, np.ones(2), 1e-12) and residual_norm(rosenbrock, torch.ones(2)) == 0.0
    x = np.array([1.0 + 1e-9, 1.0])  # F = (10(x₂ − x₁²), 1 − x₁) ≈ (−2e-8, −1e-9)
    assert math.isclose(residual_norm(rosenbrock, x), 2e-8, rel_tol=1e-6)
    assert solved(rosenbrock, x, 3e-8) and not solved(rosenbrock, x, 1e-8)
    assert not solved(rosenbrock, rosenbrock.x0, 1.0)  # ‖F(x₀)‖∞ = 4.4
    assert residual_norm(rosenbrock, np.array([np.nan, 1.0])) == math.inf
    assert residual_norm(MGH["MGH:powell_badly_scaled"], np.array([-1e6, 0.0])) == math.inf  # exp overflows
    scaled = rosenbrock.scaled_start(10)
    assert scaled.name == "MGH:rosenbrock×10" and torch.equal(scaled.x0, 10 * rosenbrock.x0)


def test_runs_are_judged_by_the_checker_not_by_the_solvers_flag():
    problem = MGH["MGH:freudenstein_roth"]
    lm = run_scipy(problem, "lm", tol=1e-8)  # scipy's lm stops at the local minimizer of ½‖F‖²
    assert not lm.solved and lm.residual > 1 and lm.njev > 0
    ours = run_torchnewton(problem, "homotopy", tol=1e-8)
    assert ours.solved and ours.residual <= 1e-8 and ours.status == "SUCCESS"
    with pytest.raises(ValueError, match="method"):
        run_scipy(problem, "anderson", tol=1e-8)


def test_smoke_run_on_two_problems(tmp_path, monkeypatch):
    problems = [s2mpj_equation("HIMMELBA"), MGH["MGH:helical_valley"]]
    monkeypatch.setattr(root_solved_counts, "load", lambda quick: (problems, {}))
    text, figures, plots = root_solved_counts.solved_counts(BenchContext(quick=True, out_dir=tmp_path))
    assert plots[0].exists() and "tn:homotopy" in text and "scipy:hybr" in text
    for solver, records in figures["runs"].items():
        assert [r["problem"] for r in records] == ["HIMMELBA", "MGH:helical_valley"]
        for record in records:
            assert record["solved"] == (record["residual"] <= root_solved_counts.TOL)
    assert figures["counts"]["tn:newton"] == figures["counts"]["scipy:hybr"] == 2

    monkeypatch.setattr(root_homotopy, "QUICK_MGH", ("helical_valley",))
    text, figures, _ = root_homotopy.homotopy_hard_starts(BenchContext(quick=True, out_dir=tmp_path))
    assert "MGH:helical_valley×100" in text
    assert set(figures["counts"]) == set(root_homotopy.METHODS)
