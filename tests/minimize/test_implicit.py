"""Gradients of the minimizer x*(θ) by implicit differentiation, against finite differences."""
import pytest
import torch

from torchnewton.solvers.objective.minimize import minimize

F64 = torch.float64


def objective(x, theta, scale):
    return 0.25 * (x**4).sum() + 0.5 * scale * (x * x).sum() - theta @ x + 0.1 * x[0] * x[1]


def solve(theta, scale, method):
    return minimize(objective, torch.zeros(3, dtype=F64), args=(theta, scale), method=method, tol=1e-13).x


@pytest.mark.parametrize("method", ["trust-exact", "newton", "cubic", "bfgs"])
def test_implicit_gradient_matches_finite_differences(method):
    theta = torch.tensor([1.0, -0.5, 2.0], dtype=F64, requires_grad=True)
    scale = torch.tensor(1.5, dtype=F64, requires_grad=True)
    x = solve(theta, scale, method)
    weights = torch.tensor([0.3, -1.0, 0.7], dtype=F64)
    g_theta, g_scale = torch.autograd.grad((weights * x).sum(), (theta, scale))
    h = 1e-6
    with torch.no_grad():
        fd_theta = torch.stack([((weights * (solve(theta + h * e, scale, method) - solve(theta - h * e, scale, method))).sum()) / (2 * h)
                                for e in torch.eye(3, dtype=F64)])
        fd_scale = (weights * (solve(theta, scale + h, method) - solve(theta, scale - h, method))).sum() / (2 * h)
    assert torch.allclose(g_theta, fd_theta, atol=1e-6)
    assert torch.allclose(g_scale, fd_scale, atol=1e-6)


def test_batched_implicit_gradient():
    theta = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64, requires_grad=True)
    fun = lambda x, t: 0.25 * (x**4).sum(-1) + 0.5 * (x * x).sum(-1) - (t * x).sum(-1)
    res = minimize(fun, torch.zeros(2, 2, dtype=F64), args=(theta,), batch=True, tol=1e-13)
    (grad,) = torch.autograd.grad(res.x.sum(), theta)
    # x + x³ = θ per coordinate: dx/dθ = 1 / (1 + 3x²), and rows do not mix
    assert torch.allclose(grad, 1 / (1 + 3 * res.x.detach() ** 2), atol=1e-10)
