"""The two options of :func:`torchnewton.linear.krylov.cg` that projected CG needs: a curvature
threshold κ‖p‖² and residual replacement; the default options leave the iterates unchanged."""
import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.linear.krylov import cg

D = torch.float64


def _spd(n: int, condition: float, seed: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    A = (Q * torch.logspace(0, torch.log10(torch.tensor(condition)).item(), n, dtype=D)) @ Q.T
    return (0.5 * (A + A.T)).expand(batch, n, n).contiguous(), torch.randn(batch, n, generator=g, dtype=D)


def test_residual_replacement_makes_success_mean_the_true_residual():
    A, b = _spd(60, 1e6, seed=0)
    rtol = 1e-11
    tol = rtol * b.norm(dim=-1)
    plain = cg(A, b, rtol=rtol, max_iter=2000)
    replaced = cg(A, b, rtol=rtol, max_iter=2000, residual_replacement=True)
    # the recurrence alone declares success while the true residual misses the tolerance
    assert bool((plain.status == int(Status.SUCCESS)).all())
    assert bool((plain.residual_norm > 2 * tol).any())
    # with replacement SUCCESS is a fact about b − Ax, and a member that was short goes on to meet it
    success = replaced.status == int(Status.SUCCESS)
    assert bool((replaced.residual_norm[success] <= tol[success]).all())
    assert bool(success[0]) and replaced.iterations[0] > plain.iterations[0]
    assert bool((replaced.status[~success] == int(Status.MAX_ITER)).all())


def test_residual_replacement_without_a_restart_changes_nothing():
    A, b = _spd(60, 1e6, seed=0)
    plain = cg(A, b, rtol=1e-8, max_iter=2000)
    replaced = cg(A, b, rtol=1e-8, max_iter=2000, residual_replacement=True)
    assert bool((replaced.residual_norm <= 1e-8 * b.norm(dim=-1)).all())
    assert torch.equal(plain.x, replaced.x) and torch.equal(plain.iterations, replaced.iterations)


@pytest.mark.parametrize("batch", [1, 3])
def test_curvature_threshold_reports_nearly_flat_directions(batch):
    eigenvalues = torch.tensor([1e-6, 1.0, 2.0, 3.0], dtype=D)
    A = torch.diag(eigenvalues).expand(batch, 4, 4)
    b = torch.ones(batch, 4, dtype=D)
    exact = cg(A, b, rtol=1e-12)
    assert bool((exact.status == int(Status.SUCCESS)).all())
    assert torch.allclose(exact.x, b / eigenvalues, rtol=1e-8)
    kappa = 1e-3
    flat = cg(A, b, rtol=1e-12, curvature=kappa)
    assert bool((flat.status == int(Status.NEGATIVE_CURVATURE)).all())
    d = flat.direction
    assert bool(((d * d).sum(-1) > 0).all())
    assert bool(((d * (A @ d.unsqueeze(-1)).squeeze(-1)).sum(-1) <= kappa * (d * d).sum(-1)).all())
    # a threshold below the smallest eigenvalue lets CG finish as with κ = 0
    loose = cg(A, b, rtol=1e-12, curvature=1e-9)
    assert bool((loose.status == int(Status.SUCCESS)).all())
    assert torch.allclose(loose.x, exact.x, rtol=1e-10, atol=0)


def test_options_on_one_problem_agree_with_the_batch():
    A, b = _spd(30, 1e4, seed=3, batch=3)
    batched = cg(A, b, rtol=1e-10, max_iter=500, curvature=1e-12, residual_replacement=True)
    single = cg(A[1:2], b[1:2], rtol=1e-10, max_iter=500, curvature=1e-12, residual_replacement=True)
    # the options take the batched loop for one problem too (batched products round differently)
    assert int(single.status[0]) == int(batched.status[1]) == int(Status.SUCCESS)
    assert float(single.residual_norm[0]) <= 1e-10 * float(b[1].norm())
    assert torch.allclose(single.x[0], batched.x[1], rtol=1e-7, atol=0)


def test_curvature_must_be_nonnegative():
    A, b = _spd(4, 10.0, seed=0)
    with pytest.raises(ValueError, match="curvature"):
        cg(A, b, curvature=-1.0)
