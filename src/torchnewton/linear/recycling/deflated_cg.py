"""Deflated (recycled) conjugate gradients for a sequence of symmetric positive definite systems.

Saad, Yeung, Erhel & Guyomarc'h, "A deflated version of the conjugate gradient algorithm",
SIAM J. Sci. Comput. 21 (2000). With a recycled basis W (k, n) the iterates stay A-orthogonal to
span(W): the start is x₀ + Wᵀ(WAWᵀ)⁻¹W r₀ and each direction is

    p_{j+1} = z_{j+1} + β_j p_j − Wᵀ μ_j,   (W A Wᵀ) μ_j = (A W) z_{j+1},   z = M⁻¹ r,

so CG runs on the complement of span(W), where the small eigenvalues that slow it down have
been removed (the iteration itself is :func:`~torchnewton.linear.iterative.single.conjugate_gradient`).
After the solve W is refreshed by Rayleigh–Ritz on span[W; P], P the first search directions:
the k Ritz vectors of smallest Ritz value. The projected matrix needs no product with A: the
directions are A-conjugate to each other and to W, so [W; P] A [W; P]ᵀ = blockdiag(W A Wᵀ,
diag(p_jᵀ A p_j)); only the Gram matrix [W; P][W; P]ᵀ is computed. Deflation never changes the
solution, only how fast it is reached.
"""
from __future__ import annotations

import torch

from ...core.status import Status
from ..iterative.common import Counted
from ..iterative.single import Deflation, conjugate_gradient


def ritz_refresh(W: torch.Tensor | None, WAW: torch.Tensor | None, P: torch.Tensor, curvatures: torch.Tensor,
                 k: int) -> torch.Tensor | None:
    """Rows: the k Ritz vectors of smallest Ritz value on span[W; P] (orthonormal rows), from
    the A-conjugacy of the CG directions P to each other and to W (W with orthonormal rows)."""
    norms = P.norm(dim=1).clamp(min=torch.finfo(P.dtype).tiny)
    P = P / norms.unsqueeze(1)
    kw = 0 if W is None else W.shape[0]
    size = kw + P.shape[0]
    # small dense algebra stays in torch (its thread setting), not numpy's threaded LAPACK
    gram = torch.eye(size, dtype=P.dtype, device=P.device)
    F = torch.zeros(size, size, dtype=P.dtype, device=P.device)
    gram[kw:, kw:] = P @ P.T
    F[kw:, kw:] = torch.diag(curvatures / norms**2)
    if W is not None:
        cross = W @ P.T
        gram[:kw, kw:], gram[kw:, :kw] = cross, cross.T
        F[:kw, :kw] = 0.5 * (WAW + WAW.T)
    lam, E = torch.linalg.eigh(0.5 * (gram + gram.T))
    keep = lam > 1e-10 * lam.max()
    T = E[:, keep] / lam[keep].sqrt()  # orthonormalizes span[W; P]
    theta, Y = torch.linalg.eigh(T.T @ F @ T)
    Z = T @ Y[:, : min(k, Y.shape[1])]
    if not bool(torch.isfinite(Z).all()) or Z.shape[1] == 0:
        return None
    Z = Z.T.contiguous()
    new = Z[:, kw:] @ P
    if W is not None:
        new.addmm_(Z[:, :kw], W)
    return new


def deflated_cg(ops: Counted, b: torch.Tensor, x: torch.Tensor, W: torch.Tensor | None, *, k: int,
                tol: float, maxiter: int, harvest: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, int, Status, float]:
    """Solve SPD A x = b (1-D) to ‖b − Ax‖ ≤ tol. Returns (x, W_new, iterations, status, ‖r‖)."""
    harvest = harvest if harvest is not None else max(2 * k, 10)
    x = x.clone()
    deflation = Deflation.build(ops, W) if W is not None and W.shape[0] > 0 else None
    if deflation is None:
        W = None  # the old subspace is not positive for this A (not SPD, or degenerate): do without it
    out = conjugate_gradient(ops, b, x, tol=tol, maxiter=maxiter, deflation=deflation, harvest=harvest if k > 0 else 0)
    W_new = W
    if out.directions.shape[0] > 0 and out.status in (Status.SUCCESS, Status.MAX_ITER):
        refreshed = ritz_refresh(W, None if deflation is None else deflation.W @ deflation.AW.T,
                                 out.directions, out.curvatures, k)
        W_new = refreshed if refreshed is not None else W
    return out.x, W_new, out.nit, out.status, out.residual_norm
