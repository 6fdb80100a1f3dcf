"""The direct KKT solve's Cholesky-proved inertia (W + ρJᵀJ ≻ 0 and K regular ⇒ inertia (n, m, 0))
against the exact inertia from eigenvalues, and its LDLᵀ fallback for the members it cannot settle."""
import pytest
import torch

from torchnewton.solvers.constrained import kkt
from torchnewton.solvers.constrained.kkt import KKTSolver

D = torch.float64


def kkt_batch(kind: str, batch: int = 64, n: int = 5, m: int = 2, seed: int = 0):
    """(W, J) with a known inertia story: ``convex`` W ≻ 0; ``reduced`` W indefinite with ZᵀWZ ≻ 0;
    ``indefinite`` ZᵀWZ with a negative eigenvalue; ``dependent`` J of rank m − 1."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(batch, m, n, dtype=D, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(batch, n, n, dtype=D, generator=g))
    spectrum = torch.rand(batch, n, dtype=D, generator=g) + 0.5
    W = Q @ torch.diag_embed(spectrum) @ Q.mT
    if kind in ("reduced", "indefinite"):
        # W ← W − t·P_range(Jᵀ) ... curvature removed along range(Jᵀ) only (reduced) or along null(J) too
        P = J.mT @ torch.linalg.solve(J @ J.mT, J)
        W = W - 4.0 * P if kind == "reduced" else W - 4.0 * (torch.eye(n, dtype=D) - P)
    if kind == "dependent":
        J[:, -1] = 2.0 * J[:, 0]
    return W, J


def exact_inertia_ok(W: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
    m = J.shape[-2]
    K = torch.cat([torch.cat([W, J.mT], -1), torch.cat([J, torch.zeros(W.shape[0], m, m, dtype=D)], -1)], -2)
    values = torch.linalg.eigvalsh(K)
    tiny = 1e-10 * values.abs().amax(-1, keepdim=True)
    # n positive eigenvalues: inertia (n, m, 0) where K is regular, and the test the solver applies to
    # the pseudo-inverse step where it is not
    return (values > tiny).sum(-1) == W.shape[-1], K


@pytest.mark.parametrize("kind", ["convex", "reduced", "indefinite", "dependent"])
def test_direct_inertia_matches_eigenvalues(kind):
    W, J = kkt_batch(kind)
    truth, K = exact_inertia_ok(W, J)
    rhs = torch.randn(W.shape[0], K.shape[-1], dtype=D, generator=torch.Generator().manual_seed(1))
    zeros = torch.zeros(W.shape[0], dtype=torch.long)
    z, ok, _, _ = kkt._direct(K, rhs, W.shape[-1], zeros)
    z_ldl, ok_ldl, _, _ = kkt._direct_ldl(K, rhs, W.shape[-1], zeros)
    assert torch.equal(ok, truth) and torch.equal(ok_ldl, truth)
    assert {"convex": True, "reduced": True, "indefinite": False, "dependent": True}[kind] == bool(truth.all())
    if kind == "dependent":  # singular K: the least-squares (pseudo-inverse) step of the LDLᵀ path
        torch.testing.assert_close(z, z_ldl)
        torch.testing.assert_close(z, (torch.linalg.pinv(K) @ rhs.unsqueeze(-1)).squeeze(-1), atol=1e-8, rtol=1e-8)
    else:
        torch.testing.assert_close(z, torch.linalg.solve(K, rhs), atol=1e-10, rtol=1e-10)


def test_proved_inertia_skips_ldl_and_mixed_batches_take_it_per_member(monkeypatch):
    calls = []
    original = kkt._direct_ldl

    def counted(K, *args, **kwargs):
        calls.append(K.shape[0])
        return original(K, *args, **kwargs)

    monkeypatch.setattr(kkt, "_direct_ldl", counted)
    W, J = kkt_batch("reduced", batch=32)
    r_x, r_c = torch.randn(32, 5, dtype=D), torch.randn(32, 2, dtype=D)
    step = KKTSolver().solve(W, J, r_x, r_c, torch.zeros(32, dtype=D))
    assert calls == []  # W indefinite, but W + ρJᵀJ ≻ 0 proves the inertia: no LDLᵀ
    assert bool((step.delta == 0).all())
    # half the batch with negative reduced curvature: only those members take LDLᵀ, then get δ > 0
    W_bad, J_bad = kkt_batch("indefinite", batch=32, seed=3)
    W_mixed, J_mixed = torch.cat([W[:16], W_bad[:16]]), torch.cat([J[:16], J_bad[:16]])
    step = KKTSolver().solve(W_mixed, J_mixed, r_x, r_c, torch.zeros(32, dtype=D))
    assert calls[0] == 16
    assert bool((step.delta[:16] == 0).all()) and bool((step.delta[16:] > 0).all())
    # each member's step has the right inertia with its δ: the reduced Hessian of W + δI is positive definite
    shifted = W_mixed + step.delta.view(-1, 1, 1) * torch.eye(5, dtype=D)
    truth, K = exact_inertia_ok(shifted, J_mixed)
    assert bool(truth.all())
    torch.testing.assert_close(torch.cat([step.dx, step.dlam], -1),
                               torch.linalg.solve(K, torch.cat([r_x, r_c], -1)), atol=1e-9, rtol=1e-9)
