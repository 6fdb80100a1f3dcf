"""Compiled derivatives (options={"compile": True}) against the eager autodiff path.

Compilation costs about a second per function, kind and shape: the cases are few and tiny, and
the derivative checks use the very forms (and so the cache entries) the solves use.
"""
import shutil

import pytest
import torch

from torchnewton.derivatives import autodiff
from torchnewton.derivatives.compiled import CompiledFunctions, CompileFallbackWarning
from torchnewton.solvers.objective.minimize import minimize
from torchnewton.solvers.objective.problem import batch_objective
from torchnewton.solvers.residual.least_squares import least_squares
from torchnewton.solvers.residual.problem import batch_function, compiled_residuals
from torchnewton.solvers.residual.root import root

DT = torch.float64

# Inductor writes C++ for the CPU: without a compiler every compile falls back (warned), by design
pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="no C++ compiler for Inductor's CPU kernels")


def rosenbrock(x):
    return (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2


def weighted_quartic(x, w):
    """(n,) -> (): Σ wᵢ xᵢ⁴ + x₀x₁x₂ + Σ sin xᵢ, with a tensor argument."""
    return (w * x ** 4).sum() + x[0] * x[1] * x[2] + torch.sin(x).sum()


def exponential_fit(p, t, y):
    """(2,) -> (m,): residuals of y ≈ p₀ exp(p₁ t), tall for m ≥ 4."""
    return p[0] * torch.exp(p[1] * t) - y


def powell_badly_scaled(x):
    """(2,) -> (2,), root (1.098e-5, 9.106)."""
    return torch.stack([1e4 * x[0] * x[1] - 1, torch.exp(-x[0]) + torch.exp(-x[1]) - 1.0001])


def _objective(fun, args, batch):
    return CompiledFunctions(fun, args, lambda f, a: batch_objective(f, a, batch), tag=("objective", batch))


@pytest.mark.parametrize("fun, args, x, batch", [
    (rosenbrock, (), torch.tensor([[-1.2, 1.0], [0.3, -0.7]], dtype=DT), True),
    (weighted_quartic, (torch.tensor([1.0, 2.0, 0.5], dtype=DT),), torch.tensor([[0.3, -1.1, 0.7]], dtype=DT), False),
])
def test_objective_derivatives_equal_eager(fun, args, x, batch):
    compiled = _objective(fun, args, batch)
    eager = batch_objective(fun, args, batch)
    v = torch.linspace(-1, 1, x.numel(), dtype=DT).reshape(x.shape)
    with torch.no_grad():
        value, grad = compiled("value_and_grad", x)
        hess = compiled("hessian", x)
        ref_value, ref_grad, ref_hess = autodiff.hessian(eager, x)
        if batch:  # products: one case is enough (each kind and shape is a compilation)
            torch.testing.assert_close(compiled("hvp", x, v), autodiff.hvp(eager, x, v)[1], rtol=1e-14, atol=1e-12)
    torch.testing.assert_close(value, ref_value, rtol=1e-14, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-14, atol=1e-12)
    torch.testing.assert_close(hess, ref_hess, rtol=1e-14, atol=1e-12)
    assert hess.shape == (x.shape[0], x.shape[1], x.shape[1]) and compiled.captured
    with pytest.raises(ValueError, match="kind"), torch.no_grad():
        compiled("gradient", x)
    # a second object for the same function and shapes compiles nothing: the cache is process-wide
    again = _objective(fun, args, batch)
    with torch.no_grad():
        torch.testing.assert_close(again("hessian", x), hess, rtol=0, atol=0)
    assert again.compile_seconds == 0


@pytest.mark.parametrize("jac_mode", ["auto", "reverse"])  # auto: forward mode for this 6 × 2 Jacobian
def test_residual_jacobians_equal_eager(jac_mode):
    t = torch.linspace(0, 1, 6, dtype=DT)
    args = (t, 2 * torch.exp(-3 * t))
    x = torch.tensor([[1.0, -1.0], [0.5, 0.2]], dtype=DT)
    batched = lambda p, t, y: p[:, :1] * torch.exp(p[:, 1:] * t) - y
    compiled = compiled_residuals(batched, args, True, jac_mode)
    eager = batch_function(batched, args, True)
    v = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=DT)
    with torch.no_grad():
        F, J = compiled("linearize", x)
        ref_F, ref_J = autodiff.jacobian(eager, x, mode="reverse")
        torch.testing.assert_close(F, ref_F, rtol=1e-14, atol=1e-13)
        torch.testing.assert_close(J, ref_J, rtol=1e-14, atol=1e-13)
        if jac_mode == "auto":
            torch.testing.assert_close(compiled("jvp", x, v), autodiff.jvp(eager, x, v)[1], rtol=1e-14, atol=1e-13)
    assert J.shape == (2, 6, 2)


