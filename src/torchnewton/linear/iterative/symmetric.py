"""Conjugate gradients and MINRES with scipy's arguments, for one matrix and (B, n) right-hand sides.

Example:
    >>> import scipy.sparse as sp
    >>> A = sp.diags([[-1.0] * 9, [2.0] * 10, [-1.0] * 9], [-1, 0, 1]).tocsr()
    >>> result = cg(A, torch.ones(10, dtype=torch.float64), rtol=1e-10)
    >>> result.success, result.nit
    (True, 5)
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ...core.status import Status
from .common import KrylovResult, accept_verified, call_back, col, dot, finish, prepare
from .single import conjugate_gradient


def cg(A: Any, b: torch.Tensor, x0: torch.Tensor | None = None, *, rtol: float = 1e-5, atol: float = 0.0,
       maxiter: int | None = None, M: Any = None, callback: Callable[[torch.Tensor], Any] | None = None) -> KrylovResult:
    """Preconditioned conjugate gradients for symmetric positive definite A (Hestenes & Stiefel 1952).

    x_{j+1} = x_j + α_j p_j, α_j = r_jᵀz_j / p_jᵀAp_j, z = M⁻¹r, p_{j+1} = z_{j+1} + β_j p_j.
    When the recurrence residual meets the tolerance the true residual is computed; if it does
    not meet it (rounding drift), r is replaced by the true residual and the iteration restarts
    from x (residual replacement). pᵀAp ≤ 0 (A or M not positive definite) ends that member with
    ``Status.BREAKDOWN``; a non-finite value with ``Status.NONFINITE``. A callback returning
    True stops with ``Status.CALLBACK_STOP``.
    """
    problem = prepare(A, b, x0, rtol, atol, maxiter, M, callback, lambda n: 10 * n)
    ops, bb, x = problem.ops, problem.b, problem.x
    long = dict(dtype=torch.long, device=bb.device)
    batch = bb.shape[0]
    if batch == 1:  # the lean kernel: in-place updates, preallocated buffers, scalar bookkeeping
        user = problem.callback
        hook = None if user is None else (lambda v: user(v if problem.squeeze else v.unsqueeze(0)))
        out = conjugate_gradient(ops, bb[0], x[0].clone(), tol=float(problem.tol[0]), maxiter=problem.maxiter,
                                 callback=hook)
        return finish(problem, out.x.unsqueeze(0), torch.tensor([int(out.status)], **long),
                      torch.tensor([out.nit], **long),
                      torch.tensor([out.residual_norm], dtype=bb.dtype, device=bb.device))
    r = bb - ops.A(x) if problem.x0_given else bb.clone()
    status = torch.full((batch,), int(Status.MAX_ITER), **long)
    nit = torch.zeros(batch, **long)
    rnorm = r.norm(dim=-1)
    active = rnorm > problem.tol
    status.masked_fill_(~active, int(Status.SUCCESS))
    verified = ~active
    true_norm = rnorm.clone()
    z = ops.M(r)
    p = z.clone()
    rz = dot(r, z)
    x = x.clone()
    for _ in range(problem.maxiter):
        if not bool(active.any()):
            break
        Ap = ops.A(p)
        pAp = dot(p, Ap)
        nonfinite = active & ~torch.isfinite(pAp)
        indefinite = active & (pAp <= 0) & ~nonfinite
        status.masked_fill_(nonfinite, int(Status.NONFINITE))
        status.masked_fill_(indefinite, int(Status.BREAKDOWN))
        active = active & ~nonfinite & ~indefinite
        # inactive members get α = 0, so the in-place updates (no n-sized temporaries) leave them
        alpha = torch.where(active, rz / torch.where(active, pAp, torch.ones_like(pAp)), torch.zeros_like(rz))
        x.addcmul_(col(alpha), p)
        r.addcmul_(col(alpha), Ap, value=-1)
        nit += active.long()
        rnorm = r.norm(dim=-1)
        status.masked_fill_(active & ~torch.isfinite(rnorm), int(Status.NONFINITE))
        active = active & torch.isfinite(rnorm)
        restart = torch.zeros_like(active)
        candidates = active & (rnorm <= problem.tol)
        if bool(candidates.any()):
            r_true, ok, true_norm = accept_verified(problem, x, candidates, status, true_norm)
            verified = verified | ok
            active = active & ~ok
            restart = candidates & ~ok
            r = torch.where(col(restart), r_true, r)
        if call_back(problem, x):
            status.masked_fill_(active, int(Status.CALLBACK_STOP))
            break
        z = ops.M(r)
        rz_next = dot(r, z)
        beta = torch.where(restart | (rz == 0), torch.zeros_like(rz), rz_next / torch.where(rz == 0, torch.ones_like(rz), rz))
        p.mul_(col(beta)).add_(z)
        rz = torch.where(active, rz_next, rz)
    if bool(verified.all()):
        residual = true_norm  # every member was checked on a recomputed residual
    else:
        residual = (bb - ops.A(x)).norm(dim=-1)
    return finish(problem, x, status, nit, residual)


def minres(A: Any, b: torch.Tensor, x0: torch.Tensor | None = None, *, rtol: float = 1e-5, atol: float = 0.0,
           maxiter: int | None = None, M: Any = None, callback: Callable[[torch.Tensor], Any] | None = None) -> KrylovResult:
    """MINRES for symmetric (possibly indefinite) A with a symmetric positive definite M
    (Paige & Saunders 1975): Lanczos on M⁻¹A and Givens rotations minimize the residual over the
    Krylov space. The recurrence estimate (in the M⁻¹-norm) triggers a check of the true residual;
    if the true residual misses the tolerance, MINRES restarts from the current x.
    """
    problem = prepare(A, b, x0, rtol, atol, maxiter, M, callback, lambda n: 10 * n)
    ops, bb, x = problem.ops, problem.b, problem.x
    batch = bb.shape[0]
    long = dict(dtype=torch.long, device=bb.device)
    status = torch.full((batch,), int(Status.MAX_ITER), **long)
    nit = torch.zeros(batch, **long)
    eps = torch.finfo(bb.dtype).eps
    r_true = bb - ops.A(x) if problem.x0_given else bb.clone()
    active = r_true.norm(dim=-1) > problem.tol
    status.masked_fill_(~active, int(Status.SUCCESS))
    total = 0
    stop = False
    while bool(active.any()) and total < problem.maxiter and not stop:
        r1 = r_true
        y = ops.M(r1)
        beta1 = torch.sqrt(torch.clamp(dot(r1, y), min=0))
        # target for the M⁻¹-norm estimate, scaled from the 2-norm tolerance
        target = problem.tol * beta1 / r1.norm(dim=-1).clamp(min=torch.finfo(bb.dtype).tiny)
        zeros = torch.zeros(batch, dtype=bb.dtype, device=bb.device)
        old_beta, beta, dbar, epsilon, phibar = zeros, beta1, zeros, zeros, beta1
        cs, sn = -torch.ones_like(zeros), zeros
        w, w2, r2 = torch.zeros_like(bb), torch.zeros_like(bb), r1
        inner = active.clone()
        k = 0
        while bool(inner.any()) and total < problem.maxiter:
            safe_beta = torch.where(beta > 0, beta, torch.ones_like(beta))
            v = y / col(safe_beta)
            y = ops.A(v)
            if k > 0:
                y = y - col(beta / torch.where(old_beta > 0, old_beta, torch.ones_like(old_beta))) * r1
            alpha = dot(v, y)
            y = y - col(alpha / safe_beta) * r2
            r1, r2 = r2, y
            y = ops.M(r2)
            old_beta, beta = beta, torch.sqrt(torch.clamp(dot(r2, y), min=0))
            old_epsilon = epsilon
            delta = cs * dbar + sn * alpha
            gbar = sn * dbar - cs * alpha
            epsilon = sn * beta
            dbar = -cs * beta
            gamma = torch.clamp(torch.hypot(gbar, beta), min=eps)
            cs, sn = gbar / gamma, beta / gamma
            phi = cs * phibar
            phibar = sn * phibar
            w1, w2 = w2, w
            w = (v - col(old_epsilon) * w1 - col(delta) * w2) / col(gamma)
            x = torch.where(col(inner), x + col(phi) * w, x)
            nit += inner.long()
            total += 1
            k += 1
            nonfinite = inner & ~torch.isfinite(x).all(-1)
            status.masked_fill_(nonfinite, int(Status.NONFINITE))
            active = active & ~nonfinite
            inner = inner & ~nonfinite & (phibar > target) & (beta > eps * beta1)
            if call_back(problem, x):
                stop = True
                break
        r_true = bb - ops.A(x)
        ok = active & (r_true.norm(dim=-1) <= problem.tol)
        status.masked_fill_(ok, int(Status.SUCCESS))
        active = active & ~ok
        if stop:
            status.masked_fill_(active, int(Status.CALLBACK_STOP))
        elif bool(active.any()) and k <= 1 and bool((beta <= eps * beta1)[active].all()):
            status[active] = int(Status.BREAKDOWN)  # Krylov space exhausted without convergence
            break
    return finish(problem, x, status, nit, r_true.norm(dim=-1))
