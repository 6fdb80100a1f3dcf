"""Newton's method with a backtracking line search on the merit ½‖F‖², for systems and least squares.

The Newton direction is a plug-in:

* ``"dense"``: J d = −F by Cholesky/LU with a regularized fallback (square systems);
* ``"least-squares"``: min ‖J d + F‖ by QR (Gauss–Newton for m ≥ n);
* ``"krylov"``: J d = −F by restarted GMRES on Jacobian-vector products, never forming J, with
  Eisenstat–Walker forcing terms ("Choosing the forcing terms in an inexact Newton method", 1996);
  the products come from autodiff (``jvp="autodiff"``, exact: the linearization is recorded once
  per Newton step and each product is one backward pass through it) or from one extra
  function evaluation each (``jvp="finite-difference"``, accurate to about √eps).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ...core.status import Status
from ...globalize.damping import levenberg_marquardt_step
from ...globalize.linesearch import armijo
from ...linear import MatrixFreeOperator, gmres, solve_dense
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from ...linear.batched import rmatvec

Termination = Callable[[ResidualState], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class NewtonState(ResidualState):
    forcing: torch.Tensor  # (B,) relative tolerance of the inner Krylov solve
    J: torch.Tensor  # (B, m, n) Jacobian at x; (B, 0, 0) for the matrix-free direction


@dataclass
class NewtonLineSearch:
    termination: Termination
    direction: str = "dense"
    c1: float = 1e-4
    max_backtracks: int = 40
    inner_restart: int = 30
    inner_max_iter: int = 200
    max_forcing: float = 0.9
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None
    jvp: str = "autodiff"

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> NewtonState:
        if self.direction == "krylov":
            F = problem.residual(x0)
            J = x0.new_zeros(x0.shape[0], 0, 0)
            grad = None
        else:
            F, J = problem.linearize(x0)
            grad = rmatvec(J, F)
        forcing = torch.full((x0.shape[0],), 0.5, dtype=x0.dtype, device=x0.device)
        return NewtonState(**initial_state(x0, F, grad), forcing=forcing, J=J)

    def _direction(self, problem: ResidualProblem, state: NewtonState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(d, slope = ∇(½‖F‖²)ᵀd, singular mask)."""
        x, F = state.x, state.F
        if self.direction == "krylov":
            batch, n = x.shape
            if self.jvp == "finite-difference":
                product = lambda v: problem.jvp_finite_difference(x, F, v)
            else:
                product = problem.jvp_at(x)
            op = MatrixFreeOperator(product, (batch, F.shape[-1], n), dtype=x.dtype, device=x.device)
            solution = gmres(op, -F, rtol=state.forcing, restart=self.inner_restart,
                             max_iter=self.inner_max_iter, preconditioner=self.preconditioner)
            problem.counters.nlinsolve += 1
            d = solution.x
            slope = (F * product(d)).sum(-1)
            singular = solution.status == int(Status.BREAKDOWN)
            return d, slope, singular
        J = state.J
        problem.counters.nlinsolve += 1
        if self.direction == "dense":
            solution = solve_dense(J, -F)
            d, singular = solution.x, solution.status == int(Status.SINGULAR)
        else:
            zeros = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            d = levenberg_marquardt_step(J, F, zeros, torch.ones_like(x))
            singular = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        grad = state.grad  # Jᵀ F, kept up to date by init and step
        slope = (grad * d).sum(-1)
        # a regularized or inexact direction may fail to descend: fall back to steepest descent
        descent = slope < 0
        d = torch.where(descent.unsqueeze(-1), d, -grad)
        slope = torch.where(descent, slope, -(grad * grad).sum(-1))
        return d, slope, singular

    def step(self, problem: ResidualProblem, state: NewtonState, running: torch.Tensor) -> NewtonState:
        d, slope, singular = self._direction(problem, state)
        x = state.x

        def merit(alpha: torch.Tensor):
            F = problem.residual(x + alpha.unsqueeze(-1) * d)
            return 0.5 * (F * F).sum(-1), F

        # members already done are frozen by the loop: searching for them only costs evaluations
        search = armijo(merit, state.cost, slope, c1=self.c1, max_steps=self.max_backtracks,
                        active=(slope < 0) & running, aux0=state.F)
        ok = search.success
        # α = 0 wherever the search failed, so x, F and the cost stay put there without masking
        step = search.alpha.unsqueeze(-1) * d
        x_new, F_new, cost_new = x + step, search.aux, search.value
        reduction = torch.where(ok, (state.cost - cost_new) / state.cost.clamp(min=torch.finfo(x.dtype).tiny),
                                float("inf"))
        # an accepted step below the resolution of x changes nothing: the method has stalled
        stalled = ok & (x_new == x).all(-1)
        failure = torch.where(ok, state.failure, int(Status.LINESEARCH_FAILED))
        failure = torch.where(stalled, int(Status.STALLED), failure)
        # ...and if NaN/Inf trial points forced it there, that is the honest reason
        failure = torch.where((~ok | stalled) & search.nonfinite, int(Status.NONFINITE), failure)
        grad, J = state.grad, state.J
        if self.direction != "krylov":
            J = problem.jacobian(x_new)
            grad = rmatvec(J, F_new)
        forcing = self._next_forcing(state, cost_new) if self.direction == "krylov" else state.forcing
        return replace(state, x=x_new, F=F_new, cost=cost_new, grad=grad, step_norm=torch.where(ok, step.norm(dim=-1), float("inf")),
                       reduction=reduction, failure=failure, regularized=singular, forcing=forcing, J=J)

    def _next_forcing(self, state: NewtonState, cost_new: torch.Tensor) -> torch.Tensor:
        """Eisenstat–Walker choice 2 (γ = 0.9, α = 2) with its safeguard."""
        gamma = 0.9
        ratio = cost_new / state.cost.clamp(min=torch.finfo(cost_new.dtype).tiny)  # = (‖F+‖/‖F‖)²
        eta = gamma * ratio
        safeguard = gamma * state.forcing**2
        eta = torch.where(safeguard > 0.1, torch.maximum(eta, safeguard), eta)
        return torch.clamp(eta, min=torch.finfo(cost_new.dtype).eps ** 0.5, max=self.max_forcing)

    def terminate(self, problem: ResidualProblem, state: NewtonState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: NewtonState) -> dict:
        return record(state)
