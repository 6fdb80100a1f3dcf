import pytest
import torch

import torchnewton as tn
from torchnewton.core.status import Status
from torchnewton.solvers.residual.root import METHODS


def powell(x):
    """Powell's 2-D system, root (1.098e-5, 9.106) — badly scaled."""
    return torch.stack([1e4 * x[0] * x[1] - 1, torch.exp(-x[0]) + torch.exp(-x[1]) - 1.0001])


def trig_system(x, a):
    return torch.stack([torch.sin(x[0]) + x[1] ** 2 - a[0], x[0] * x[1] + torch.cos(x[1]) - a[1]])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_solves_cubic_and_a_coupled_system(method):
    target = torch.tensor([8.0, 27.0], dtype=torch.float64)
    result = tn.root(lambda x: x**3 - target, torch.ones(2, dtype=torch.float64), method=method.upper())
    assert result.success and result.status == Status.SUCCESS
    assert torch.allclose(result.x, torch.tensor([2.0, 3.0], dtype=torch.float64), atol=1e-9)
    assert result.fun.abs().max() <= 4e-11
    a = torch.tensor([1.2, 0.9], dtype=torch.float64)
    result = tn.root(trig_system, torch.tensor([0.5, 0.5], dtype=torch.float64), method=method, args=(a,), max_iter=200)
    assert result.success, result
    assert trig_system(result.x, a).abs().max() <= 4e-11


@pytest.mark.parametrize("method", ["newton", "dogleg", "levenberg-marquardt"])
def test_badly_scaled_powell_system(method):
    result = tn.root(powell, torch.tensor([0.0, 1.0], dtype=torch.float64), method=method, max_iter=500)
    assert result.success, result
    assert torch.allclose(result.x, torch.tensor([1.098159e-5, 9.106146], dtype=torch.float64), rtol=1e-5)


def test_quadratic_convergence_of_newton():
    history = []
    tn.root(lambda x: x**3 - 2 * x - 5, torch.tensor([2.0], dtype=torch.float64),
            callback=lambda s: history.append(float(s.F.abs().max())))
    errors = [e for e in history if e > 1e-14]
    # e_{k+1} ≈ C e_k²: log ratios double
    assert len(errors) >= 3
    assert errors[-1] <= 10 * errors[-2] ** 2 * 1e2


def test_float32_and_user_jacobian():
    target = torch.tensor([8.0, 27.0])
    result = tn.root(lambda x: x**3 - target, torch.ones(2), jac=lambda x: torch.diag(3 * x**2))
    assert result.success and result.x.dtype == torch.float32
    assert torch.allclose(result.x, torch.tensor([2.0, 3.0]), atol=1e-5)
    assert result.njev >= 1


