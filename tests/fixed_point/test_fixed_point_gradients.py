"""Implicit gradients of torchnewton.fixed_point against finite differences and long unrolled iterations."""
import warnings

import pytest
import torch

from torchnewton.solvers.fixed_point.solve import fixed_point

DOUBLE = torch.float64


def contraction(n: int, seed: int) -> torch.Tensor:
    A = torch.randn(n, n, dtype=DOUBLE, generator=torch.Generator().manual_seed(seed))
    return 0.8 * A / torch.linalg.matrix_norm(A, 2)


def T(z, A, theta):
    return A @ torch.tanh(z) + theta


def unrolled_gradient(A, theta, c, steps=400):
    theta = theta.detach().requires_grad_(True)
    z = torch.zeros_like(theta)
    for _ in range(steps):
        z = T(z, A, theta)
    return torch.autograd.grad((c * z).sum(), theta)[0]


def finite_difference_gradient(A, theta, c, eps=1e-6):
    grad = torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = eps
        plus = fixed_point(T, torch.zeros_like(theta), args=(A, theta + e), tol=1e-13).x
        minus = fixed_point(T, torch.zeros_like(theta), args=(A, theta - e), tol=1e-13).x
        grad[i] = (c * (plus - minus)).sum() / (2 * eps)
    return grad


@pytest.mark.parametrize("method,adjoint", [("anderson", "dense"), ("anderson", "iterative"), ("picard", "iterative"),
                                            ("krasnoselskii-mann", "iterative"), ("newton", None), ("broyden", None)])
def test_gradient_matches_finite_differences_and_unrolling(method, adjoint):
    n = 6
    A = contraction(n, 0)
    theta = torch.randn(n, dtype=DOUBLE, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    c = torch.randn(n, dtype=DOUBLE, generator=torch.Generator().manual_seed(2))
    options = None if adjoint is None else {"adjoint": adjoint}
    result = fixed_point(T, torch.zeros(n, dtype=DOUBLE), args=(A, theta), method=method, tol=1e-12,
                         max_iter=2000, options=options)
    assert result.success
    (grad,) = torch.autograd.grad((c * result.x).sum(), theta)
    assert torch.allclose(grad, finite_difference_gradient(A, theta.detach(), c), atol=1e-7)
    assert torch.allclose(grad, unrolled_gradient(A, theta, c), atol=1e-10)


def test_gradient_with_respect_to_the_map_itself_in_a_batch():
    # gradients reach a matrix shared by the batch and a per-member vector, iterative adjoint (n > 64)
    n, batch = 80, 3
    A = contraction(n, 4).requires_grad_(True)
    theta = torch.randn(batch, n, dtype=DOUBLE, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    c = torch.randn(batch, n, dtype=DOUBLE, generator=torch.Generator().manual_seed(6))
    T_batch = lambda z, A, theta: torch.tanh(z) @ A.T + theta
    result = fixed_point(T_batch, torch.zeros(batch, n, dtype=DOUBLE), args=(A, theta), batch=True, tol=1e-12)
    grad_A, grad_theta = torch.autograd.grad((c * result.x).sum(), (A, theta))
    z = torch.zeros(batch, n, dtype=DOUBLE)
    for _ in range(400):
        z = T_batch(z, A, theta)
    unrolled_A, unrolled_theta = torch.autograd.grad((c * z).sum(), (A, theta))
    assert torch.allclose(grad_theta, unrolled_theta, atol=1e-9)
    assert torch.allclose(grad_A, unrolled_A, atol=1e-9)


def test_no_graph_without_differentiable_args_and_a_warning_when_the_adjoint_fails():
    theta = torch.ones(3, dtype=DOUBLE)
    result = fixed_point(lambda z, t: 0.5 * torch.sin(z) + t, torch.zeros(3, dtype=DOUBLE), args=(theta,))
    assert not result.x.requires_grad
    # the adjoint of an iteration capped at two steps cannot converge: the gradient says so
    theta = theta.clone().requires_grad_(True)
    A = contraction(70, 7) * 1.2  # spectral norm 0.96
    result = fixed_point(lambda z, t: A @ z + t.sum(), torch.zeros(70, dtype=DOUBLE), args=(theta,), method="picard",
                         max_iter=2)
    assert not result.success
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result.x.sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = fixed_point(lambda z, t: 0.5 * torch.sin(z) + t.sum(), torch.zeros(70, dtype=DOUBLE), args=(theta,))
        good.x.sum().backward()
