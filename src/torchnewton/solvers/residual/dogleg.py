"""Powell's hybrid (dogleg) trust-region method on ½‖F‖², as in MINPACK's hybrj."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ...core.status import Status
from ...globalize.damping import levenberg_marquardt_step
from ...globalize.radius import gain_ratio, update_radius
from ...globalize.trust_region import dogleg
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from ...linear.batched import matvec, rmatvec

Termination = Callable[[ResidualState], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class DoglegState(ResidualState):
    J: torch.Tensor
    radius: torch.Tensor


@dataclass
class PowellDogleg:
    termination: Termination
    accept_ratio: float = 1e-4

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> DoglegState:
        F, J = problem.linearize(x0)
        grad = rmatvec(J, F)
        radius = torch.clamp(100 * x0.norm(dim=-1), min=1.0)
        return DoglegState(**initial_state(x0, F, grad), J=J, radius=radius)

    def step(self, problem: ResidualProblem, state: DoglegState, running: torch.Tensor) -> DoglegState:
        x, F, J, g = state.x, state.F, state.J, state.grad
        zeros = torch.zeros_like(state.radius)
        newton = levenberg_marquardt_step(J, F, zeros, torch.ones_like(x))  # Gauss–Newton step
        problem.counters.nlinsolve += 1
        Jg = matvec(J, g)
        p = dogleg(newton, g, (Jg * Jg).sum(-1), state.radius)
        x_trial = x + p
        F_trial = problem.residual(x_trial)
        cost_trial = 0.5 * (F_trial * F_trial).sum(-1)
        model = F + matvec(J, p)
        rho = gain_ratio(state.cost - cost_trial, state.cost - 0.5 * (model * model).sum(-1))
        step_norm = p.norm(dim=-1)
        accept = rho > self.accept_ratio
        col = accept.unsqueeze(-1)
        x_new, F_new = torch.where(col, x_trial, x), torch.where(col, F_trial, F)
        J_new = torch.where(accept.view(-1, 1, 1), problem.jacobian(x_new), J) if bool(accept.any()) else J
        cost_new = torch.where(accept, cost_trial, state.cost)
        radius = update_radius(state.radius, rho, step_norm)
        eps = torch.finfo(x.dtype).eps
        stalled = radius <= eps * torch.clamp(x_new.norm(dim=-1), min=1.0)
        failure = torch.where(stalled, torch.full_like(state.failure, int(Status.STALLED)), state.failure)
        # stalling because every trial point was NaN/Inf is a non-finite failure, not a plateau
        failure = torch.where(stalled & ~torch.isfinite(cost_trial), torch.full_like(failure, int(Status.NONFINITE)), failure)
        tiny = torch.finfo(x.dtype).tiny
        reduction = torch.where(accept & (rho > 0.25), (state.cost - cost_new) / state.cost.clamp(min=tiny),
                                torch.full_like(cost_new, float("inf")))
        return replace(state, x=x_new, F=F_new, J=J_new, cost=cost_new,
                       grad=rmatvec(J_new, F_new), step_norm=torch.where(torch.isfinite(cost_trial), p.norm(dim=-1), torch.full_like(cost_new, float("inf"))),
                       reduction=reduction, failure=failure, radius=radius)

    def terminate(self, problem: ResidualProblem, state: DoglegState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: DoglegState) -> dict:
        return record(state)