def test_batched_members_keep_their_own_status_and_stop_changing():
    a = torch.tensor([[1.0], [4.0], [-1.0], [9.0]], dtype=torch.float64)
    x0 = torch.tensor([[1.0], [1.0], [1.0], [3.0]], dtype=torch.float64)
    result = tn.root(lambda x, a: x**2 - a, x0, args=(a,), batch=True, max_iter=50)
    assert result.success.tolist() == [True, True, False, True]
    assert result.status[2].item() != int(Status.SUCCESS)
    assert torch.allclose(result.x[[0, 1, 3], 0], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert result.nit[0] == 0 and result.nit[3] == 0 and result.nit[1] > 0
    assert result.x.shape == (4, 1) and result.fun.shape == (4, 1)


@pytest.mark.parametrize("jvp", ["autodiff", "finite-difference"])
def test_batched_newton_krylov_on_a_large_system(jvp):
    n = 64
    g = torch.Generator().manual_seed(0)
    b = torch.rand(8, n, generator=g, dtype=torch.float64)

    def fun(x):  # discrete 1-D Bratu-like system: tridiagonal Laplacian + exponential
        lap = 2 * x - torch.nn.functional.pad(x[:, :-1], (1, 0)) - torch.nn.functional.pad(x[:, 1:], (0, 1))
        return lap * (n + 1) ** 2 - torch.exp(x) * b

    result = tn.root(fun, torch.zeros(8, n, dtype=torch.float64), method="newton-krylov", batch=True,
                     tol=1e-8, options={"inner_max_iter": 400, "inner_restart": 60, "jvp": jvp})
    assert result.success.all(), result.status
    assert fun(result.x).abs().max() <= 1e-8


def test_iteration_limit_is_reported():
    result = tn.root(lambda x: torch.atan(x) - 0.3, torch.tensor([20.0], dtype=torch.float64),
                     method="broyden", max_iter=2)
    assert not result.success and result.status == Status.MAX_ITER and result.nit == 2


def test_nonfinite_objective_is_never_success():
    # F is finite only at the start point's neighbourhood of radius 0: every trial is NaN
    def fun(x):
        return torch.where(x.abs() > 0.99, x - 5, torch.full_like(x, torch.nan)) * torch.where(x > 1.0, torch.nan, 1.0)

    for method in METHODS:
        result = tn.root(fun, torch.tensor([1.0], dtype=torch.float64), method=method, max_iter=50)
        assert not result.success
        assert result.status in (Status.NONFINITE, Status.STALLED, Status.LINESEARCH_FAILED), (method, result.status)
    nan_start = tn.root(lambda x: x * torch.nan, torch.ones(2, dtype=torch.float64))
    assert nan_start.status == Status.NONFINITE and nan_start.nit == 0


def test_singular_inconsistent_system_reports_singular():
    fun = lambda x: torch.stack([x[0] + x[1], x[0] + x[1] - 1])
    result = tn.root(fun, torch.zeros(2, dtype=torch.float64), max_iter=30)
    assert not result.success
    assert result.status == Status.SINGULAR
    assert torch.isfinite(result.x).all()


def test_implicit_gradient_matches_finite_differences():
    a = torch.tensor([1.2, 0.9], dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([0.5, 0.5], dtype=torch.float64)
    result = tn.root(trig_system, x0, args=(a,), tol=1e-13)
    weights = torch.tensor([0.7, -1.3], dtype=torch.float64)
    (result.x * weights).sum().backward()
    h = 1e-6
    numeric = []
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = h
        plus = tn.root(trig_system, x0, args=(a.detach() + e,), tol=1e-14).x
        minus = tn.root(trig_system, x0, args=(a.detach() - e,), tol=1e-14).x
        numeric.append(((plus - minus) * weights).sum() / (2 * h))
    assert torch.allclose(a.grad, torch.stack(numeric), rtol=1e-6)


def test_batched_implicit_gradient():
    a = torch.tensor([[1.0], [4.0], [9.0]], dtype=torch.float64, requires_grad=True)
    result = tn.root(lambda x, a: x**2 - a, torch.ones(3, 1, dtype=torch.float64), args=(a,), batch=True)
    result.x.sum().backward()
    assert torch.allclose(a.grad, 0.5 / a.detach().sqrt())


def test_bad_inputs_raise_before_any_work():
    f = lambda x: x
    with pytest.raises(TypeError, match="x0"):
        tn.root(f, torch.ones(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="x0"):
        tn.root(f, torch.ones(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="x0"):
        tn.root(f, [1.0, 2.0])
    with pytest.raises(ValueError, match="x0"):
        tn.root(f, torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="x0"):
        tn.root(f, torch.ones(2, 2))
    with pytest.raises(ValueError, match="x0"):
        tn.root(f, torch.ones(2), batch=True)
    with pytest.raises(ValueError, match="newton-krylov"):
        tn.root(f, torch.ones(2), method="secant")
    with pytest.raises(ValueError, match="options"):
        tn.root(f, torch.ones(2), options={"restart": 3})
    with pytest.raises(ValueError, match="fun"):
        tn.root(lambda x: x[:1], torch.ones(2))
    with pytest.raises(TypeError, match="fun"):
        tn.root(lambda x: 1.0, torch.ones(2))
    with pytest.raises(TypeError, match="jac"):
        tn.root(f, torch.ones(2), jac="exact")
    with pytest.raises(ValueError, match="max_iter"):
        tn.root(f, torch.ones(2), max_iter=-1)
    with pytest.raises(ValueError, match="args"):
        tn.root(lambda x, a: x - a, torch.ones(2), args=(torch.ones(2, device="meta"),))
