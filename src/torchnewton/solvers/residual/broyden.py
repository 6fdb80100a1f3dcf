"""Broyden's ("good") quasi-Newton method for F(x) = 0 with an Armijo search on ½‖F‖².

The inverse Jacobian estimate H starts from the true Jacobian and takes the rank-one update
H ← H + (s − H y) sᵀH / (sᵀH y) (Broyden 1965, via Sherman–Morrison). When a quasi-Newton
direction fails the line search the member refreshes H from the true Jacobian; failing again
right after a refresh is a genuine line-search failure. One problem on the CPU keeps its scalars
(costs, flags, the secant denominator) as Python floats (``globalize.members``): the same
arithmetic as the batch, without masks.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...core.status import Status
from ...globalize.linesearch import armijo
from ...globalize.members import ops_for
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from .termination import Termination
from ...linear.batched import matvec, rmatvec



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
        # per-member scalars through ``o``: (B,) tensors, or Python floats for one problem (lean path)
        o = ops_for(x)
        d = -matvec(H, F)

        def merit(alpha):
            F_trial = problem.residual(x + o.column(alpha) * d)
            return o.value(0.5 * (F_trial * F_trial).sum(-1)), F_trial

        # with the exact Jacobian the slope of ½‖F‖² along d is −‖F‖²; H approximates it
        # members already done are frozen by the loop: searching for them only costs evaluations
        cost, live, fresh = o.value(state.cost), o.value(running), o.value(state.fresh)
        search = armijo(merit, cost, -2 * cost, c1=self.c1, max_steps=self.max_backtracks, active=live)
        ok = search.success
        s = o.column(search.alpha) * d
        if o.batched:
            x_new = torch.where(ok.unsqueeze(-1), x + s, x)
            F_new = torch.where(ok.unsqueeze(-1), search.aux, F)
        else:
            x_new, F_new = (x + s, search.aux) if ok else (x, F)
        H_new = self._update(H, s, F_new - F, ok, o) if o.batched or ok else H
        refresh = o.not_(ok) & o.not_(fresh) & live
        regularized = state.regularized
        if o.any(refresh):
            H_true, singular = self._inverse_jacobian(problem, x)
            H_new = o.where(refresh, H_true, H_new)
            regularized = o.where(refresh, singular, regularized)
        failed = o.not_(ok) & fresh & live
        failure = o.where(failed, int(Status.LINESEARCH_FAILED), o.value(state.failure))
        stalled = ok & o.value((x_new == x).all(-1))
        failure = o.where(stalled, int(Status.STALLED), failure)
        failure = o.where((failed | stalled) & search.nonfinite, int(Status.NONFINITE), failure)
        cost_new = o.where(ok, search.value, cost)
        reduction = (cost - cost_new) / o.clamp(cost, min=torch.finfo(x.dtype).tiny)
        return replace(state, x=x_new, F=F_new, cost=o.pack(cost_new, state.cost), step_norm=s.norm(dim=-1),
                       reduction=o.pack(reduction, state.reduction), failure=o.pack(failure, state.failure),
                       regularized=regularized, H=H_new, fresh=o.pack(refresh, state.fresh))

    @staticmethod
    def _update(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, ok, o) -> torch.Tensor:
        """The rank-one update of H where the step was taken and sᵀH y is not negligible."""
        Hy = matvec(H, y)
        sH = rmatvec(H, s)
        denom = o.value((s * Hy).sum(-1))
        negligible = o.value(torch.finfo(H.dtype).eps * s.norm(dim=-1) * Hy.norm(dim=-1))
        usable = ok & (abs(denom) > negligible)
        if not o.batched:
            return H + (s - Hy).unsqueeze(-1) * sH.unsqueeze(-2) / denom if usable else H
        update = (s - Hy).unsqueeze(-1) * sH.unsqueeze(-2) / torch.where(usable, denom, torch.ones_like(denom)).view(-1, 1, 1)
        return torch.where(usable.view(-1, 1, 1), H + update, H)

    def terminate(self, problem: ResidualProblem, state: BroydenState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: BroydenState) -> dict:
        return record(state)
