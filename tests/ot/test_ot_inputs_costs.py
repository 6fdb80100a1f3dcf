"""Bad arguments fail early with a clear message; cost helpers give the right matrices."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from torchnewton.ot import (grid_cost, grid_points, pnorm_cost, sinkhorn, squared_euclidean,
                            wasserstein)

F64 = torch.float64


def valid(n=4, m=3):
    return (torch.full((n,), 1.0 / n, dtype=F64), torch.full((m,), 1.0 / m, dtype=F64),
            torch.rand(n, m, dtype=F64))


@pytest.mark.parametrize("mutate, error, match", [
    (lambda a, b, C: (-a, b, C), ValueError, "negative"),
    (lambda a, b, C: (a.clone().index_fill_(0, torch.tensor([0]), -0.1), b, C), ValueError, "negative"),
    (lambda a, b, C: (a * 2, b, C), ValueError, "same total mass"),
    (lambda a, b, C: (a[:3] / a[:3].sum(), b, C), ValueError, "rows"),
    (lambda a, b, C: (a, b[:2] / b[:2].sum(), C), ValueError, "columns"),
    (lambda a, b, C: (a, b, C.index_put((torch.tensor([0]), torch.tensor([1])), torch.tensor(float("nan"), dtype=F64))),
     ValueError, "non-finite"),
    (lambda a, b, C: (a, b, C.index_put((torch.tensor([0]), torch.tensor([1])), torch.tensor(float("inf"), dtype=F64))),
     ValueError, "non-finite"),
    (lambda a, b, C: (a, b, C.float()), TypeError, "dtype"),
    (lambda a, b, C: (a, b, C.long()), TypeError, "floating"),
    (lambda a, b, C: (a, b, C[0]), ValueError, "C must have shape"),
    (lambda a, b, C: (torch.zeros_like(a), torch.zeros_like(b), C), ValueError, "positive total mass"),
    (lambda a, b, C: (a.expand(2, 4), b.expand(3, 3), C), ValueError, "broadcast"),
    (lambda a, b, C: (a.tolist(), b, C), TypeError, "torch.Tensor"),
])
def test_bad_marginals_and_costs(mutate, error, match):
    a, b, C = mutate(*valid())
    with pytest.raises(error, match=match):
        sinkhorn(a, b, C, 0.1)


@pytest.mark.parametrize("reg", [0.0, -1.0, float("nan")])
def test_nonpositive_reg(reg):
    with pytest.raises(ValueError, match="reg"):
        sinkhorn(*valid(), reg)


def test_bad_method_and_options():
    with pytest.raises(ValueError, match="valid choices"):
        sinkhorn(*valid(), 0.1, method="greenkhorn")
    with pytest.raises(ValueError, match="sparse-newton"):
        sinkhorn(*valid(), 0.1, method="sinkhorn", warm_start_iters=3)
    with pytest.raises(ValueError, match="unknown options"):
        sinkhorn(*valid(), 0.1, method="sinkhorn", options={"decay": 0.5})
    with pytest.raises(ValueError, match="sparsity"):
        sinkhorn(*valid(), 0.1, sparsity=2.0)
    with pytest.raises(ValueError, match="tol"):
        sinkhorn(*valid(), 0.1, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        sinkhorn(*valid(), 0.1, max_iter=0)


def test_squared_euclidean_and_pnorm_match_cdist():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 7, 3, generator=gen, dtype=F64), torch.rand(2, 5, 3, generator=gen, dtype=F64)
    dist = torch.cdist(x, y)
    assert torch.allclose(squared_euclidean(x, y), dist**2, atol=1e-12)
    assert torch.allclose(pnorm_cost(x, y, p=1), dist, atol=1e-7)
    assert torch.allclose(pnorm_cost(x, y, p=3), dist**3, atol=1e-7)
    assert torch.allclose(pnorm_cost(x, y, p=1, q=1), torch.cdist(x, y, p=1), atol=1e-12)
    assert torch.allclose(pnorm_cost(x, y, p=2, q=3), torch.cdist(x, y, p=3) ** 2, atol=1e-12)
    with pytest.raises(ValueError, match="one d"):
        squared_euclidean(x, y[..., :2])


def test_cost_gradient_finite_at_coincident_points():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=F64, requires_grad=True)
    for q in (2.0, 1.0):
        C = pnorm_cost(x, x.detach(), p=1, q=q)
        (grad,) = torch.autograd.grad(C.sum(), x)
        assert torch.isfinite(grad).all()
        assert torch.allclose(grad, torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=F64))


def test_grid_cost():
    points = grid_points((3, 4))
    assert points.shape == (12, 2) and points.max() == 1.0
    C = grid_cost((3, 4))
    assert C.shape == (12, 12)
    # cell (0, 0) to (2, 3): (2² + 3²) / 3² in units of the longest side
    assert C[0, 11] == pytest.approx(13 / 9)
    assert grid_cost((3, 4), p=1)[0, 11] == pytest.approx(math.sqrt(13) / 3)
    with pytest.raises(ValueError, match="grid shape"):
        grid_points((0, 3))


def test_wasserstein_of_translated_cloud():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(60, 2, generator=gen, dtype=F64)
    shift = torch.tensor([0.3, 0.4], dtype=F64)
    # translating a cloud: the identity plan is optimal, W_p = ‖shift‖ for every p
    for p, reg in ((1.0, 1e-3), (2.0, 1e-4), (2.0, 1e-3)):
        w = wasserstein(x, x + shift, p=p, reg=reg)
        assert float(w) == pytest.approx(0.5, abs=1e-3)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 12), seed=st.integers(0, 10_000),
       log_reg=st.floats(-2.5, 0.0), zeros=st.booleans())
def test_property_marginals_and_nonnegative_plan(n, m, seed, log_reg, zeros):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=gen, dtype=F64)
    b = torch.rand(m, generator=gen, dtype=F64)
    if zeros and n > 1:
        a[0] = 0
    a, b = a / a.sum(), b / b.sum()
    C = torch.rand(n, m, generator=gen, dtype=F64)
    res = sinkhorn(a, b, C, 10**log_reg)
    assert res.success
    assert res.marginal_error <= 1e-9
    assert (res.plan >= 0).all() and torch.isfinite(res.f).all() and torch.isfinite(res.g).all()
    assert float(res.cost) <= float(C.max()) + 1e-12
