import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.solvers.objective.minimize import METHODS, minimize

from .problems import rosenbrock, styblinski_tang

F64 = torch.float64


@pytest.mark.parametrize("method", METHODS)
def test_rosenbrock_every_method(method):
    res = minimize(rosenbrock, torch.tensor([-1.2, 1.0], dtype=F64), method=method, max_iter=500)
    assert res.success and res.status is Status.SUCCESS
    assert torch.allclose(res.x, torch.ones(2, dtype=F64), atol=1e-8)
    assert res.grad.abs().max() <= 4e-11
    assert res.nfev > 0 and res.njev > 0


@pytest.mark.parametrize("method", METHODS)
def test_batched_members_match_single_solves(method):
    x0 = torch.tensor([[-1.2, 1.0], [2.0, 2.0], [0.5, -0.5]], dtype=F64)
    res = minimize(rosenbrock, x0, method=method, batch=True, max_iter=500)
    assert res.success.all() and res.x.shape == (3, 2)
    for i in range(3):
        single = minimize(rosenbrock, x0[i], method=method, max_iter=500)
        assert int(res.nit[i]) == single.nit or method in ("newton-cg", "trust-ncg")
        assert torch.allclose(res.x[i], single.x, atol=1e-8)


@pytest.mark.parametrize("method", ["trust-exact", "newton", "cubic", "bfgs"])
def test_float32(method):
    res = minimize(rosenbrock, torch.tensor([-1.2, 1.0]), method=method, max_iter=500)
    assert res.x.dtype == torch.float32
    assert res.success
    assert torch.allclose(res.x, torch.ones(2), atol=1e-2)


def test_converged_members_stop_changing():
    x0 = torch.tensor([[1.0, 1.0], [-1.2, 1.0]], dtype=F64)
    res = minimize(rosenbrock, x0, method="newton", batch=True, record_history=True)
    assert res.nit.tolist()[0] == 0 and res.nit[1] > 10
    assert torch.equal(res.x[0], x0[0])
    assert all(float(h["fun"][0]) == 0.0 for h in res.history)


def test_user_derivatives_are_used_and_counted():
    A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=F64)
    b = torch.tensor([1.0, -1.0], dtype=F64)
    calls = {"hess": 0}

    def hess(x):
        calls["hess"] += 1
        return A

    res = minimize(lambda x: 0.5 * x @ A @ x - b @ x, torch.zeros(2, dtype=F64), method="newton",
                   jac=lambda x: A @ x - b, hess=hess)
    assert res.success and res.nit == 1
    assert torch.allclose(res.x, torch.linalg.solve(A, b))
    assert res.nhev == calls["hess"] == 1


def test_hessp_only_methods():
    A = torch.diag(torch.arange(1.0, 6.0, dtype=F64))
    products = {"n": 0}

    def hessp(x, v):
        products["n"] += 1
        return A @ v

    fun = lambda x: 0.5 * x @ A @ x + x.sum()
    for method in ("newton-cg", "trust-ncg", "trust-exact"):
        products["n"] = 0
        res = minimize(fun, torch.ones(5, dtype=F64), method=method, hessp=hessp)
        assert res.success and res.nhev == products["n"] > 0
        assert torch.allclose(res.x, -1 / A.diagonal())


def test_gauss_newton_and_hutchinson_curvature():
    t = torch.linspace(0, 1, 30, dtype=F64)
    y = 2 * torch.exp(-1.5 * t)
    residuals = lambda p: p[0] * torch.exp(p[1] * t) - y
    fun = lambda p: 0.5 * (residuals(p) ** 2).sum()
    for method in ("newton", "trust-exact", "trust-ncg", "cubic"):
        res = minimize(fun, torch.tensor([1.0, -1.0], dtype=F64), method=method,
                       options={"hessian": "gauss-newton", "residuals": residuals})
        assert res.success, method
        assert torch.allclose(res.x, torch.tensor([2.0, -1.5], dtype=F64), atol=1e-8)
    # a separable objective has a diagonal Hessian, which Hutchinson probes recover exactly
    sep = lambda x: (torch.cosh(x - 1) + 0.5 * x**2).sum()
    res = minimize(sep, torch.zeros(6, dtype=F64), method="newton", options={"hessian": "hutchinson"})
    assert res.success and res.nit < 10


def test_multistart_batch_finds_global_minimum():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(256, 3, generator=gen, dtype=F64) * 10 - 5
    res = minimize(styblinski_tang, x0, method="trust-exact", batch=True)
    assert res.success.all()
    best = res.x[res.fun.argmin()]
    assert torch.allclose(best, torch.full((3,), -2.903534, dtype=F64), atol=1e-5)
    assert torch.isclose(res.fun.min(), torch.tensor(-39.16617 * 3, dtype=F64), atol=1e-3)


def test_callback_stops_and_sees_state():
    seen = []
    res = minimize(rosenbrock, torch.tensor([-1.2, 1.0], dtype=F64), method="bfgs",
                   callback=lambda s: seen.append(float(s.f[0])) or len(seen) >= 3)
    assert res.status is Status.CALLBACK_STOP and not res.success and len(seen) == 3


def test_max_iter_status():
    res = minimize(rosenbrock, torch.tensor([-1.2, 1.0], dtype=F64), method="l-bfgs", max_iter=3)
    assert res.status is Status.MAX_ITER and not res.success and res.nit == 3
