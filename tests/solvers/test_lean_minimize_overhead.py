"""The cuts in per-iteration overhead of a single small solve keep every number: the direct call of
the autograd engine gives torch.autograd.grad's results bitwise, and BFGS/L-BFGS/damped Newton on
one problem still take the batched path's iterates (here at n = 7, beyond the n = 2 of
test_lean_path.py, where reductions could be ordered differently)."""
import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.derivatives.autodiff import _pull
from torchnewton.solvers.objective.minimize import minimize

F64 = dict(dtype=torch.float64)


def chained_rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def test_pull_equals_autograd_grad_bitwise():
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 5, generator=gen, **F64), torch.randn(3, 5, generator=gen, **F64)
    z = x.requires_grad_(True)
    value = chained_rosenbrock(z)
    ones = torch.ones_like(value)
    expected = torch.autograd.grad(value, z, ones, retain_graph=True)[0]
    assert torch.equal(_pull(value, z, ones, retain_graph=True), expected)
    # with the gradient's own graph: its products along v agree too
    total = value.sum()
    grad = _pull(total, z, torch.ones_like(total), create_graph=True, allow_unused=False)
    assert grad.requires_grad and torch.equal(grad.detach(), expected)
    reference = torch.autograd.grad(torch.autograd.grad(chained_rosenbrock(z).sum(), z, create_graph=True)[0], z, v)[0]
    assert torch.equal(_pull(grad, z, v, retain_graph=True), reference)
    # an input the output does not reach: None, as torch.autograd.grad(..., allow_unused=True) gives
    other = torch.zeros(3, 5, requires_grad=True, **F64)
    assert _pull(chained_rosenbrock(z), other, ones) is None
    with pytest.raises(RuntimeError):
        _pull(chained_rosenbrock(z), other, ones, allow_unused=False)


@pytest.mark.parametrize("method", ["bfgs", "l-bfgs", "damped-newton", "newton", "trust-ncg"])
def test_lean_equals_batched_at_n7(method):
    x0 = torch.tensor([-1.2, 1.0, -1.2, 1.0, 0.5, -0.3, 0.8], **F64)
    one = minimize(chained_rosenbrock, x0, method=method, max_iter=300, record_history=True)
    many = minimize(chained_rosenbrock, torch.stack([x0, x0.flip(0)]), method=method, max_iter=300, batch=True,
                    record_history=True)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    fa = torch.tensor([h["fun"] for h in one.history], **F64)
    fb = torch.stack([h["fun"][0] for h in many.history[:len(fa)]])
    if method == "l-bfgs":  # its lean two-loop recursion runs in coordinates (round-off, see test_lean_path.py)
        assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-10)
    else:
        assert torch.equal(one.x, many.x[0]) and torch.equal(fa, fb)
    # a stationary point (chained Rosenbrock has a local minimizer near x₁ = −1 besides 1)
    g = torch.func.grad(chained_rosenbrock)(one.x)
    assert float(g.abs().max()) <= 1e-5 * max(1.0, float(one.fun))
