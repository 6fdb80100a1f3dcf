import pytest
import torch

from torchnewton.derivatives import (gauss_newton_product, gradient, hessian, hutchinson_diagonal, hvp, linearize,
                                     jacobian, jvp, vjp)


def residuals(x):
    return torch.stack([x[:, 0] ** 2 * x[:, 1], torch.sin(x[:, 2]) * x[:, 3], x.sum(-1),
                        x[:, 0] * x[:, 3], x[:, 1] ** 3], dim=-1)


def objective(x):
    return (x**4).sum(-1) + x[:, 0] * x[:, 1] * x[:, 2]


def per_row(fn, x, single):
    return torch.stack([fn(lambda y: single(y[None])[0], x[i]) for i in range(x.shape[0])])


@pytest.mark.parametrize("mode", ["forward", "reverse", "auto"])
def test_batched_jacobian_matches_per_row_autograd(mode):
    x = torch.randn(3, 4, dtype=torch.float64)
    value, J = jacobian(residuals, x, mode=mode)
    reference = per_row(torch.autograd.functional.jacobian, x, residuals)
    assert torch.allclose(J, reference, atol=1e-14)
    assert torch.allclose(value, residuals(x))


def test_products_match_the_dense_derivatives():
    x = torch.randn(3, 4, dtype=torch.float64)
    v, u = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    J = jacobian(residuals, x)[1]
    assert torch.allclose(jvp(residuals, x, v)[1], torch.einsum("bmn,bn->bm", J, v))
    assert torch.allclose(vjp(residuals, x, u)[1], torch.einsum("bmn,bm->bn", J, u))
    assert torch.allclose(gauss_newton_product(residuals, x, v), torch.einsum("bmn,bmk,bk->bn", J, J, v))
    _, g, H = hessian(objective, x)
    H_ref = per_row(torch.autograd.functional.hessian, x, objective)
    assert torch.allclose(H, H_ref, atol=1e-13)
    assert torch.allclose(g, per_row(torch.autograd.functional.jacobian, x, objective))
    assert torch.allclose(gradient(objective, x)[1], g)
    assert torch.allclose(hvp(objective, x, v)[1], torch.einsum("bij,bj->bi", H_ref, v))


def test_hutchinson_diagonal_is_unbiased_on_a_diagonal_hessian():
    x = torch.randn(2, 6, dtype=torch.float64)
    # separable objective: z ⊙ Hz = diag(H) exactly for every Rademacher z
    estimate = hutchinson_diagonal(lambda v: hvp(lambda y: (y**4).sum(-1), x, v)[1], x, samples=3)
    assert torch.allclose(estimate, 12 * x**2)
    g = torch.Generator().manual_seed(0)
    dense = hutchinson_diagonal(lambda v: hvp(objective, x, v)[1], x, samples=1000, generator=g)
    H = hessian(objective, x)[2]
    exact = torch.diagonal(H, dim1=-2, dim2=-1)
    assert torch.allclose(dense, exact, atol=0.3 * H.abs().max().item())


def test_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        jacobian(residuals, torch.zeros(1, 4), mode="sideways")


def test_linearize_reuses_one_graph_for_many_products():
    x = torch.randn(3, 4, dtype=torch.float64)
    value, product = linearize(residuals, x)
    J = jacobian(residuals, x)[1]
    assert torch.allclose(value, residuals(x))
    for _ in range(3):
        v = torch.randn(3, 4, dtype=torch.float64)
        assert torch.allclose(product(v), torch.einsum("bmn,bn->bm", J, v))
    constant = linearize(lambda y: torch.ones(3, 2, dtype=torch.float64), x)[1]
    assert torch.equal(constant(torch.ones(3, 4, dtype=torch.float64)), torch.zeros(3, 2, dtype=torch.float64))
