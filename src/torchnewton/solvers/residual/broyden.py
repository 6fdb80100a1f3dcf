"""Broyden's ("good") quasi-Newton method for F(x) = 0 with an Armijo search on ½‖F‖².

The inverse Jacobian estimate H starts from the true Jacobian and takes the rank-one update
H ← H + (s − H y) sᵀH / (sᵀH y) (Broyden 1965, via Sherman–Morrison). When a quasi-Newton
direction fails the line search the member refreshes H from the true Jacobian; failing again
right after a refresh is a genuine line-search failure.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ...core.status import Status
from ...globalize.linesearch import armijo
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from ...linear.batched import matvec, rmatvec

Termination = Callable[[ResidualState], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class BroydenState(ResidualState):
    H: torch.Tensor  # (B, n, n) inverse Jacobian estimate
    fresh: torch.Tensor  # (B,) H was just computed from the true Jacobian


@dataclass
class Broyden:
    termination: Termination
    c1: float = 1e-4
    max_backtracks: int = 10

    def _inverse_jacobian(self, problem: ResidualProblem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """J⁻¹ by SVD; singular values below n·eps·σ_max are dropped (pseudo-inverse) and flagged."""
        U, sigma, Vh = torch.linalg.svd(problem.jacobian(x))
        problem.counters.nlinsolve += 1
        cutoff = x.shape[-1] * torch.finfo(x.dtype).eps * sigma[..., :1]
        kept = sigma > cutoff
        inverse_sigma = torch.where(kept, 1 / torch.where(kept, sigma, torch.ones_like(sigma)), torch.zeros_like(sigma))
        H = Vh.transpose(-1, -2) @ (inverse_sigma.unsqueeze(-1) * U.transpose(-1, -2))
        return H, ~kept.all(-1)

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> BroydenState:
        F = problem.residual(x0)
        H, singular = self._inverse_jacobian(problem, x0)
        fresh = torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device)
        fields = initial_state(x0, F)
        fields["regularized"] = singular
        return BroydenState(**fields, H=H, fresh=fresh)

    def step(self, problem: ResidualProblem, state: BroydenState, running: torch.Tensor) -> BroydenState:
        x, F, H = state.x, state.F, state.H
        d = -matvec(H, F)

        def merit(alpha: torch.Tensor):
            F_trial = problem.residual(x + alpha.unsqueeze(-1) * d)
            return 0.5 * (F_trial * F_trial).sum(-1), F_trial

        # with the exact Jacobian the slope of ½‖F‖² along d is −‖F‖²; H approximates it
        # members already done are frozen by the loop: searching for them only costs evaluations
        search = armijo(merit, state.cost, -2 * state.cost, c1=self.c1, max_steps=self.max_backtracks,
                        active=running)
        ok = search.success
        s = search.alpha.unsqueeze(-1) * d
        x_new = torch.where(ok.unsqueeze(-1), x + s, x)
        F_new = torch.where(ok.unsqueeze(-1), search.aux, F)
        y = F_new - F
        Hy = matvec(H, y)
        sH = rmatvec(H, s)
        denom = (s * Hy).sum(-1)
        usable = ok & (denom.abs() > torch.finfo(x.dtype).eps * s.norm(dim=-1) * Hy.norm(dim=-1))
        update = (s - Hy).unsqueeze(-1) * sH.unsqueeze(-2) / torch.where(usable, denom, torch.ones_like(denom)).view(-1, 1, 1)
        H_new = torch.where(usable.view(-1, 1, 1), H + update, H)
        refresh = ~ok & ~state.fresh & running
        regularized = state.regularized
        if bool(refresh.any()):
            H_true, singular = self._inverse_jacobian(problem, x)
            H_new = torch.where(refresh.view(-1, 1, 1), H_true, H_new)
            regularized = torch.where(refresh, singular, regularized)
        failed = ~ok & state.fresh & running
        failure = torch.where(failed, torch.full_like(state.failure, int(Status.LINESEARCH_FAILED)), state.failure)
        stalled = ok & (x_new == x).all(-1)
        failure = torch.where(stalled, torch.full_like(failure, int(Status.STALLED)), failure)
        failure = torch.where((failed | stalled) & search.nonfinite, torch.full_like(failure, int(Status.NONFINITE)), failure)
        cost_new = torch.where(ok, search.value, state.cost)
        tiny = torch.finfo(x.dtype).tiny
        return replace(state, x=x_new, F=F_new, cost=cost_new, step_norm=s.norm(dim=-1),
                       reduction=(state.cost - cost_new) / state.cost.clamp(min=tiny), failure=failure,
                       regularized=regularized, H=H_new, fresh=refresh)

    def terminate(self, problem: ResidualProblem, state: BroydenState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: BroydenState) -> dict:
        return record(state)