def _same_solve(plain, compiled):
    assert compiled.compiled is True
    assert torch.equal(torch.as_tensor(plain.nit), torch.as_tensor(compiled.nit))
    assert (plain.nfev, plain.njev, plain.nhev) == (compiled.nfev, compiled.njev, compiled.nhev)
    # fused arithmetic rounds differently: x agrees to round-off relative to its size (Powell's
    # badly scaled root has x₂ ≈ 9.1)
    torch.testing.assert_close(compiled.x, plain.x, rtol=1e-12, atol=1e-12)
    assert torch.all(torch.as_tensor(compiled.success))


@pytest.mark.parametrize("method", ["trust-exact", "bfgs"])
def test_minimize_compiled_same_iterates(method):
    x0 = torch.tensor([-1.2, 1.0], dtype=DT)
    plain = minimize(rosenbrock, x0, method=method)
    fast = minimize(rosenbrock, x0, method=method, options={"compile": True})
    _same_solve(plain, fast)
    again = minimize(rosenbrock, x0, method=method, options={"compile": True})
    assert again.compile_seconds == 0 and torch.equal(again.x, fast.x)


def test_minimize_batched_compiled_same_iterates():
    x0 = torch.tensor([[-1.2, 1.0], [0.3, -0.7]], dtype=DT)  # the shape the derivative test compiled
    plain = minimize(rosenbrock, x0, method="newton", batch=True)
    fast = minimize(rosenbrock, x0, method="newton", batch=True, options={"compile": True})
    _same_solve(plain, fast)  # (its compilation is shared with the derivative test: same form, same shape)
    again = minimize(rosenbrock, x0, method="newton", batch=True, options={"compile": True})
    assert again.compile_seconds == 0 and torch.equal(again.x, fast.x)


def test_least_squares_and_root_compiled_same_iterates():
    t = torch.linspace(0, 1, 8, dtype=DT)
    x0 = torch.tensor([1.0, -1.0], dtype=DT)
    for y in (2 * torch.exp(-3 * t), 0.5 * torch.exp(t)):  # new data of the same shape reuses the compiled graph
        plain = least_squares(exponential_fit, x0, args=(t, y))
        fast = least_squares(exponential_fit, x0, args=(t, y), options={"compile": True})
        _same_solve(plain, fast)
    assert fast.compile_seconds == 0
    x0 = torch.tensor([0.0, 1.0], dtype=DT)
    for method in ("newton", "dogleg"):
        _same_solve(root(powell_badly_scaled, x0, method=method),
                    root(powell_badly_scaled, x0, method=method, options={"compile": True}))


def test_uncapturable_function_falls_back_with_warning():
    def branchy(x):  # Python control flow on a tensor value: no single graph
        return (x ** 4).sum() if float(x[0]) > 0 else ((x - 1) ** 2).sum()

    x0 = torch.tensor([0.5, -0.3], dtype=DT)
    with pytest.warns(CompileFallbackWarning, match="branchy.*value_and_grad") as record:
        fast = minimize(branchy, x0, method="trust-exact", options={"compile": True})
    # one warning: after the first failure the solve is eager throughout (the Hessian not tried)
    assert sum(issubclass(w.category, CompileFallbackWarning) for w in record) == 1
    plain = minimize(branchy, x0, method="trust-exact")
    assert fast.compiled is False and fast.nit == plain.nit and fast.success
    torch.testing.assert_close(fast.x, plain.x, rtol=0, atol=1e-12)


def test_user_error_is_raised_not_swallowed():
    with pytest.raises(ValueError, match="scalar"):
        minimize(lambda x: x ** 2, torch.ones(2, dtype=DT), method="bfgs", options={"compile": True})


@pytest.mark.parametrize("entry", [
    lambda opts: minimize(rosenbrock, torch.zeros(2, dtype=DT), options=opts),
    lambda opts: least_squares(powell_badly_scaled, torch.zeros(2, dtype=DT), options=opts),
    lambda opts: root(powell_badly_scaled, torch.zeros(2, dtype=DT), method="auto", options=opts),
])
def test_bad_compile_option(entry):
    with pytest.raises(ValueError, match=r"options\['compile'\]"):
        entry({"compile": "yes"})
    with pytest.raises(ValueError, match=r"options\['compile'\]"):
        entry({"compile": 1})
