"""root(method="dogleg"): Powell's hybrid method with MINPACK hybrj's rules, against scipy's hybr
(the same algorithm: both must evaluate the Jacobian equally often, and the function within a few
evaluations of each other; torchnewton stops on ‖F‖∞ ≤ tol, MINPACK on its xtol test)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

import torchnewton as tn
from torchnewton.bench.problems.mgh import MGH_PROBLEMS
from torchnewton.core.status import Status
from torchnewton.solvers.loop import iterate
from torchnewton.solvers.residual.hybrid import PowellHybrid
from torchnewton.solvers.residual.problem import ResidualProblem
from torchnewton.solvers.residual.termination import RootTermination

MGH = {p.name: p for p in MGH_PROBLEMS}


def hybr(fun, x0: torch.Tensor, **options):
    numpy_fun = lambda x: fun(torch.from_numpy(x)).numpy()
    numpy_jac = lambda x: torch.func.jacrev(fun)(torch.from_numpy(x)).numpy()
    return scipy.optimize.root(numpy_fun, x0.numpy(), jac=numpy_jac, method="hybr", options=options)


# (problem, start scale): the paper's start and 10x it
@pytest.mark.parametrize("name, scale", [("rosenbrock", 1), ("powell_badly_scaled", 1), ("helical_valley", 1),
                                         ("helical_valley", 10), ("brown_almost_linear_10", 1),
                                         ("broyden_banded_10", 1), ("chebyquad_9", 1)])
def test_same_evaluations_as_scipy_hybr(name, scale):
    p = MGH[name]
    x0 = scale * p.x0
    result = tn.root(p.residual, x0.clone(), method="dogleg", tol=1e-10, max_iter=1000)
    reference = hybr(p.residual, x0)
    assert result.success and float(p.residual(result.x).abs().max()) <= 1e-10
    assert np.allclose(result.x.numpy(), reference.x, rtol=1e-6, atol=1e-9)
    assert result.njev == reference.njev
    # nfev here counts the shape check at x0 once more; MINPACK may go on for its xtol test
    assert reference.nfev - 6 <= result.nfev - 1 <= reference.nfev + 1, (result.nfev, reference.nfev)


def test_fixed_scaling_and_factor_as_scipy():
    """MINPACK's mode 2 (user diag) and a small initial step bound give the same path as hybr."""
    p = MGH["powell_badly_scaled"]
    diag = torch.tensor([1e4, 1.0], dtype=torch.float64)
    result = tn.root(p.residual, p.x0.clone(), method="dogleg", tol=1e-10, max_iter=1000,
                     options={"diag": diag, "factor": 0.5})
    reference = hybr(p.residual, p.x0, diag=diag.numpy(), factor=0.5)
    assert result.success and reference.success
    assert result.njev == reference.njev
    assert abs((result.nfev - 1) - reference.nfev) <= 5


def test_hatfldf_no_longer_hits_the_iteration_limit():
    """HATFLDF (S2MPJ): the previous dogleg stopped at max_iter = 100 with ‖F‖∞ = 6.4e-3."""
    s2mpj = pytest.importorskip("torchnewton.bench.problems.s2mpj")
    p = s2mpj.load_problem("HATFLDF", "equations")
    result = tn.root(p.residual, p.x0.clone(), jac=p.residual_jacobian, method="dogleg", tol=1e-8)
    reference = scipy.optimize.root(p.residual_np, p.x0.numpy(), jac=p.residual_jacobian_np, method="hybr")
    assert result.success and np.abs(p.residual_np(result.x.numpy())).max() <= 1e-8
    assert result.njev == reference.njev == 3
    assert result.nfev - 1 <= reference.nfev


def _member(value):
    """Member 0 of a per-member field: a (B,) tensor, or the Python number one problem keeps."""
    return value[0] if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.float64)


def _trajectory(fun, x0, **kwargs):
    states = []
    problem = ResidualProblem(lambda x: torch.stack([fun(row) for row in x]))
    method = PowellHybrid(RootTermination(1e-12), **kwargs)
    iterate(method, problem, x0.unsqueeze(0), max_iter=200, callback=states.append)
    return problem, method.init(ResidualProblem(problem.fun), x0.unsqueeze(0)), states


