"""Newton's method with a backtracking line search on the merit ½‖F‖², for systems and least squares.

The Newton direction is a plug-in:

* ``"dense"``: J d = −F by Cholesky/LU with a regularized fallback (square systems);
* ``"least-squares"``: min ‖J d + F‖ by QR (Gauss–Newton for m ≥ n).

The matrix-free variant (GMRES on Jacobian-vector products) is ``newton_krylov.NewtonKrylov``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...core.status import Status
from ...globalize.damping import gauss_newton_step
from ...globalize.linesearch import armijo
from ...globalize.members import ops_for
from ...linear import solve_dense
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from .termination import Termination
from ...linear.batched import rmatvec



@dataclass
class NewtonState(ResidualState):
    J: torch.Tensor  # (B, m, n) Jacobian at x


@dataclass
class NewtonLineSearch:
    termination: Termination
    direction: str = "dense"
    c1: float = 1e-4
    max_backtracks: int = 40

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> NewtonState:
        F, J = problem.linearize(x0)
        return NewtonState(**initial_state(x0, F, rmatvec(J, F)), J=J)

    def _direction(self, problem: ResidualProblem, state: NewtonState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(d, slope = ∇(½‖F‖²)ᵀd, singular mask)."""
        x, F = state.x, state.F
        J = state.J
        problem.counters.nlinsolve += 1
        if self.direction == "dense":
            solution = solve_dense(J, -F)
            d, singular = solution.x, solution.status == int(Status.SINGULAR)
        else:
            d = gauss_newton_step(J, F)
            singular = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        grad = state.grad  # Jᵀ F, kept up to date by init and step
        # per-member scalars through ``o``: (B,) tensors, or Python floats for one problem (lean path)
        o = ops_for(x)
        slope = o.value((grad * d).sum(-1))
        # a regularized or inexact direction may fail to descend: fall back to steepest descent
        descent = slope < 0
        if o.batched or not descent:
            d = o.where(descent, d, -grad)
            slope = o.where(descent, slope, -o.value((grad * grad).sum(-1)))
        return d, slope, o.value(singular)

    def step(self, problem: ResidualProblem, state: NewtonState, running: torch.Tensor) -> NewtonState:
        d, slope, singular = self._direction(problem, state)
        x = state.x
        o = ops_for(x)

        # one problem's full step α = 1 needs no product (1·d is d, bitwise)
        scaled = (lambda alpha: o.column(alpha) * d) if o.batched else lambda alpha: d if alpha == 1.0 else alpha * d

        def merit(alpha):
            F = problem.residual(x + scaled(alpha))
            return o.value(0.5 * (F * F).sum(-1)), F

        # members already done are frozen by the loop: searching for them only costs evaluations
        search = armijo(merit, o.value(state.cost), slope, c1=self.c1, max_steps=self.max_backtracks,
                        active=(slope < 0) & o.value(running), aux0=state.F)
        ok, cost, cost_new = search.success, o.value(state.cost), search.value
        # α = 0 wherever the search failed, so x, F and the cost stay put there without masking
        step = scaled(search.alpha)
        x_new, F_new = x + step, search.aux
        reduction = o.where(ok, (cost - cost_new) / o.clamp(cost, min=torch.finfo(x.dtype).tiny), float("inf"))
        # an accepted step below the resolution of x changes nothing: the method has stalled
        stalled = ok & (o.value((x_new == x).all(-1)) if o.batched else ok and x_new.tolist() == x.tolist())
        failure = o.where(ok, o.value(state.failure), int(Status.LINESEARCH_FAILED))
        failure = o.where(stalled, int(Status.STALLED), failure)
        # ...and if NaN/Inf trial points forced it there, that is the honest reason
        failure = o.where((o.not_(ok) | stalled) & search.nonfinite, int(Status.NONFINITE), failure)
        # one problem whose search failed stays at x: its Jacobian and Jᵀ F are those of the state
        J = problem.jacobian(x_new) if o.batched or ok else state.J
        grad = rmatvec(J, F_new) if o.batched or ok else state.grad
        # one problem: a flag or code that stays as it was needs no new tensor
        keep = lambda value, field: field if not o.batched and value == o.value(field) else o.pack(value, field)
        return replace(state, x=x_new, F=F_new, cost=o.pack(cost_new, state.cost), grad=grad,
                       step_norm=o.pack(o.where(ok, o.value(step.norm(dim=-1)), float("inf")), state.step_norm),
                       reduction=o.pack(reduction, state.reduction), failure=keep(failure, state.failure),
                       regularized=keep(singular, state.regularized), J=J)

    def terminate(self, problem: ResidualProblem, state: NewtonState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: NewtonState) -> dict:
        return record(state)
