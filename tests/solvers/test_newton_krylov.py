"""root(method="newton-krylov"): Eisenstat–Walker forcing, the safeguarded Armijo search and its
non-monotone escape, against scipy.optimize.root(method="krylov") where that converges."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.optimize
import torch

import torchnewton as tn
from torchnewton.bench.problems.bratu import Bratu2D
from torchnewton.bench.problems.mgh import MGH_PROBLEMS
from torchnewton.core.status import Status
from torchnewton.globalize.forcing import eisenstat_walker

MGH = {p.name: p for p in MGH_PROBLEMS}
TOL = 1e-8


def scipy_krylov(fun, x0: torch.Tensor) -> float:
    numpy_fun = lambda x: fun(torch.from_numpy(x)).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solution = scipy.optimize.root(numpy_fun, x0.numpy(), method="krylov", options={"fatol": TOL})
    return float(np.abs(numpy_fun(solution.x)).max())


@pytest.mark.parametrize("jvp", ["autodiff", "finite-difference"])
def test_no_stall_on_the_trigonometric_function(jvp):
    """MGH's trigonometric function (n = 10): the previous newton-krylov stalled at ‖F‖∞ = 5e-3,
    a local minimum of ‖F‖, where scipy's krylov reaches 1e-8."""
    p = MGH["trigonometric_10"]
    result = tn.root(p.residual, p.x0.clone(), method="newton-krylov", tol=TOL, max_iter=300, options={"jvp": jvp})
    assert result.success, result.message
    assert float(p.residual(result.x).abs().max()) <= TOL
    assert scipy_krylov(p.residual, p.x0) <= TOL


@pytest.mark.parametrize("name", ["rosenbrock", "powell_badly_scaled", "helical_valley", "brown_almost_linear_10",
                                  "discrete_boundary_value_10", "broyden_tridiagonal_10"])
def test_solves_mgh_systems(name):
    """Including two that scipy's krylov does not solve (powell_badly_scaled: 2e-3,
    brown_almost_linear_10: 6 after 1100 iterations)."""
    p = MGH[name]
    result = tn.root(p.residual, p.x0.clone(), method="newton-krylov", tol=TOL, max_iter=300)
    assert result.success and float(p.residual(result.x).abs().max()) <= TOL, result.message


def test_bratu_in_as_many_newton_steps_as_scipy():
    bratu = Bratu2D(16, 6.0)
    fun = lambda u: bratu.residual(u.unsqueeze(0))[0]
    x0 = torch.zeros(256, dtype=torch.float64)
    result = tn.root(fun, x0, method="newton-krylov", tol=TOL, options={"jvp": "finite-difference"})
    numpy_fun = lambda x: fun(torch.from_numpy(x)).numpy()
    reference = scipy.optimize.root(numpy_fun, x0.numpy(), method="krylov", options={"fatol": TOL})
    assert result.success and float(fun(result.x).abs().max()) <= TOL
    assert np.abs(numpy_fun(reference.x)).max() <= TOL
    assert result.nit <= reference.nit + 1


def test_no_root_reports_the_best_point_and_no_success():
    fun = lambda x: x**2 + 1  # min ‖F‖ = 1 at x = 0, no root
    x0 = torch.tensor([1.0], dtype=torch.float64)
    result = tn.root(fun, x0, method="newton-krylov", max_iter=100, record_history=True)
    assert not result.success
    assert result.status in (Status.STALLED, Status.LINESEARCH_FAILED, Status.MAX_ITER)
    costs = [h["cost"] for h in result.history]
    # non-monotone steps explore, but what is reported never gets worse than the best so far
    assert all(b <= a for a, b in zip(costs, costs[1:]))
    assert torch.allclose(result.fun, fun(result.x))
    assert float(result.fun.abs().max()) < 1.01


def test_eisenstat_walker_choice_two():
    previous = torch.tensor([0.5, 0.2, 0.9, 0.5], dtype=torch.float64)
    norm = torch.tensor([0.1, 0.5, 2.0, 1e-9], dtype=torch.float64)
    previous_norm = torch.ones(4, dtype=torch.float64)
    eta = eisenstat_walker(previous, norm, previous_norm, target=1e-8)
    # 0.9·0.1² = 0.009 < safeguard 0.9·0.5² = 0.225 (> 0.1): the safeguard holds
    assert eta[0].item() == pytest.approx(0.225)
    # safeguard 0.9·0.2² = 0.036 ≤ 0.1 is ignored: 0.9·0.5² = 0.225
    assert eta[1].item() == pytest.approx(0.225)
    # capped at η_max = 0.9
    assert eta[2].item() == pytest.approx(0.9)
    # Kelley's floor ½τ/‖F‖ = 5 → capped 0.9; without a target the floor is √eps
    assert eta[3].item() == pytest.approx(0.9)
    bare = eisenstat_walker(torch.tensor([0.01]), torch.tensor([1e-6]), torch.tensor([1.0]))
    assert bare.item() == pytest.approx(torch.finfo(torch.float32).eps ** 0.5)


def test_bad_options_raise():
    fun = lambda x: x**3 - 8
    x0 = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="jvp"):
        tn.root(fun, x0, method="newton-krylov", options={"jvp": "exact"})
    with pytest.raises(ValueError, match="max_forcing"):
        tn.root(fun, x0, method="newton-krylov", options={"max_forcing": 1.5})
    with pytest.raises(ValueError, match="max_escapes"):
        tn.root(fun, x0, method="newton-krylov", options={"max_escapes": -1})