def test_first_step_bound_and_scaling_from_the_jacobian():
    p = MGH["rosenbrock"]
    _, start, states = _trajectory(p.residual, p.x0.clone(), factor=0.01)
    J0 = torch.func.jacrev(p.residual)(p.x0)
    assert torch.allclose(start.diag[0], J0.norm(dim=0))
    bound = 0.01 * (start.diag[0] * p.x0).norm()
    assert torch.allclose(_member(start.radius), bound)
    # the first trial steps to the boundary ‖D p‖ = factor·‖D x₀‖ (the Newton step is longer)
    assert torch.allclose(states[0].step_norm[0], bound)


def test_broyden_updates_satisfy_the_scaled_secant_equation_and_recomputation_rule():
    p = MGH["powell_badly_scaled"]
    problem, start, states = _trajectory(p.residual, p.x0.clone())
    previous, updates, recomputations = start, 0, 0
    for state in states:
        recomputations += bool(_member(previous.recompute))
        s = state.x[0] - previous.x[0]
        if bool((s != 0).any()) and not bool(_member(state.recompute)):
            # J₊ s = F(x₊) − F(x): Broyden's update in the scaled norm, after an accepted step
            assert torch.allclose(state.J[0] @ s, state.F[0] - previous.F[0], rtol=1e-8, atol=1e-10)
            updates += 1
        # two failures in a row, and only then: J is evaluated afresh before the next trial
        assert bool(_member(state.recompute)) == (int(_member(state.failures)) == 2)
        previous = state
    assert updates > 10 and recomputations >= 1
    assert problem.counters.njev == 1 + recomputations


def test_radius_rules_on_a_linear_system():
    """The model of a linear F is exact (ρ = 1): the first step solves it, Δ ← 2‖D p‖."""
    A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -1.0], dtype=torch.float64)
    fun = lambda x: A @ x - b
    _, start, states = _trajectory(fun, torch.tensor([10.0, 10.0], dtype=torch.float64))
    assert len(states) == 1
    assert torch.allclose(states[0].x[0], torch.linalg.solve(A, b))
    p_norm = (start.diag[0] * (states[0].x[0] - start.x[0])).norm()
    assert torch.allclose(_member(states[0].radius), 2 * p_norm)
    assert int(_member(states[0].successes)) == 1 and int(_member(states[0].failures)) == 0


def test_batched_members_follow_their_own_rules():
    """Each member of a batch takes exactly the path it takes alone."""
    fun = MGH["helical_valley"].residual
    starts = torch.stack([MGH["helical_valley"].x0, 10 * MGH["helical_valley"].x0,
                          torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)])
    batched = tn.root(lambda x: torch.stack([fun(row) for row in x]), starts, method="dogleg", batch=True,
                      tol=1e-10, max_iter=500)
    for i, x0 in enumerate(starts):
        alone = tn.root(fun, x0.clone(), method="dogleg", tol=1e-10, max_iter=500)
        assert bool(batched.success[i]) and alone.success
        assert int(batched.nit[i]) == alone.nit
        assert torch.allclose(batched.x[i], alone.x, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fun, x0", [(lambda x: x**2 + 1, [1.0]),
                                     (lambda x: torch.stack([x[0] + x[1], x[0] + x[1] - 1]), [0.0, 0.0])])
def test_no_root_is_never_success(fun, x0):
    result = tn.root(fun, torch.tensor(x0, dtype=torch.float64), method="dogleg", max_iter=200)
    assert not result.success
    assert result.status in (Status.STALLED, Status.SINGULAR)
    assert result.nit < 200  # MINPACK's progress tests stop it, not the iteration limit


def test_bad_options_raise():
    fun = lambda x: x**3 - 8
    x0 = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="factor"):
        tn.root(fun, x0, method="dogleg", options={"factor": 0.0})
    with pytest.raises(ValueError, match="diag"):
        tn.root(fun, x0, method="dogleg", options={"diag": torch.ones(3, dtype=torch.float64)})
    with pytest.raises(ValueError, match="diag"):
        tn.root(fun, x0, method="dogleg", options={"diag": torch.tensor([1.0, -1.0])})
    with pytest.raises(TypeError, match="diag"):
        tn.root(fun, x0, method="dogleg", options={"diag": [1.0, 1.0]})


def test_least_squares_dogleg_still_solves_an_overdetermined_fit():
    t = torch.linspace(0, 1, 20, dtype=torch.float64)
    y = 2 * torch.exp(-3 * t)
    result = tn.least_squares(lambda p: p[0] * torch.exp(p[1] * t) - y, torch.tensor([1.0, -1.0], dtype=torch.float64),
                              method="dogleg")
    assert result.success
    assert torch.allclose(result.x, torch.tensor([2.0, -3.0], dtype=torch.float64), atol=1e-6)
