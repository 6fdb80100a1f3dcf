"""Levenberg–Marquardt for least squares and for square systems (as min ½‖F‖²).

Each step solves min ‖J p + F‖² + λ‖D p‖² (QR, see ``globalize.damping``), with Moré's scaling
D = diag of the largest column norms of J seen so far, and Nielsen's gain-ratio update of λ
(each member of a batch keeps its own λ).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..core.status import Status
from ..globalize.damping import levenberg_marquardt_step, update_damping
from ..globalize.trust_region import gain_ratio
from .residual_problem import ResidualProblem
from .residual_state import ResidualState, initial_state, record
from ..linear.batched import matvec, rmatvec

Termination = Callable[[ResidualState], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LevenbergMarquardtState(ResidualState):
    J: torch.Tensor
    damping: torch.Tensor
    nu: torch.Tensor


@dataclass
class LevenbergMarquardt:
    termination: Termination
    initial_damping: float = 1e-3
    accept_ratio: float = 1e-4

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> LevenbergMarquardtState:
        F, J = problem.linearize(x0)
        grad = rmatvec(J, F)
        batch = x0.shape[0]
        damping = torch.full((batch,), self.initial_damping, dtype=x0.dtype, device=x0.device)
        fields = initial_state(x0, F, grad)
        fields["scale"] = _column_norms(J)
        return LevenbergMarquardtState(**fields, J=J, damping=damping, nu=torch.full_like(damping, 2.0))

    def step(self, problem: ResidualProblem, state: LevenbergMarquardtState) -> LevenbergMarquardtState:
        x, F, J = state.x, state.F, state.J
        p = levenberg_marquardt_step(J, F, state.damping, state.scale)
        problem.counters.nlinsolve += 1
        x_trial = x + p
        F_trial = problem.residual(x_trial)
        cost_trial = 0.5 * (F_trial * F_trial).sum(-1)
        model = F + matvec(J, p)
        predicted = state.cost - 0.5 * (model * model).sum(-1)
        rho = gain_ratio(state.cost - cost_trial, predicted)
        accept = rho > self.accept_ratio
        col = accept.unsqueeze(-1)
        x_new = torch.where(col, x_trial, x)
        F_new = torch.where(col, F_trial, F)
        J_new = J
        if bool(accept.any()):
            J_new = torch.where(accept.view(-1, 1, 1), problem.jacobian(x_new), J)
        cost_new = torch.where(accept, cost_trial, state.cost)
        damping, nu = update_damping(state.damping, state.nu, torch.where(accept, rho, torch.zeros_like(rho)))
        tiny = torch.finfo(x.dtype).tiny
        reduction = torch.where(accept & (rho > 0.25), (state.cost - cost_new) / state.cost.clamp(min=tiny),
                                torch.full_like(cost_new, float("inf")))
        # λ beyond 1/eps means no step of representable size reduces the cost any more
        stalled = damping > 1 / torch.finfo(x.dtype).eps
        failure = torch.where(stalled, torch.full_like(state.failure, int(Status.STALLED)), state.failure)
        # stalling because every trial point was NaN/Inf is a non-finite failure, not a plateau
        failure = torch.where(stalled & ~torch.isfinite(cost_trial), torch.full_like(failure, int(Status.NONFINITE)), failure)
        return replace(state, x=x_new, F=F_new, J=J_new, cost=cost_new,
                       grad=rmatvec(J_new, F_new), step_norm=torch.where(torch.isfinite(cost_trial), (state.scale * p).norm(dim=-1), torch.full_like(cost_new, float("inf"))),
                       reduction=reduction, failure=failure, damping=damping, nu=nu,
                       scale=torch.maximum(state.scale, _column_norms(J_new)))

    def terminate(self, problem: ResidualProblem, state: LevenbergMarquardtState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: LevenbergMarquardtState) -> dict:
        return record(state)


def _column_norms(J: torch.Tensor) -> torch.Tensor:
    norms = J.norm(dim=-2)
    return torch.where(norms > 0, norms, torch.ones_like(norms))
