"""Compiled user-supplied callables (options={"compile": True} with jac=/hess=/hessp=): the user's
f, F and derivatives traced as they are, against the same callables called eagerly.

Each kind and shape is a compilation of about a second: every test shares one objective (with a
tensor argument) and one residual function, so the derivative checks and the solves reuse the
same cache entries.
"""
import shutil
import warnings

import pytest
import torch

from torchnewton.derivatives.compiled import CompileFallbackWarning
from torchnewton.solvers.objective.minimize import _compiled as compiled_objective
from torchnewton.solvers.objective.minimize import minimize
from torchnewton.solvers.residual.least_squares import least_squares
from torchnewton.solvers.residual.problem import compiled_residuals
from torchnewton.solvers.residual.root import root

DT = torch.float64

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="no C++ compiler for Inductor's CPU kernels")


def rosen(x, a):
    """(..., 2) -> (...): (a₀ − x₀)² + a₁(x₁ − x₀²)², minimum at (a₀, a₀²); one row or a batch."""
    return (a[0] - x[..., 0]) ** 2 + a[1] * (x[..., 1] - x[..., 0] ** 2) ** 2


def rosen_jac(x, a):
    x0, x1 = x[..., 0], x[..., 1]
    return torch.stack([-2 * (a[0] - x0) - 4 * a[1] * x0 * (x1 - x0 ** 2), 2 * a[1] * (x1 - x0 ** 2)], -1)


def rosen_hess(x, a):
    x0, x1 = x[..., 0], x[..., 1]
    return torch.stack([torch.stack([2 - 4 * a[1] * (x1 - 3 * x0 ** 2), -4 * a[1] * x0], -1),
                        torch.stack([-4 * a[1] * x0, 2 * a[1] + 0 * x0], -1)], -2)


def rosen_hessp(x, v, a):
    return (rosen_hess(x, a) @ v.unsqueeze(-1)).squeeze(-1)


def expfit(p, t, y):
    """(2,) -> (m,): p₀ exp(p₁ t) − y."""
    return p[0] * torch.exp(p[1] * t) - y


def expfit_jac(p, t, y):
    e = torch.exp(p[1] * t)
    return torch.stack([e, p[0] * t * e], -1)


A = torch.tensor([1.0, 100.0], dtype=DT)
X0 = torch.tensor([-1.2, 1.0], dtype=DT)
T = torch.linspace(0, 1, 8, dtype=DT)


def _same_solve(plain, fast):
    assert fast.compiled is True and plain.success and fast.success
    assert int(plain.nit) == int(fast.nit)
    assert (plain.nfev, plain.njev, plain.nhev) == (fast.nfev, fast.njev, fast.nhev)
    torch.testing.assert_close(fast.x, plain.x, rtol=1e-12, atol=1e-12)


def test_compiled_user_derivatives_equal_eager_and_new_args_reuse_the_graphs():
    x = torch.tensor([[0.3, -0.7]], dtype=DT)
    v = torch.tensor([[1.5, -2.0]], dtype=DT)
    for a in (A, torch.tensor([2.0, 10.0], dtype=DT)):  # a tensor in args is an input of the graph
        functions = compiled_objective(rosen, (a,), False, rosen_jac, rosen_hess, rosen_hessp)
        with torch.no_grad():
            outputs = {"value": functions("value", x), "jac": functions("jac", x), "hess": functions("hess", x),
                       "hessp": functions("hessp", x, v), "value_and_jac": functions("value_and_jac", x)}
        expected = {"value": rosen(x[0], a).reshape(1), "jac": rosen_jac(x[0], a)[None],
                    "hess": rosen_hess(x[0], a)[None], "hessp": rosen_hessp(x[0], v[0], a)[None]}
        expected["value_and_jac"] = (expected["value"], expected["jac"])
        for kind, out in outputs.items():
            torch.testing.assert_close(out, expected[kind], rtol=1e-14, atol=1e-12, msg=kind)
        assert functions.captured
    assert functions.compile_seconds == 0  # the second a: same shapes, every graph from the cache

    t = torch.linspace(0, 1, 5, dtype=DT)
    args = (t, 2 * torch.exp(-3 * t))
    residuals = compiled_residuals(expfit, args, False, "auto", expfit_jac)
    with torch.no_grad():
        F, J = residuals("value", x), residuals("jac", x)
        with pytest.raises(ValueError, match="needs the user's hess"):
            residuals("hess", x)
    torch.testing.assert_close(F, expfit(x[0], *args)[None], rtol=1e-14, atol=1e-13)
    torch.testing.assert_close(J, expfit_jac(x[0], *args)[None], rtol=1e-14, atol=1e-13)


