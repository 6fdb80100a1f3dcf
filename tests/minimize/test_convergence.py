"""Local rates: quadratic for exact-Hessian Newton methods, and the damped Newton schedules."""
import pytest
import torch

from torchnewton.solvers.objective.minimize import minimize

from .problems import rosenbrock

F64 = torch.float64


@pytest.mark.parametrize("method,options", [("newton", {}), ("trust-exact", {}), ("cubic", {}),
                                            ("damped-newton", {"schedule": "aicn"}), ("saddle-free-newton", {})])
def test_quadratic_convergence_near_solution(method, options):
    x0 = torch.tensor([1.02, 1.05], dtype=F64)
    errors = [float((x0 - 1).norm())]
    res = minimize(rosenbrock, x0, method=method, tol=1e-15, options=options,
                   callback=lambda s: errors.append(float((s.x[0] - 1).norm())))
    assert res.success
    # e_{k+1} ≤ C e_k² with a modest C: the error exponent doubles each step
    pairs = [(a, b) for a, b in zip(errors, errors[1:]) if a < 1e-2 and b > 1e-15]
    assert pairs, errors
    assert all(b <= 500 * a * a for a, b in pairs), errors
    first_small = next(k for k, e in enumerate(errors) if e < 1e-2)
    assert next(k for k, e in enumerate(errors) if e < 1e-12) - first_small <= 4, errors


def test_superlinear_bfgs():
    res = minimize(rosenbrock, torch.tensor([1.02, 1.05], dtype=F64), method="bfgs", tol=1e-13,
                   record_history=True)
    norms = [h["grad_norm"] for h in res.history]
    tail = [b / a for a, b in zip(norms, norms[1:]) if a < 1e-4 and b > 0]
    assert res.success and tail and min(tail) < 0.05


@pytest.mark.parametrize("schedule,options", [("aicn", {"smoothness": 1.0}),
                                               ("root", {"smoothness": 1.0, "order": 4.0}),
                                               ("root", {"smoothness": 1.0, "order": 3.0}),
                                               ("backtracking", {})])
def test_damped_newton_schedules_on_logistic_regression(schedule, options):
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(200, 5, generator=gen, dtype=F64)
    y = (A @ torch.randn(5, generator=gen, dtype=F64) + 0.5 * torch.randn(200, generator=gen, dtype=F64) > 0).to(F64)
    fun = lambda w: torch.nn.functional.softplus(A @ w).sum() - y @ (A @ w) + 0.5 * w @ w
    ref = minimize(fun, torch.zeros(5, dtype=F64), method="newton")
    res = minimize(fun, torch.zeros(5, dtype=F64), method="damped-newton", options={"schedule": schedule, **options},
                   record_history=True)
    assert res.success
    assert torch.allclose(res.x, ref.x, atol=1e-9)
    values = [h["fun"] for h in res.history]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))  # monotone on a convex problem
    steps = [h["stepsize"] for h in res.history[1:]]
    assert 0 < steps[0] <= 1 and steps[-1] > 0.99  # damped far away, full Newton steps near x*


def test_lazy_cubic_uses_fewer_hessians():
    gen = torch.Generator().manual_seed(2)
    A = torch.randn(300, 20, generator=gen, dtype=F64)
    y = (torch.rand(300, generator=gen, dtype=F64) > 0.5).to(F64)
    fun = lambda w: torch.nn.functional.softplus(A @ w).sum() - y @ (A @ w) + 0.05 * w @ w
    every = minimize(fun, torch.zeros(20, dtype=F64), method="cubic")
    lazy = minimize(fun, torch.zeros(20, dtype=F64), method="cubic", options={"lazy": 20})
    assert every.success and lazy.success
    assert torch.allclose(every.x, lazy.x, atol=1e-8)
    assert lazy.nhev < every.nhev and lazy.nhev <= 3
