"""Powell's dogleg trust-region method on ½‖F‖² (Gauss–Newton model), for least squares.

One problem on the CPU reads (p_GN, F, Jᵀ F, J) back once a step and takes the dogleg, the model
and the step length on floats (``_dogleg_one``): equal to the batch's iterates to round-off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ...core.status import Status
from ...globalize.damping import gauss_newton_step
from ...globalize.members import ops_for
from ...globalize.radius import gain_ratio, update_radius
from ...globalize.trust_region import dogleg, dogleg_floats
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from .termination import Termination
from ...linear.batched import matvec, rmatvec



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
        if o.batched:
            Jg = matvec(J, g)
            p = dogleg(newton, g, (Jg * Jg).sum(-1), state.radius)
            model = F + matvec(J, p)
            model_cost, step_norm = 0.5 * (model * model).sum(-1), torch.linalg.vector_norm(p, dim=-1)
        else:
            p, model_cost, step_norm = _dogleg_one(newton, J, F, g, o.value(state.radius))
        x_trial = x + p
        F_trial = problem.residual(x_trial)
        cost, cost_trial = o.value(state.cost), o.value(0.5 * (F_trial * F_trial).sum(-1))
        rho = gain_ratio(cost - cost_trial, cost - model_cost)
        accept = rho > self.accept_ratio
        x_new, F_new = o.where(accept, x_trial, x), o.where(accept, F_trial, F)
        J_new = o.where(accept, problem.jacobian(x_new), J) if o.any(accept) else J
        cost_new = o.where(accept, cost_trial, cost)
        radius = update_radius(o.value(state.radius), rho, step_norm)
        eps, tiny = torch.finfo(x.dtype).eps, torch.finfo(x.dtype).tiny
        stalled = radius <= eps * o.clamp(o.norm(x_new), min=1.0)
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


def _dogleg_one(newton: torch.Tensor, J: torch.Tensor, F: torch.Tensor, g: torch.Tensor,
                radius: float) -> tuple[torch.Tensor, float, float]:
    """The dogleg step of one problem on floats after one read-back of (p_GN, F, Jᵀ F, J): the
    curvature ‖J g‖², the legs, the model cost ½‖F + J p‖² and ‖p‖ cost no torch call for the
    small m × n of a single solve. Returns (p as a (1, n) tensor, model cost, ‖p‖)."""
    m, n = J.shape[-2:]
    flat = torch.cat([newton, g, F, J.reshape(1, -1)], -1).tolist()[0]
    gradient, residual = flat[n:2 * n], flat[2 * n:2 * n + m]
    rows = [flat[2 * n + m + i * n:2 * n + m + (i + 1) * n] for i in range(m)]
    curvature = sum(v * v for v in (sum(a * b for a, b in zip(row, gradient)) for row in rows))
    p = dogleg_floats(flat[:n], gradient, curvature, radius, torch.finfo(J.dtype).tiny)
    model = [r + sum(a * b for a, b in zip(row, p)) for r, row in zip(residual, rows)]
    return J.new_tensor([p]), 0.5 * sum(v * v for v in model), math.sqrt(sum(v * v for v in p))
