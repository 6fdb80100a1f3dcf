"""Restarted GMRES (right-preconditioned) and BiCGSTAB with scipy's arguments, for one matrix
and (B, n) right-hand sides.

Example:
    >>> A = torch.tensor([[4.0, 1.0], [-2.0, 3.0]], dtype=torch.float64)
    >>> gmres(A, torch.tensor([1.0, 2.0], dtype=torch.float64), rtol=1e-12).x
    tensor([0.0714, 0.7143], dtype=torch.float64)
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ...core.status import Status
from .common import KrylovResult, accept_verified, call_back, col, dot, finish, prepare


class GivensLeastSquares:
    """min ‖βe₁ − H̄y‖ for one growing Hessenberg matrix, updated column by column with Givens
    rotations in plain Python floats (the columns are tiny; a tensor op per rotation would cost
    more than the sparse product)."""

    def __init__(self, beta: float):
        self.cs: list[float] = []
        self.sn: list[float] = []
        self.R: list[list[float]] = []
        self.g = [beta]

    def add_column(self, h: list[float]) -> float:
        """Append column h (length j+2); returns the residual norm |g_{j+1}| of the new LS problem."""
        for i, (c, s) in enumerate(zip(self.cs, self.sn)):
            h[i], h[i + 1] = c * h[i] + s * h[i + 1], -s * h[i] + c * h[i + 1]
        a, b = h[-2], h[-1]
        r = (a * a + b * b) ** 0.5
        c, s = (1.0, 0.0) if r == 0 else (a / r, b / r)
        self.cs.append(c)
        self.sn.append(s)
        h[-2], h[-1] = r, 0.0
        self.R.append(h[:-1])
        gj = self.g[-1]
        self.g[-1] = c * gj
        self.g.append(-s * gj)
        return abs(self.g[-1])

    def solve(self, steps: int, dtype: torch.dtype) -> torch.Tensor:
        """y (steps,) from the triangular system of the first ``steps`` columns."""
        R = torch.zeros(steps, steps, dtype=dtype)
        for j in range(steps):
            R[: j + 1, j] = torch.tensor(self.R[j], dtype=dtype)
        diag = R.diagonal()
        # an exactly singular R (h = 0 column) contributes no step in that direction
        R.diagonal().copy_(torch.where(diag == 0, torch.ones_like(diag), diag))
        g = torch.tensor(self.g[:steps], dtype=dtype).unsqueeze(-1)
        return torch.linalg.solve_triangular(R, g, upper=True).squeeze(-1)


def arnoldi_step(V: torch.Tensor, j: int, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthogonalize w (B, n) against V[:, :j+1] by classical Gram–Schmidt twice (as accurate as
    modified Gram–Schmidt, two matrix products instead of a loop). Returns (h, ‖w‖, w)."""
    basis = V[:, : j + 1]
    h = torch.einsum("bkn,bn->bk", basis, w)
    w = w - torch.einsum("bkn,bk->bn", basis, h)
    correction = torch.einsum("bkn,bn->bk", basis, w)
    w = w - torch.einsum("bkn,bk->bn", basis, correction)
    return h + correction, w.norm(dim=-1), w


def gmres(A: Any, b: torch.Tensor, x0: torch.Tensor | None = None, *, rtol: float = 1e-5, atol: float = 0.0,
          restart: int = 20, maxiter: int | None = None, M: Any = None,
          callback: Callable[[torch.Tensor], Any] | None = None) -> KrylovResult:
    """Restarted GMRES(m), right-preconditioned: minimizes ‖b − A M⁻¹ u‖ over the Krylov space of
    A M⁻¹ and sets x = x₀ + M⁻¹u (Saad & Schultz 1986), so the monitored residual is the true
    one of A x = b. ``maxiter`` counts inner steps (products with A) over all restarts — unlike
    scipy, where it counts restart cycles. Each cycle starts from the recomputed residual, which
    decides success. The callback receives x after each cycle.
    """
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 1:
        raise ValueError(f"restart must be a positive int, got {restart!r}")
    problem = prepare(A, b, x0, rtol, atol, maxiter, M, callback, lambda n: 10 * n)
    ops, bb, x = problem.ops, problem.b, problem.x
    batch, n = bb.shape
    long = dict(dtype=torch.long, device=bb.device)
    status = torch.full((batch,), int(Status.MAX_ITER), **long)
    nit = torch.zeros(batch, **long)
    tiny = torch.finfo(bb.dtype).tiny
    restart = min(restart, n)
    total = 0
    r = bb - ops.A(x) if problem.x0_given else bb.clone()
    history: list[float] = []
    while True:
        beta = r.norm(dim=-1)
        history.append(float(beta.max()))
        finite = torch.isfinite(beta)
        status.masked_fill_(~finite, int(Status.NONFINITE))
        converged = finite & (beta <= problem.tol)
        status.masked_fill_(converged, int(Status.SUCCESS))
        active = finite & ~converged
        if not bool(active.any()) or total >= problem.maxiter:
            break
        m = min(restart, problem.maxiter - total)
        V = torch.zeros(batch, m + 1, n, dtype=bb.dtype, device=bb.device)
        V[:, 0] = r / col(beta.clamp(min=tiny))
        lsq = [GivensLeastSquares(float(beta[i])) for i in range(batch)]
        steps = [0] * batch
        running = active.tolist()
        for j in range(m):
            h, h_next, w = arnoldi_step(V, j, ops.A(ops.M(V[:, j])))
            V[:, j + 1] = w / col(h_next.clamp(min=tiny))
            column = torch.cat([h, h_next.unsqueeze(-1)], dim=-1).tolist()
            total += 1
            for i in range(batch):
                if not running[i]:
                    continue
                steps[i] += 1
                lucky = column[i][-1] <= 1e3 * tiny
                estimate = lsq[i].add_column(column[i])
                if estimate != estimate or estimate <= float(problem.tol[i]) or lucky:
                    running[i] = False  # NaN, converged (to be verified) or exact in this space
            if not any(running):
                break
        update = torch.zeros_like(bb)
        for i in range(batch):
            if steps[i] > 0:
                y = lsq[i].solve(steps[i], bb.dtype).to(bb.device)
                update[i] = y @ V[i, : steps[i]]
        nit += torch.tensor(steps, **long)
        x = x + ops.M(update)
        r = bb - ops.A(x)
        if call_back(problem, x):
            beta = r.norm(dim=-1)
            done = torch.isfinite(beta) & (beta <= problem.tol)
            status.masked_fill_(done, int(Status.SUCCESS))
            status.masked_fill_(~done & torch.isfinite(beta), int(Status.CALLBACK_STOP))
            return finish(problem, x, status, nit, beta, history)
    return finish(problem, x, status, nit, r.norm(dim=-1), history)