@pytest.mark.parametrize("method, derivatives", [
    ("bfgs", {"jac": rosen_jac}),
    ("trust-exact", {"jac": rosen_jac, "hess": rosen_hess}),
    ("newton", {"jac": rosen_jac, "hess": rosen_hess}),
    ("newton-cg", {"jac": rosen_jac, "hessp": rosen_hessp}),
    ("newton-cg", {"jac": rosen_jac, "hess": rosen_hess}),
])
def test_minimize_with_user_derivatives_same_iterates(method, derivatives):
    plain = minimize(rosen, X0, method=method, args=(A,), **derivatives)
    fast = minimize(rosen, X0, method=method, args=(A,), **derivatives, options={"compile": True})
    _same_solve(plain, fast)
    torch.testing.assert_close(fast.x, torch.ones(2, dtype=DT), rtol=0, atol=1e-6)


def test_batched_minimize_with_user_derivatives_same_iterates():
    x0 = torch.stack([X0, torch.tensor([0.5, -0.5], dtype=DT)])
    kwargs = dict(method="newton", args=(A,), jac=rosen_jac, hess=rosen_hess, batch=True)
    plain = minimize(rosen, x0, **kwargs)
    fast = minimize(rosen, x0, **kwargs, options={"compile": True})
    assert fast.compiled is True and bool(fast.success.all())
    assert torch.equal(plain.nit, fast.nit)
    assert (plain.nfev, plain.njev, plain.nhev) == (fast.nfev, fast.njev, fast.nhev)
    torch.testing.assert_close(fast.x, plain.x, rtol=1e-12, atol=1e-12)


def test_least_squares_and_root_with_user_jacobian_same_iterates():
    x0 = torch.tensor([1.0, -1.0], dtype=DT)
    for method in ("levenberg-marquardt", "dogleg"):
        for y in (2 * torch.exp(-3 * T), 0.5 * torch.exp(T)):  # new data, same graphs
            plain = least_squares(expfit, x0, args=(T, y), jac=expfit_jac, method=method)
            fast = least_squares(expfit, x0, args=(T, y), jac=expfit_jac, method=method, options={"compile": True})
            _same_solve(plain, fast)
    assert fast.compile_seconds == 0
    # a square system of the same function: p₀ exp(p₁ t) = y at t = 0, 1 has the root (2, −3)
    t2 = torch.tensor([0.0, 1.0], dtype=DT)
    args = (t2, 2 * torch.exp(-3 * t2))
    plain = root(expfit, x0, args=args, jac=expfit_jac, method="newton")
    fast = root(expfit, x0, args=args, jac=expfit_jac, method="newton", options={"compile": True})
    _same_solve(plain, fast)
    torch.testing.assert_close(fast.x, torch.tensor([2.0, -3.0], dtype=DT), rtol=0, atol=1e-10)


def test_untraceable_user_jacobian_falls_back_with_warning():
    def branchy_jac(x, a):  # a Python branch on a tensor value: no single graph
        return rosen_jac(x, a) if float(x[0]) > -10 else torch.zeros_like(x)

    with pytest.warns(CompileFallbackWarning, match="branchy_jac") as record:
        fast = minimize(rosen, X0, method="bfgs", args=(A,), jac=branchy_jac, options={"compile": True})
    assert sum(issubclass(w.category, CompileFallbackWarning) for w in record) == 1
    plain = minimize(rosen, X0, method="bfgs", args=(A,), jac=branchy_jac)
    assert fast.compiled is False and fast.success and int(fast.nit) == int(plain.nit)
    torch.testing.assert_close(fast.x, plain.x, rtol=1e-12, atol=1e-12)


def test_wrong_user_jacobian_shape_is_an_error_not_a_fallback():
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        with pytest.raises(ValueError, match=r"jac returned shape \(1, 3\), expected \(1, 2\)"):
            minimize(rosen, X0, method="bfgs", args=(A,), jac=lambda x, a: torch.cat([x, x[:1]]),
                     options={"compile": True})
