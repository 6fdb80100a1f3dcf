"""Sinkhorn–Newton–Sparse (SNS): Newton's method on the entropic OT dual with a sparsified Hessian.

Reference: X. Tang, M. Shavlovsky, H. Rahmanian, E. Tardini, K. K. Thekumparampil, T. Xiao,
L. Ying, "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024.

After ``warm_start_iters`` log-domain Sinkhorn iterations, each iteration maximizes the concave
dual ψ(f, g) = ⟨f, a⟩ + ⟨g, b⟩ − ε Σ_ij exp((f_i + g_j − C_ij)/ε) by a Newton step:

1. P = exp((f ⊕ g − C)/ε), gradient ∇ψ = (a − P1, b − Pᵀ1) — the O(nm) part, like Sinkhorn.
2. H̃ = [[diag(P1), P̃], [P̃ᵀ, diag(Pᵀ1)]] where P̃ keeps the ``per_row`` largest entries of each
   row of P (entries below a threshold proportional to ‖∇ψ‖_∞ are dropped as well). Near the
   solution P is close to a sparse matrix, so H̃ ≈ −ε∇²ψ (Tang et al., Sec. 5). Where the
   ``per_row`` largest entries hold less than 1 − ``max_dropped`` of P's mass (a diffuse plan:
   strong regularization), ``per_row`` doubles for the next step, since the dropped mass sets
   the linear rate the step degrades to.
3. Solve (H̃ + σI) d = ε∇ψ by Jacobi-preconditioned CG on the free coordinates (one potential
   fixed to remove the gauge direction, zero-mass entries excluded), to a forcing tolerance
   min(0.1, √(err/mass)). σ = ν·(err/mass)·mean(diag H̃) is a Levenberg shift; ν shrinks by 4
   when a full step achieves more than 3/4 of the increase the model predicts (gain ratio) and
   grows by 4 when the step had to be shortened or gained less than 1/4.
4. Armijo backtracking on −ψ. The increase ψ(x + αd) − ψ(x) = α⟨d, ∇ψ⟩ − ε Σ P_ij(e^{t} − 1 − t),
   t = α(d_i + d'_j)/ε, is evaluated in this form so it stays accurate when it is far below ψ's
   rounding level (close to convergence).
5. A member whose Newton step fails (CG breakdown, no ascent, line search failure) takes a
   Sinkhorn iteration instead, so every iteration increases ψ.

Continuation in ε. Far from the solution the dual's curvature changes on the scale ε, so at a very
small ε relative to the range of C neither a few Sinkhorn iterations nor Newton steps get close.
The method therefore starts at ε₀ = max(reg, (max C − min C)/``continuation_ratio``) (so for
reg ≥ range/ratio, e.g. the paper's settings, there is a single stage at reg) and divides ε by
``1/decay`` whenever the marginal error at the current ε is below ``stage_tol``·mass, keeping the
potentials (they are in units of C) as the next stage's start.

The method stops when ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ ≤ tol, reports ``STALLED`` when that error has not
improved for ``patience`` iterations (e.g. a tolerance below what the dtype can resolve), and
``NONFINITE`` if the potentials blow up.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.status import Status
from ..globalize.linesearch import armijo
from ..linear.krylov import cg
from ..linear.precond import jacobi
from . import dual
from .hessian import dual_hessian, free_coordinates, sparsify
from .problem import TransportProblem


@dataclass
class SparseNewtonState:
    """Potentials f (B, n), g (B, m); marginal ``error`` (B,); Levenberg factor ``nu`` (B,);
    ``warm_left`` Sinkhorn warm-start iterations still to do; ``n_newton`` accepted Newton steps;
    ``newton`` whether the last iteration was a Newton step; ``best_error`` and ``stall`` (the
    iterations since it last improved) for the stall test; ``nnz`` kept entries of P̃ last step;
    ``eps`` the current stage's regularization (B,); ``per_row`` entries kept per row of P̃ (B,)."""

    f: torch.Tensor
    g: torch.Tensor
    error: torch.Tensor
    nu: torch.Tensor
    warm_left: torch.Tensor
    n_newton: torch.Tensor
    newton: torch.Tensor
    best_error: torch.Tensor
    stall: torch.Tensor
    nnz: torch.Tensor
    eps: torch.Tensor
    per_row: torch.Tensor


def _entropy_excess(t: torch.Tensor) -> torch.Tensor:
    """e^t − 1 − t without cancellation: a Taylor series where |t| is small."""
    series = t * t * (0.5 + t * (1.0 / 6.0 + t / 24.0))
    return torch.where(t.abs() < 1e-3, series, torch.expm1(t) - t)


