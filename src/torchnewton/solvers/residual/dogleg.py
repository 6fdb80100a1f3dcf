"""Powell's hybrid (dogleg) trust-region method on ½‖F‖², as in MINPACK's hybrj."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ...core.status import Status
from ...globalize.damping import gauss_newton_step
from ...globalize.members import ops_for
from ...globalize.radius import gain_ratio, update_radius
from ...globalize.trust_region import dogleg
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from .termination import norm
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
        # per-member scalars through ``o``: (B,) tensors, or Python floats for one problem (lean path)
        o = ops_for(state.x)
        x, F, J, g = state.x, state.F, state.J, state.grad
        newton = gauss_newton_step(J, F)
        problem.counters.nlinsolve += 1
        Jg = matvec(J, g)
        p = dogleg(newton, g, (Jg * Jg).sum(-1), state.radius)
        x_trial = x + p
        F_trial = problem.residual(x_trial)
        cost, cost_trial = o.value(state.cost), o.value(0.5 * (F_trial * F_trial).sum(-1))
        model = F + matvec(J, p)
        rho = gain_ratio(cost - cost_trial, cost - o.value(0.5 * (model * model).sum(-1)))
        step_norm = o.value(torch.linalg.vector_norm(p, dim=-1))
        accept = rho > self.accept_ratio
        x_new, F_new = o.where(accept, x_trial, x), o.where(accept, F_trial, F)
        J_new = o.where(accept, problem.jacobian(x_new), J) if o.any(accept) else J
        cost_new = o.where(accept, cost_trial, cost)
        radius = update_radius(o.value(state.radius), rho, step_norm)
        eps, tiny = torch.finfo(x.dtype).eps, torch.finfo(x.dtype).tiny
        stalled = radius <= eps * o.clamp(norm(o, x_new), min=1.0)
        finite = o.isfinite(cost_trial)
        failure = o.where(stalled, int(Status.STALLED), o.value(state.failure))
        # stalling because every trial point was NaN/Inf is a non-finite failure, not a plateau
        failure = o.where(stalled & o.not_(finite), int(Status.NONFINITE), failure)
        reduction = o.where(accept & (rho > 0.25), (cost - cost_new) / o.clamp(cost, min=tiny), float("inf"))
        grad = rmatvec(J_new, F_new) if o.batched or accept else g
        return replace(state, x=x_new, F=F_new, J=J_new, cost=o.pack(cost_new, state.cost), grad=grad,
                       step_norm=o.pack(o.where(finite, step_norm, float("inf")), state.step_norm),
                       reduction=o.pack(reduction, state.reduction), failure=o.pack(failure, state.failure),
                       radius=o.pack(radius, state.radius))

    def terminate(self, problem: ResidualProblem, state: DoglegState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: DoglegState) -> dict:
        return record(state)
