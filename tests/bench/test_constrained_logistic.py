"""The constrained logistic-regression benchmark part: its matrix-free pieces agree with the dense
ones, its KKT-solve figures are what they claim, and the sharpened sketch converges superlinearly."""
import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from torchnewton.bench.suite import BenchContext  # noqa: E402
from torchnewton.bench.suites import constrained_logistic as cl  # noqa: E402


@pytest.fixture(scope="module")
def problem():
    return cl.LogisticProblem(*cl.synthetic(20, 0), seed=0)


def test_hessian_product_and_jacobian_match_dense_ones(problem):
    w = problem.x0 + 0.1
    V = torch.randn(1, problem.n, 3, dtype=torch.float64)
    torch.testing.assert_close(problem.hessian_product(w)(V)[0], problem.hessian(w) @ V[0])
    jac = torch.autograd.functional.jacobian(problem.constraints, w)
    torch.testing.assert_close(problem.constraint_jacobian(w), jac)


def test_kkt_solve_cost_figures_are_consistent(problem, tmp_path):
    cost = cl._kkt_solve_cost(BenchContext(quick=True, out_dir=tmp_path), (20,), cap=20_000, repeats=1)
    assert set(cost) == {"20, first iterate", f"20, after {cl.LATE} iterations"}
    for figures in cost.values():
        to_theta = figures["dense_to_theta"]
        assert to_theta["reached"] and to_theta["relative_residual"] <= cl.THETA
        assert figures["direct_s"] > 0 and figures["delta"] >= 0
        for within in ("dense_within_direct", "matrix_free_within_direct"):
            assert 0 <= figures[within]["relative_residual"] <= 10  # a residual, not a placeholder
            assert figures[within]["iterations"] >= 0


def test_sharpened_accuracy_gives_superlinear_convergence():
    problem = cl.LogisticProblem(*cl.breast_cancer(), seed=0)
    runs = {}
    for name in ("sketch, θ fixed", "sketch, θ sharpened"):
        iterates = [problem.x0.clone()]
        cl.solve(problem, cl.VARIANTS[name], max_iter=60, hessian=True, on_iterate=iterates.append)
        runs[name] = np.array([problem.kkt(w) for w in iterates])
    fixed, sharp = runs["sketch, θ fixed"], runs["sketch, θ sharpened"]
    assert fixed[-1] < 1e-6 and sharp[-1] < 1e-10
    assert len(sharp) < len(fixed)
    # linear with θ fixed: no late step gains more than ~3 orders; sharpened: the last ones do
    late_fixed = fixed[1:][fixed[:-1] < 1e-3] / fixed[:-1][fixed[:-1] < 1e-3]
    late_sharp = sharp[1:][sharp[:-1] < 1e-3] / sharp[:-1][sharp[:-1] < 1e-3]
    assert late_fixed.min() > 1e-3
    assert late_sharp.min() < 1e-5
