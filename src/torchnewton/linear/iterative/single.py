"""The lean one-right-hand-side conjugate gradient kernel, optionally deflated.

Plain CG for one vector spends most of its time outside the product with A when every step
allocates fresh temporaries and launches many small ops. This kernel keeps x, r, p, A p in
preallocated buffers and updates them in place (``add_`` with ``alpha``, ``addmv`` into ``out``),
with one host read per iteration (the scalars α, β and the residual norm). It is the body of
:func:`~torchnewton.linear.iterative.cg` for a single right-hand side and of the deflated CG of
:class:`~torchnewton.linear.RecyclingSolver`.

Deflation (Saad, Yeung, Erhel & Guyomarc'h, SIAM J. Sci. Comput. 21, 2000): with a basis W
(k, n) and Π = (W A Wᵀ)⁻¹ (A W) precomputed, each direction is p_{j+1} = z_{j+1} + β_j p_j − Wᵀ Π z_{j+1}
(A-orthogonal to span W), at the price of two (k, n) matrix-vector products per iteration.

Example:
    >>> import scipy.sparse as sp
    >>> from torchnewton.linear.iterative.common import Counted
    >>> from torchnewton.linear import aslinearoperator
    >>> A = aslinearoperator(sp.diags([[-1.0] * 9, [2.0] * 10, [-1.0] * 9], [-1, 0, 1]).tocsr())
    >>> out = conjugate_gradient(Counted(A, None), torch.ones(10, dtype=torch.float64),
    ...                          torch.zeros(10, dtype=torch.float64), tol=1e-10, maxiter=100)
    >>> out.status.name, out.nit
    ('SUCCESS', 5)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ...core.status import Status
from .common import Counted


@dataclass
class Deflation:
    """W (k, n) with orthonormal rows, A W and Π = (W A Wᵀ)⁻¹ A W for one matrix."""

    W: torch.Tensor
    AW: torch.Tensor
    projector: torch.Tensor
    factor: torch.Tensor          # Cholesky factor of W A Wᵀ

    @staticmethod
    def build(ops: Counted, W: torch.Tensor) -> "Deflation | None":
        """k products with A; None when W A Wᵀ is not positive definite (A not SPD on span W)."""
        AW = ops.A_rows(W)
        WAW = W @ AW.T
        L, info = torch.linalg.cholesky_ex(0.5 * (WAW + WAW.T))
        if int(info) != 0:
            return None
        return Deflation(W, AW, torch.cholesky_solve(AW, L), L)

    def start(self, x: torch.Tensor, r: torch.Tensor) -> None:
        """x += Wᵀ (W A Wᵀ)⁻¹ W r, r −= (A W)ᵀ (…): the Galerkin correction on span W, in place."""
        mu = torch.cholesky_solve((self.W @ r).unsqueeze(-1), self.factor).squeeze(-1)
        x.addmv_(self.W.T, mu)
        r.addmv_(self.AW.T, mu, alpha=-1)

    def remove(self, p: torch.Tensor, z: torch.Tensor, mu: torch.Tensor) -> None:
        """p −= Wᵀ Π z in place (``mu`` a (k,) buffer)."""
        torch.mv(self.projector, z, out=mu)
        p.addmv_(self.W.T, mu, alpha=-1)


@dataclass
class CGOutcome:
    x: torch.Tensor
    nit: int
    status: Status
    residual_norm: float
    directions: torch.Tensor      # (h, n) the first search directions p_j (for Ritz vectors)
    products: torch.Tensor        # (h, n) A p_j
    curvatures: torch.Tensor      # (h,) p_jᵀ A p_j


def conjugate_gradient(ops: Counted, b: torch.Tensor, x: torch.Tensor, *, tol: float, maxiter: int,
                       deflation: Deflation | None = None, harvest: int = 0,
                       callback: Callable[[torch.Tensor], Any] | None = None) -> CGOutcome:
    """Solve SPD A x = b (b, x of shape (n,); x is updated in place) until the *true* residual
    is ≤ tol. ``harvest`` keeps the first directions p_j and A p_j (for the Rayleigh–Ritz refresh
    of a recycled space). A callback returning True stops with ``Status.CALLBACK_STOP``."""
    n = b.shape[0]
    r = b.clone() if not bool(x.any()) else b - ops.mv(x)
    if deflation is not None:
        deflation.start(x, r)
    mu = b.new_empty(deflation.W.shape[0]) if deflation is not None else None
    q = torch.empty_like(b)
    P = b.new_empty(harvest, n)
    AP = b.new_empty(harvest, n)
    curvature = b.new_empty(harvest)
    kept = 0

    def direction(z: torch.Tensor) -> torch.Tensor:
        p = z.clone()
        if deflation is not None:
            deflation.remove(p, z, mu)
        return p

    z = ops.M1(r)
    p = direction(z)
    rz = float(torch.dot(r, z))
    rnorm = math.sqrt(rz) if ops.precond is None else float(r.norm())
    status, nit = Status.MAX_ITER, 0
    while True:
        if not math.isfinite(rnorm):
            status = Status.NONFINITE
            break
        if rnorm <= tol:
            r_true = b - ops.mv(x)
            rnorm = float(r_true.norm())
            if rnorm <= tol:
                status = Status.SUCCESS
                break
            # rounding drift: restart the recurrence from the true residual (residual replacement)
            r = r_true
            z = ops.M1(r)
            p = direction(z)
            rz = float(torch.dot(r, z))
        if nit >= maxiter:
            rnorm = float((b - ops.mv(x)).norm())
            break
        ops.mv(p, out=q)
        pq = float(torch.dot(p, q))
        if not math.isfinite(pq):
            status = Status.NONFINITE
            break
        if pq <= 0:
            status = Status.BREAKDOWN  # A (or M) is not positive definite
            break
        if kept < harvest:
            P[kept].copy_(p)
            AP[kept].copy_(q)
            curvature[kept] = pq
            kept += 1
        alpha = rz / pq
        x.add_(p, alpha=alpha)
        r.add_(q, alpha=-alpha)
        nit += 1
        z = ops.M1(r)
        rz_next = float(torch.dot(r, z))
        beta = rz_next / rz if rz != 0 else 0.0
        rz = rz_next
        p.mul_(beta).add_(z)
        if deflation is not None:
            deflation.remove(p, z, mu)
        rnorm = math.sqrt(abs(rz)) if ops.precond is None else float(r.norm())
        if callback is not None and callback(x) is True:
            status = Status.CALLBACK_STOP
            rnorm = float((b - ops.mv(x)).norm())
            break
    return CGOutcome(x, nit, status, rnorm, P[:kept], AP[:kept], curvature[:kept])
