"""Gradients of the OT value (envelope theorem) and of the plan (implicit differentiation) vs finite differences."""
import pytest
import torch

from torchnewton.ot import sinkhorn, squared_euclidean, wasserstein

F64 = torch.float64
REG = 0.1
H = 1e-5


def problem(seed=0, n=8, m=6):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=gen, dtype=F64) + 0.2
    b = torch.rand(m, generator=gen, dtype=F64) + 0.2
    x, y = torch.rand(n, 2, generator=gen, dtype=F64), torch.rand(m, 2, generator=gen, dtype=F64)
    return a / a.sum(), b / b.sum(), x, y, gen


def solve(a, b, C, method="sparse-newton"):
    return sinkhorn(a, b, C, REG, method=method, tol=1e-14, max_iter=20000)


def central(fn, t, direction):
    return (fn(t + H * direction) - fn(t - H * direction)) / (2 * H)


def mass_preserving(n, gen):
    d = torch.randn(n, generator=gen, dtype=F64)
    return d - d.mean()


@pytest.mark.parametrize("output", ["reg_cost", "cost"])
@pytest.mark.parametrize("method", ["sparse-newton", "sinkhorn"])
def test_value_gradients_in_C_a_b(output, method):
    a, b, x, y, gen = problem(0)
    C = squared_euclidean(x, y)
    A, B, CC = (t.clone().requires_grad_() for t in (a, b, C))
    value = getattr(solve(A, B, CC, method), output)
    gA, gB, gC = torch.autograd.grad(value, (A, B, CC))
    dC = torch.randn(C.shape, generator=gen, dtype=F64)
    da, db = mass_preserving(8, gen), mass_preserving(6, gen)
    with torch.no_grad():
        fd_C = central(lambda t: getattr(solve(a, b, t), output), C, dC)
        fd_a = central(lambda t: getattr(solve(t, b, C), output), a, da)
        fd_b = central(lambda t: getattr(solve(a, t, C), output), b, db)
    assert float((gC * dC).sum()) == pytest.approx(float(fd_C), rel=1e-6, abs=1e-9)
    assert float((gA * da).sum()) == pytest.approx(float(fd_a), rel=1e-6, abs=1e-9)
    assert float((gB * db).sum()) == pytest.approx(float(fd_b), rel=1e-6, abs=1e-9)


def test_plan_gradient_by_implicit_differentiation():
    a, b, x, y, gen = problem(1)
    C = squared_euclidean(x, y)
    G = torch.randn(8, 6, generator=gen, dtype=F64)
    A, B, CC = (t.clone().requires_grad_() for t in (a, b, C))
    loss = (G * solve(A, B, CC).plan).sum()
    gA, gB, gC = torch.autograd.grad(loss, (A, B, CC))
    dC, da = torch.randn(C.shape, generator=gen, dtype=F64), mass_preserving(8, gen)
    # scaling a and b together keeps the masses equal: tests the gradient along Σda = Σdb ≠ 0
    with torch.no_grad():
        fd_C = central(lambda t: (G * solve(a, b, t).plan).sum(), C, dC)
        fd_a = central(lambda t: (G * solve(t, b, C).plan).sum(), a, da)
        fd_scale = central(lambda s: (G * solve(a * s, b * s, C).plan).sum(), torch.tensor(1.0, dtype=F64),
                           torch.tensor(1.0, dtype=F64))
    assert float((gC * dC).sum()) == pytest.approx(float(fd_C), rel=1e-6, abs=1e-9)
    assert float((gA * da).sum()) == pytest.approx(float(fd_a), rel=1e-6, abs=1e-9)
    assert float((gA * a).sum() + (gB * b).sum()) == pytest.approx(float(fd_scale), rel=1e-6, abs=1e-9)


def test_gradient_with_respect_to_point_positions():
    a, b, x, y, gen = problem(2)
    X = x.clone().requires_grad_()
    value = wasserstein(X, y, a, b, p=2, reg=REG, tol=1e-14)
    (gX,) = torch.autograd.grad(value, X)
    dx = torch.randn(x.shape, generator=gen, dtype=F64)
    with torch.no_grad():
        fd = central(lambda t: wasserstein(t, y, a, b, p=2, reg=REG, tol=1e-14), x, dx)
    assert float((gX * dx).sum()) == pytest.approx(float(fd), rel=1e-6)


def test_batched_gradients_and_zero_mass_entries_are_finite():
    a, b, x, y, gen = problem(3)
    a = a.clone(); a[2] = 0; a = a / a.sum()
    C = torch.stack([squared_euclidean(x, y), 2 * squared_euclidean(x, y)]).requires_grad_()
    res = sinkhorn(a, b, C, REG, tol=1e-13)
    (res.cost.sum() + res.reg_cost.sum()).backward()
    assert torch.isfinite(C.grad).all() and C.grad[:, 2].abs().max() == 0
    single = squared_euclidean(x, y).requires_grad_()
    out = sinkhorn(a, b, single, REG, tol=1e-13)
    (out.cost + out.reg_cost).backward()
    assert torch.allclose(C.grad[0], single.grad, atol=1e-10)
