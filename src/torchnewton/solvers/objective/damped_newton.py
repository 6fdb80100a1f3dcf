"""Damped Newton methods with affine-invariant step sizes: AICN, Root-Newton schedules, backtracking.

All variants step x⁺ = x − α·n with the Newton direction n = H⁻¹∇f (H shifted to be positive
definite where it is not, ``globalize.hessian_modification``) and choose α from the gradient's
local norm G = ‖∇f(x)‖*ₓ = √(∇fᵀH⁻¹∇f) (the Newton decrement), never from a line search on f:

* ``"aicn"``: α = (−1 + √(1 + 2L·G)) / (L·G) = 2 / (1 + √(1 + 2L·G)), the affine-invariant cubic
  Newton step (Hanzely et al. 2022, "A damped Newton method achieves global O(1/k²) and local
  quadratic convergence rate"): the minimizer of the cubic model in the local norm, along n.
* ``"root"``: α = 1/(1 + θ) with θ = (9M)^{1/(q−1)} G^{(q−2)/(q−1)} (Hanzely, Abdukhakimov & Takáč,
  "Newton method revisited: global convergence rates up to O(k⁻³) for stepsize schedules and
  linesearch procedures", the RN schedule): for q = 4 (Hölder-continuous third derivative) the
  global rate is O(k⁻³); q = 3 is the Lipschitz-Hessian case, O(k⁻²).
* ``"backtracking"`` (their UN procedure): the same θ with an unknown constant M, raised by
  ρ until ⟨∇f(x⁺), n⟩ ≥ ‖∇f(x⁺)‖*ₓ² / (2αθ) and f(x⁺) ≤ f(x) (the second test is a safeguard for
  nonconvex f), then lowered by ρ for the next iteration so the estimate can adapt downwards.

The constant (L or M) is the option ``smoothness``; every member of a batch keeps its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.linalg import vector_norm

from ...core.status import Status
from ...globalize.hessian_modification import shifted_cholesky
from ...globalize.members import FloatOps, TensorOps, ops_for
from .problem import ObjectiveProblem
from ..evolve import evolve
from .state import ObjectiveState, initial_fields, record
from .termination import Termination

SCHEDULES = ("backtracking", "aicn", "root")


@dataclass
class DampedNewtonState(ObjectiveState):
    smoothness: torch.Tensor  # (B,) L (aicn) or M (root, backtracking)
    stepsize: torch.Tensor  # (B,) the last α


@dataclass
class DampedNewton:
    termination: Termination
    schedule: str = "backtracking"
    smoothness: float = 1.0
    order: float = 4.0
    backtrack_factor: float = 2.0
    max_backtracks: int = 60

    def init(self, problem: ObjectiveProblem, x0: torch.Tensor) -> DampedNewtonState:
        f, g = problem.value_and_grad(x0)
        return DampedNewtonState(**initial_fields(x0, f, g), smoothness=torch.full_like(f, self.smoothness),
                                 stepsize=torch.zeros_like(f))

    def _stepsize(self, G, smoothness, o=TensorOps):
        """(α, θ) of the schedule for local gradient norm G (per-member scalars of ``o``)."""
        if self.schedule == "aicn":
            alpha = 2 / (1 + o.sqrt(1 + 2 * smoothness * G))
            return alpha, 1 / alpha - 1
        q = self.order
        theta = o.power(9 * smoothness, 1 / (q - 1)) * o.power(G, (q - 2) / (q - 1))
        return 1 / (1 + theta), theta

    def step(self, problem: ObjectiveProblem, state: DampedNewtonState, running: torch.Tensor) -> DampedNewtonState:
        x, g = state.x, state.g
        factor, _ = shifted_cholesky(problem.hessian(x))
        problem.counters.nlinsolve += 1
        newton = factor.solve(g)
        if self.schedule == "backtracking" and not ops_for(x).batched:  # one member: √ of its float
            return self._backtrack(problem, state, factor, newton, FloatOps.sqrt(max((g * newton).sum(-1).item(), 0.0)))
        G = torch.sqrt(torch.clamp((g * newton).sum(-1), min=0))
        if self.schedule != "backtracking":
            alpha, _ = self._stepsize(G, state.smoothness)
            x_new = x - alpha.unsqueeze(-1) * newton
            # ∇f pulled from f's graph, its own graph kept by the problem: the next step's Hessian
            # at x_new is then one backward pass, without evaluating f again
            f_new, gradient_at_new = problem.value_then_gradient(x_new)
            g_new = gradient_at_new()
            return evolve(state, x=x_new, f=f_new, g=g_new, step_norm=alpha * vector_norm(newton, dim=-1), stepsize=alpha)
        return self._backtrack(problem, state, factor, newton, G)

    def _backtrack(self, problem: ObjectiveProblem, state: DampedNewtonState, factor, newton: torch.Tensor,
                   G: torch.Tensor | float) -> DampedNewtonState:
        # per-member scalars through ``o``: (B,) tensors, or Python floats for one problem (lean path)
        o = ops_for(state.x)
        x, tiny = state.x, torch.finfo(state.x.dtype).tiny
        # one read-back for the member's scalars (and one per trial below)
        if o.batched:
            G, f0, smoothness, newton_norm = G, state.f, state.smoothness, vector_norm(newton, dim=-1)
        else:
            f0, smoothness, newton_norm = o.values(state.f, state.smoothness, vector_norm(newton, dim=-1))
        smoothness = smoothness / self.backtrack_factor
        searching = torch.ones_like(state.f, dtype=torch.bool) if o.batched else True
        x_new, f_new, g_new, alpha_new = x, state.f, state.g, o.full(f0, 0.0)
        for _ in range(self.max_backtracks):
            alpha, theta = self._stepsize(G, smoothness, o)
            trial = x - o.column(alpha) * newton
            f_trial, gradient_at_trial = problem.value_then_gradient(trial)
            g_trial = gradient_at_trial()  # its graph kept: the accepted (last) trial's Hessian reuses it
            # ‖∇f(x⁺)‖*ₓ², ∇f(x⁺)ᵀΔ, f(x⁺)
            local, slope, value = o.values((g_trial * factor.solve(g_trial)).sum(-1), (g_trial * newton).sum(-1), f_trial)
            progress = slope >= local / o.clamp(2 * alpha * theta, min=tiny)
            ok = searching & o.isfinite(value) & o.isfinite(local) & progress & (value <= f0)
            if o.batched:
                col = ok.unsqueeze(-1)
                x_new, f_new, g_new = torch.where(col, trial, x_new), torch.where(ok, f_trial, f_new), torch.where(col, g_trial, g_new)
            elif ok:
                x_new, f_new, g_new = trial, f_trial, g_trial
            alpha_new = o.where(ok, alpha, alpha_new)
            searching = searching & o.not_(ok)
            if not o.any(searching):
                break
            smoothness = o.where(searching, smoothness * self.backtrack_factor, smoothness)
        failure = o.where(searching, int(Status.LINESEARCH_FAILED), o.value(state.failure))
        step_norm = alpha_new * newton_norm
        return evolve(state, x=x_new, f=f_new, g=g_new, step_norm=o.pack(step_norm, state.step_norm),
                      failure=o.pack(failure, state.failure), smoothness=o.pack(smoothness, state.smoothness),
                      stepsize=o.pack(alpha_new, state.stepsize))

    def terminate(self, problem: ObjectiveProblem, state: DampedNewtonState):
        return self.termination(state)

    def record(self, problem: ObjectiveProblem, state: DampedNewtonState) -> dict:
        return {**record(state), "stepsize": state.stepsize.detach().clone()}