class SinkhornNewtonSparse:
    """The SNS iteration method (see the module docstring) for :func:`torchnewton.solvers.loop.iterate`.

    ``per_row``: entries of each row of P kept in H̃; ``drop_tol``: entries below
    drop_tol·‖∇ψ‖_∞ are dropped too; ``cg_max_iter``: CG iterations per Newton step (default 5(n + m));
    ``shift0``: initial Levenberg factor ν; ``patience``: iterations without progress before
    ``STALLED``; ``max_backtracks``: trial steps of the line search; ``continuation_ratio``,
    ``decay``, ``stage_tol``: the ε continuation; ``max_dropped``: see step 2 (module docstring).
    """

    def __init__(self, tol: float, *, warm_start_iters: int, per_row: int, drop_tol: float = 1e-3,
                 cg_max_iter: int | None = None, shift0: float = 1.0, patience: int = 50,
                 max_backtracks: int = 20, continuation_ratio: float = 100.0, decay: float = 0.25,
                 stage_tol: float = 1e-3, max_dropped: float = 1e-2):
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.tol, self.warm_start_iters, self.per_row = tol, warm_start_iters, per_row
        self.drop_tol, self.cg_max_iter, self.shift0 = drop_tol, cg_max_iter, shift0
        self.patience, self.max_backtracks = patience, max_backtracks
        self.continuation_ratio, self.decay, self.stage_tol = continuation_ratio, decay, stage_tol
        self.max_dropped = max_dropped

    def init(self, problem: TransportProblem, x0: torch.Tensor) -> SparseNewtonState:
        """``x0`` is the initial g (B, m); f starts as its Sinkhorn update, so P1 = a."""
        spread = problem.C.amax(dim=(-1, -2)) - problem.C.amin(dim=(-1, -2))
        eps = torch.maximum(problem.reg, spread / self.continuation_ratio)
        f = dual.update_f(problem, dual.row_logsumexp(problem, x0, eps), eps)
        cols = torch.exp(x0 / eps.unsqueeze(-1) + dual.col_logsumexp(problem, f, eps))
        error = (cols - problem.b).abs().sum(-1)
        long = torch.zeros_like(error, dtype=torch.long)
        return SparseNewtonState(f=f, g=x0, error=error, nu=torch.full_like(error, self.shift0),
                                 warm_left=long + self.warm_start_iters, n_newton=long,
                                 newton=torch.zeros_like(error, dtype=torch.bool), best_error=error,
                                 stall=long, nnz=long, eps=eps, per_row=long + self.per_row)

    def step(self, problem: TransportProblem, state: SparseNewtonState, running: torch.Tensor) -> SparseNewtonState:
        use_newton = state.warm_left <= 0
        f, g, error, nu, nnz, per_row = state.f, state.g, state.error, state.nu, state.nnz, state.per_row
        accepted = torch.zeros_like(use_newton)
        if bool(use_newton.any()):
            nf, ng, nerror, accepted, nu, nnz, per_row = self._newton_step(problem, state, use_newton)
            f = torch.where(accepted.unsqueeze(-1), nf, f)
            g = torch.where(accepted.unsqueeze(-1), ng, g)
            error = torch.where(accepted, nerror, error)
        sinkhorn = ~accepted
        if bool(sinkhorn.any()):
            sf, sg, serror = dual.sinkhorn_sweep(problem, state.g, state.eps)
            f = torch.where(sinkhorn.unsqueeze(-1), sf, f)
            g = torch.where(sinkhorn.unsqueeze(-1), sg, g)
            error = torch.where(sinkhorn, serror, error)
        improved = error < state.best_error
        best_error = torch.minimum(error, state.best_error)
        stall = torch.where(improved, torch.zeros_like(state.stall), state.stall + 1)
        eps = state.eps
        advance = (eps > problem.reg) & (error <= self.stage_tol * problem.mass)
        if bool(advance.any()):
            eps = torch.where(advance, torch.maximum(eps * self.decay, problem.reg), eps)
            # A Sinkhorn sweep at the new ε restores the marginals, which a smaller ε with the same
            # potentials would put far off (P changes like P^(ε_old/ε_new)).
            sf, sg, serror = dual.sinkhorn_sweep(problem, g, eps)
            f = torch.where(advance.unsqueeze(-1), sf, f)
            g = torch.where(advance.unsqueeze(-1), sg, g)
            error = torch.where(advance, serror, error)
            best_error = torch.where(advance, error, best_error)
            stall = torch.where(advance, torch.zeros_like(stall), stall)
        return SparseNewtonState(
            f=f, g=g, error=error, nu=nu, warm_left=state.warm_left - (~use_newton).long(),
            n_newton=state.n_newton + accepted.long(), newton=accepted, best_error=best_error,
            stall=stall, nnz=nnz, eps=eps, per_row=per_row)

    def _newton_step(self, problem: TransportProblem, state: SparseNewtonState, active: torch.Tensor):
        """One globalized sparse Newton step for the ``active`` members.

        Returns (f, g, error, accepted, nu, nnz, per_row); ``accepted`` is false where it failed.
        """
        eps = state.eps
        n, m = problem.a.shape[-1], problem.b.shape[-1]
        log_p = dual.log_plan(problem, state.f, state.g, eps)
        plan = torch.exp(log_p)
        rows, cols = plan.sum(-1), plan.sum(-2)
        free = free_coordinates(problem.a, problem.b)
        weight = free.to(plan.dtype)
        grad = weight * torch.cat([problem.a - rows, problem.b - cols], dim=-1)
        relative = dual.marginal_error(problem, rows, cols) / problem.mass
        mean_diagonal = 2 * problem.mass / (n + m)
        shift = state.nu * relative * mean_diagonal
        per_row = int(state.per_row[active].max())
        sparse = sparsify(log_p, per_row, self.drop_tol * grad.abs().amax(-1))
        dropped = 1 - sparse.top_mass / plan.sum(dim=(-1, -2))
        grow = active & (dropped > self.max_dropped)
        next_per_row = torch.where(grow, torch.clamp(state.per_row * 2, max=m), state.per_row)
        operator = dual_hessian(rows, cols, sparse.matvec, sparse.rmatvec, free, shift)
        rtol = torch.clamp(relative.sqrt(), max=0.1)
        solution = cg(operator, eps.unsqueeze(-1) * grad, preconditioner=jacobi(operator), rtol=rtol,
                      max_iter=self.cg_max_iter or 5 * (n + m))
        direction = weight * solution.x
        usable = (active & torch.isfinite(direction).all(-1) & (solution.status != int(Status.BREAKDOWN)))
        direction = torch.where(usable.unsqueeze(-1), direction, torch.zeros_like(direction))
        ascent = (direction * grad).sum(-1)
        usable = usable & (ascent > 0)
        d_f, d_g = direction[:, :n], direction[:, n:]
        scaled = (d_f.unsqueeze(-1) + d_g.unsqueeze(-2)) / eps.view(-1, 1, 1)

        def negated_increase(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            t = alpha.view(-1, 1, 1) * scaled
            increase = alpha * ascent - eps * (plan * _entropy_excess(t)).sum(dim=(-1, -2))
            moved = plan * torch.expm1(t)
            return -increase, torch.cat([rows + moved.sum(-1), cols + moved.sum(-2)], dim=-1)

        search = armijo(negated_increase, torch.zeros_like(ascent), -ascent, alpha0=1.0,
                        max_steps=self.max_backtracks, active=usable)
        accepted = search.success & usable
        alpha = search.alpha.unsqueeze(-1)
        marginals = search.aux if search.aux is not None else torch.cat([rows, cols], dim=-1)
        error = dual.marginal_error(problem, marginals[:, :n], marginals[:, n:])
        # Gain ratio of the full step against the unshifted sparse model ⟨d,∇ψ⟩ − dᵀH̃d/(2ε).
        curvature = (direction * operator.matvec(direction)).sum(-1) - shift * (direction * direction).sum(-1)
        predicted = ascent - curvature / (2 * eps)
        gain = -search.value / torch.where(predicted > 0, predicted, torch.ones_like(predicted))
        full = accepted & (search.alpha == 1)
        good = full & (gain > 0.75)
        poor = active & (~full | (gain < 0.25))
        nu = torch.where(good, torch.clamp(state.nu / 4, min=1e-6), state.nu)
        nu = torch.where(poor, torch.clamp(state.nu * 4, max=1e8), nu)
        return (state.f + alpha * d_f, state.g + alpha * d_g, error, accepted, nu,
                torch.where(active, sparse.nnz, state.nnz), next_per_row)

    def terminate(self, problem: TransportProblem, state: SparseNewtonState) -> tuple[torch.Tensor, torch.Tensor]:
        nonfinite = ~torch.isfinite(state.error)
        converged = (state.error <= self.tol) & (state.eps <= problem.reg)
        stalled = state.stall >= self.patience
        code = torch.full_like(state.stall, int(Status.STALLED))
        code = torch.where(nonfinite, torch.full_like(code, int(Status.NONFINITE)), code)
        code = torch.where(converged, torch.full_like(code, int(Status.SUCCESS)), code)
        return converged | stalled | nonfinite, code

    def record(self, problem: TransportProblem, state: SparseNewtonState) -> dict[str, torch.Tensor]:
        return {"marginal_error": state.error.clone(), "newton": state.newton.clone(),
                "nnz": state.nnz.clone(), "shift_factor": state.nu.clone(), "reg": state.eps.clone(),
                "per_row": state.per_row.clone()}