def bicgstab(A: Any, b: torch.Tensor, x0: torch.Tensor | None = None, *, rtol: float = 1e-5, atol: float = 0.0,
             maxiter: int | None = None, M: Any = None,
             callback: Callable[[torch.Tensor], Any] | None = None) -> KrylovResult:
    """BiCGSTAB (van der Vorst 1992), right-preconditioned: two products with A per iteration.

    ρ = r̂ᵀr = 0 or ω = 0 before convergence is a breakdown (``Status.BREAKDOWN``); recurrence
    convergence is verified on the true residual, with residual replacement (restart with
    r̂ = r) when rounding made them differ.
    """
    problem = prepare(A, b, x0, rtol, atol, maxiter, M, callback, lambda n: 10 * n)
    ops, bb, x = problem.ops, problem.b, problem.x
    batch = bb.shape[0]
    long = dict(dtype=torch.long, device=bb.device)
    status = torch.full((batch,), int(Status.MAX_ITER), **long)
    nit = torch.zeros(batch, **long)
    r = bb - ops.A(x) if problem.x0_given else bb.clone()
    rnorm = r.norm(dim=-1)
    true_norm = rnorm.clone()
    active = rnorm > problem.tol
    status.masked_fill_(~active, int(Status.SUCCESS))
    verified = ~active
    r_hat = r.clone()
    one = torch.ones(batch, dtype=bb.dtype, device=bb.device)
    rho_old, alpha, omega = one.clone(), one.clone(), one.clone()
    v, p = torch.zeros_like(bb), torch.zeros_like(bb)
    fresh = torch.ones_like(active)
    for _ in range(problem.maxiter):
        if not bool(active.any()):
            break
        rho = dot(r_hat, r)
        broken = active & (rho == 0)
        status.masked_fill_(broken, int(Status.BREAKDOWN))
        active = active & ~broken
        safe = lambda t: torch.where(t == 0, one, t)  # noqa: E731 - masked members only
        beta = (rho / safe(rho_old)) * (alpha / safe(omega))
        p = torch.where(col(fresh), r, r + col(beta) * (p - col(omega) * v))
        p_hat = ops.M(p)
        v = ops.A(p_hat)
        rv = dot(r_hat, v)
        broken = active & (rv == 0)
        status.masked_fill_(broken, int(Status.BREAKDOWN))
        active = active & ~broken
        alpha = torch.where(active, rho / safe(rv), torch.zeros_like(rho))
        s = r - col(alpha) * v
        s_hat = ops.M(s)
        t = ops.A(s_hat)
        tt = dot(t, t)
        omega = torch.where(active, dot(t, s) / safe(tt), torch.zeros_like(rho))
        x = x + torch.where(col(active), col(alpha) * p_hat + col(omega) * s_hat, torch.zeros_like(x))
        r = torch.where(col(active), s - col(omega) * t, r)
        nit += active.long()
        rho_old = rho
        rnorm = r.norm(dim=-1)
        nonfinite = active & ~torch.isfinite(rnorm)
        status.masked_fill_(nonfinite, int(Status.NONFINITE))
        active = active & ~nonfinite
        candidates = active & (rnorm <= problem.tol)
        fresh = torch.zeros_like(active)
        if bool(candidates.any()):
            r_true, ok, true_norm = accept_verified(problem, x, candidates, status, true_norm)
            verified = verified | ok
            active = active & ~ok
            fresh = candidates & ~ok
            r = torch.where(col(fresh), r_true, r)
            r_hat = torch.where(col(fresh), r_true, r_hat)
        stagnant = active & (omega == 0)
        status.masked_fill_(stagnant, int(Status.BREAKDOWN))
        active = active & ~stagnant
        if call_back(problem, x):
            status.masked_fill_(active, int(Status.CALLBACK_STOP))
            break
    residual = true_norm if bool(verified.all()) else (bb - ops.A(x)).norm(dim=-1)
    return finish(problem, x, status, nit, residual)
