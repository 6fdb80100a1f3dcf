"""Negative curvature, non-finite objectives and bad arguments: honest outcomes, clear errors."""
import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.derivatives import autodiff
from torchnewton.solvers.objective.minimize import METHODS, minimize

from .problems import rosenbrock, saddle

F64 = torch.float64


@pytest.mark.parametrize("method", ["trust-exact", "cubic"])
def test_escapes_exact_saddle_point(method):
    # at (1, 0) the gradient has no component along the negative-curvature direction e₂: the hard case
    # (a Krylov method such as trust-ncg never sees e₂ from there, so it is not expected to escape)
    res = minimize(saddle, torch.tensor([1.0, 0.0], dtype=F64), method=method)
    assert res.success
    assert torch.allclose(res.x.abs(), torch.tensor([0.0, 1.0], dtype=F64), atol=1e-8)
    assert abs(float(res.fun) + 0.25) < 1e-12


@pytest.mark.parametrize("method", ["newton", "saddle-free-newton", "newton-cg", "damped-newton", "bfgs"])
def test_negative_curvature_leads_to_a_minimizer(method):
    res = minimize(saddle, torch.tensor([1.0, 0.05], dtype=F64), method=method)
    assert res.success
    H = autodiff.hessian(lambda z: saddle(z), res.x.unsqueeze(0))[2][0]
    assert torch.linalg.eigvalsh(H).min() > 0  # a minimizer, not the saddle at the origin
    assert abs(float(res.fun) + 0.25) < 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_nan_region_is_never_success(method):
    # f is NaN for x₀ > 0.5: the solvers must back off; the minimizer (0.3, 0.09) is outside it
    def fun(x):
        value = (x[0] - 0.3) ** 2 + (x[1] - x[0] ** 2) ** 2
        return torch.where(x[0] > 0.5, torch.full_like(value, float("nan")), value)

    res = minimize(fun, torch.tensor([-1.0, 2.0], dtype=F64), method=method)
    if res.success:
        assert torch.isfinite(res.fun) and res.x[0] <= 0.5
        assert torch.allclose(res.x, torch.tensor([0.3, 0.09], dtype=F64), atol=1e-6)
    else:
        assert res.status is not Status.SUCCESS


@pytest.mark.parametrize("method", METHODS)
def test_nan_objective_reports_nonfinite(method):
    res = minimize(lambda x: (x * x).sum() * float("nan"), torch.ones(3, dtype=F64), method=method)
    assert not res.success and res.status is Status.NONFINITE


@pytest.mark.parametrize("method", METHODS)
def test_unbounded_objective_is_not_success(method):
    res = minimize(lambda x: -(x**3).sum() - x.sum(), torch.zeros(2, dtype=F64), method=method, max_iter=200)
    assert not res.success


def test_batch_mixes_statuses():
    def fun(x):
        f = ((x - 1) ** 2).sum(-1)
        return torch.where(x[:, 0] < -5, torch.full_like(f, float("nan")), f)

    res = minimize(fun, torch.tensor([[0.0, 0.0], [-10.0, 0.0]], dtype=F64), method="newton", batch=True)
    assert res.status.tolist() == [int(Status.SUCCESS), int(Status.NONFINITE)]
    assert res.success.tolist() == [True, False]


BAD = [
    (dict(method="nelder-mead"), ValueError, "valid choices"),
    (dict(options={"radius": 1.0}), ValueError, "unknown options"),
    (dict(method="bfgs", options={"hessian": "exact"}), ValueError, "unknown options"),
    (dict(method="trust-ncg", options={"hessian": "exact"}), ValueError, "hessian"),
    (dict(options={"hessian": "gauss-newton"}), ValueError, "residuals"),
    (dict(method="newton", options={"line_search": "exact"}), ValueError, "line_search"),
    (dict(method="damped-newton", options={"schedule": "fixed"}), ValueError, "schedule"),
    (dict(method="cubic", options={"lazy": 0}), ValueError, "lazy"),
    (dict(tol=-1.0), ValueError, "tol"),
    (dict(max_iter=-1), ValueError, "max_iter"),
    (dict(max_iter=2.5), TypeError, "max_iter"),
    (dict(jac=3), TypeError, "jac"),
    (dict(callback="print"), TypeError, "callback"),
    (dict(method=3), TypeError, "method"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        minimize(rosenbrock, torch.zeros(2, dtype=F64), **kwargs)


@pytest.mark.parametrize("x0,error,match", [
    (torch.zeros(2, dtype=torch.long), TypeError, "floating"),
    (torch.tensor([float("nan"), 0.0]), ValueError, "non-finite"),
    (torch.zeros(1, 2), ValueError, "dimension"),
    (torch.zeros(0), ValueError, "empty"),
    ([0.0, 0.0], TypeError, "x0"),
])
def test_bad_x0(x0, error, match):
    with pytest.raises(error, match=match):
        minimize(rosenbrock, x0)


def test_bad_user_function_outputs():
    x0 = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match="scalar"):
        minimize(lambda x: x * 2, x0)
    with pytest.raises(ValueError, match="jac returned shape"):
        minimize(rosenbrock, x0, method="bfgs", jac=lambda x: torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="hess returned shape"):
        minimize(rosenbrock, x0, method="newton", hess=lambda x: torch.zeros(2, dtype=F64))
    with pytest.raises(TypeError, match="fun must return a torch.Tensor"):
        minimize(lambda x: [1.0], torch.zeros((3, 2), dtype=F64), batch=True)
    with pytest.raises(ValueError, match="fun returned shape"):
        minimize(lambda x: x.sum(), torch.zeros((3, 2), dtype=F64), batch=True)
