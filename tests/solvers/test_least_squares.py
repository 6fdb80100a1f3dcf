import numpy as np
import pytest
import scipy.optimize
import torch

import torchnewton as tn
from torchnewton.core.status import Status
from torchnewton.solvers.residual.least_squares import METHODS

T = torch.linspace(0, 4, 40, dtype=torch.float64)
Y = 2.5 * torch.exp(-1.3 * T) + 0.5 + 0.01 * torch.sin(7 * T)  # not an exact fit: nonzero residual


def model(p, t=T, y=Y):
    return p[0] * torch.exp(p[1] * t) + p[2] - y


@pytest.mark.parametrize("method", METHODS)
def test_matches_scipy_on_a_nonzero_residual_fit(method):
    result = tn.least_squares(model, torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64), method=method)
    reference = scipy.optimize.least_squares(lambda p: model(torch.from_numpy(p)).numpy(), np.array([1.0, -0.5, 0.0]),
                                             method="lm", xtol=1e-12, ftol=1e-12, gtol=1e-12)
    assert result.success, result
    assert np.allclose(result.x.numpy(), reference.x, rtol=1e-6)
    assert abs(result.cost.item() - reference.cost) <= 1e-10 * max(1.0, reference.cost)
    assert result.grad.abs().max() <= 1e-6


def test_rosenbrock_residuals_batched_with_random_parameters():
    g = torch.Generator().manual_seed(0)
    a = 1 + torch.rand(64, 1, generator=g, dtype=torch.float64)
    x0 = torch.tensor([-1.2, 1.0], dtype=torch.float64).expand(64, 2).clone()

    def rosenbrock(x, a):
        return torch.stack([10 * (x[:, 1] - x[:, 0] ** 2), a[:, 0] - x[:, 0]], dim=-1)

    result = tn.least_squares(rosenbrock, x0, args=(a,), batch=True, method="levenberg-marquardt", gtol=1e-12)
    assert result.success.all()
    assert torch.allclose(result.x, torch.cat([a, a**2], dim=-1), atol=1e-7)
    assert result.cost.shape == (64,) and result.nit.shape == (64,)


def test_implicit_gradient_of_fitted_parameters_matches_finite_differences():
    y = Y.clone().requires_grad_(True)
    x0 = torch.tensor([2.0, -1.0, 0.4], dtype=torch.float64)
    fit = lambda p, y: model(p, y=y)
    result = tn.least_squares(fit, x0, args=(y,), ftol=1e-15, xtol=1e-15, gtol=1e-13)
    result.x[1].backward()
    direction = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = 1e-6
    plus = tn.least_squares(fit, x0, args=(Y + h * direction,), ftol=1e-15, xtol=1e-15, gtol=1e-13).x[1]
    minus = tn.least_squares(fit, x0, args=(Y - h * direction,), ftol=1e-15, xtol=1e-15, gtol=1e-13).x[1]
    assert torch.isclose((y.grad * direction).sum(), (plus - minus) / (2 * h), rtol=1e-5)


def test_history_and_iteration_limit():
    result = tn.least_squares(model, torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64), max_iter=1,
                              record_history=True)
    assert result.status == Status.MAX_ITER and not result.success
    assert len(result.history) == 2 and result.history[1]["cost"] < result.history[0]["cost"]


def test_least_squares_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        tn.least_squares(model, torch.zeros(3, dtype=torch.float64), method="trf")
    with pytest.raises(ValueError, match="ftol"):
        tn.least_squares(model, torch.zeros(3, dtype=torch.float64), ftol=-1.0)
    with pytest.raises(TypeError, match="x0"):
        tn.least_squares(model, np.zeros(3))
