"""Trust-region Newton methods: exact subproblems (Moré–Sorensen) and Steihaug's truncated CG.

Each iteration minimizes the quadratic model m(s) = gᵀs + ½sᵀHs over ‖s‖ ≤ Δ, evaluates f at
x + s, and accepts the step when the gain ratio ρ = (f(x) − f(x+s)) / (−m(s)) exceeds η; Δ shrinks
on poor agreement and grows when a good step hits the boundary (``globalize.trust_region``).

* :class:`ExactTrustRegion` ("trust-exact"): the global minimizer of the model (``globalize.
  trust_region_exact``), from one eigendecomposition per Hessian, reused by rejected steps;
  negative curvature and the hard case are handled exactly.
* :class:`SteihaugTrustRegion` ("trust-ncg"): Steihaug–Toint CG on Hessian-vector products,
  stopped at the boundary, at negative curvature or at ‖r‖ ≤ min(½, √‖g‖)‖g‖; the model value
  of its step comes from CG's recurrences (``linear.krylov.TrustRegionSolution``), so an
  iteration costs the CG products only.

A member whose radius falls below ε·max(1, ‖x‖) cannot make progress and ends ``STALLED``.
The radius may grow to ``max_radius`` = 10¹⁰ by default: a cap near the scale of the problem (scipy
uses 1000) turns badly scaled problems, whose solution lies 10⁶ away (CUTEst BROWNBS), into
thousands of boundary steps (GALAHAD's TRU caps at 10²⁰).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch.linalg import vector_norm

from ...core.status import Status
from ...globalize.cubic import cubic_model_decrease
from ...globalize.secular import EigenHessian
from ...globalize.rounding import rounding_safe_ratio
from ...globalize.members import FloatOps, lean, ops_for
from ...globalize.radius import update_radius
from ...globalize.trust_region_exact import exact_trust_region_step
from ...linear.krylov import cg
from ...linear.operator import LinearOperator
from .newton import forcing_term
from .problem import ObjectiveProblem
from ..evolve import evolve
from .state import ObjectiveState, initial_fields, record
from .termination import Termination

_TRUE, _FALSE = torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)


@dataclass
class TrustRegionState(ObjectiveState):
    radius: torch.Tensor  # (B,)


@dataclass
class ExactTrustRegionState(TrustRegionState):
    eigenvalues: torch.Tensor  # (B, n) of the Hessian at x
    eigenvectors: torch.Tensor  # (B, n, n)
    hessian: torch.Tensor  # (B, n, n) itself: accurate steps and model values when ill-conditioned
    fresh: torch.Tensor  # (B,) bool: the eigenpairs belong to the current x


@dataclass
class TrustRegionMinimizer(ABC):
    termination: Termination
    initial_radius: float = 1.0
    max_radius: float = 1e10
    eta: float = 0.15

    def init(self, problem: ObjectiveProblem, x0: torch.Tensor) -> TrustRegionState:
        f, g = problem.value_and_grad(x0)
        return self.make_state(initial_fields(x0, f, g), torch.full_like(f, self.initial_radius))

    def make_state(self, fields: dict, radius: torch.Tensor) -> TrustRegionState:
        return TrustRegionState(**fields, radius=radius)

    @abstractmethod
    def subproblem(self, problem: ObjectiveProblem, state: TrustRegionState) -> tuple[torch.Tensor, torch.Tensor | float, TrustRegionState]:
        """(step s, predicted decrease −m(s), state with any curvature it computed); the decrease
        may be a Python float on the lean path."""

    def step(self, problem: ObjectiveProblem, state: TrustRegionState, running: torch.Tensor) -> TrustRegionState:
        # per-member scalars through ``o``: (B,) tensors, or Python floats for one problem (lean path)
        o = ops_for(state.x)
        s, predicted, state = self.subproblem(problem, state)
        x = state.x
        x_trial = x + s
        f_trial, gradient_at_trial = problem.value_then_gradient(x_trial)
        s_norm = vector_norm(s, dim=-1)
        if o.batched:
            f, trial, step_norm, radius = state.f, f_trial, s_norm, state.radius
        else:  # one read each; ‖x‖ only where a rejected step asks for it, below
            f, trial, step_norm, radius = o.values(state.f, f_trial, s_norm, state.radius)
            predicted = predicted if isinstance(predicted, float) else predicted.item()
        rho = rounding_safe_ratio(f, trial, predicted, dtype=x.dtype)
        accept = rho > self.eta
        x_new = o.where(accept, x_trial, x)
        # a batch pulls the trial gradients unasked: asking whether any member accepted is a host read
        g_new = o.where(accept, gradient_at_trial(), state.g) if o.batched or accept else state.g
        old_radius, radius = radius, update_radius(radius, rho, step_norm, max_radius=self.max_radius)
        eps = torch.finfo(x.dtype).eps
        if o.batched:
            stalled = ~accept & (radius <= eps * torch.clamp(vector_norm(x, dim=-1), min=1.0))
            failure = torch.where(stalled, int(Status.STALLED), state.failure)
            fields = dict(step_norm=torch.where(accept, step_norm, 0.0), radius=radius, failure=failure)
        else:
            stalled = not accept and radius <= eps * FloatOps.clamp(vector_norm(x, dim=-1).item(), min=1.0)
            # fields whose value is unchanged keep their tensor: no new one to allocate
            fields = dict(step_norm=s_norm if accept else o.pack(0.0, state.step_norm),
                          radius=state.radius if radius == old_radius else o.pack(radius, state.radius),
                          failure=o.pack(int(Status.STALLED), state.failure) if stalled else state.failure)
        return self.moved(evolve(state, x=x_new, f=o.where(accept, f_trial, state.f), g=g_new, **fields), accept)

    def moved(self, state: TrustRegionState, accept: torch.Tensor) -> TrustRegionState:
        """Hook: invalidate curvature kept for the old iterate."""
        return state

    def terminate(self, problem: ObjectiveProblem, state: TrustRegionState):
        return self.termination(state)

    def record(self, problem: ObjectiveProblem, state: TrustRegionState) -> dict:
        return {**record(state), "radius": state.radius.detach().clone()}


@dataclass
class ExactTrustRegion(TrustRegionMinimizer):
    def make_state(self, fields: dict, radius: torch.Tensor) -> ExactTrustRegionState:
        x = fields["x"]
        batch, n = x.shape
        return ExactTrustRegionState(**fields, radius=radius, eigenvalues=x.new_zeros(batch, n),
                                     eigenvectors=x.new_zeros(batch, n, n), hessian=x.new_zeros(batch, n, n),
                                     fresh=torch.zeros(batch, dtype=torch.bool, device=x.device))

    def subproblem(self, problem: ObjectiveProblem, state: ExactTrustRegionState):
        eig = EigenHessian(state.eigenvalues, state.eigenvectors, state.hessian)
        if not (state.fresh.item() if lean(state.x) else bool(state.fresh.all())):
            fresh = EigenHessian.of(problem.hessian(state.x))
            eig = fresh if lean(state.x) else eig.where(state.fresh, fresh)
            problem.counters.nlinsolve += 1
        s = exact_trust_region_step(eig, state.g, state.radius)
        if lean(state.x):  # one member's −m(s) summed on its floats: the cubic model's with σ = 0
            predicted = cubic_model_decrease(eig, state.g, 0.0, s)
        else:
            predicted = -((state.g * s).sum(-1) + 0.5 * eig.quadratic(s))
        state = evolve(state, eigenvalues=eig.values, eigenvectors=eig.vectors, hessian=eig.matrix,
                       fresh=_TRUE if lean(state.x) else torch.ones_like(state.fresh))
        return s, predicted, state

    def moved(self, state: ExactTrustRegionState, accept: torch.Tensor | bool) -> ExactTrustRegionState:
        if isinstance(accept, bool):
            return evolve(state, fresh=_FALSE) if accept else state
        return evolve(state, fresh=state.fresh & ~accept)


@dataclass
class SteihaugTrustRegion(TrustRegionMinimizer):
    cg_max_iter: int | None = None
    # one problem's (x, curvature operator at x): a rejected step keeps x (the same tensor), and
    # the next subproblem reuses the Hessian (or the gradient's graph) instead of evaluating it again
    _curvature: tuple[torch.Tensor, LinearOperator] | None = field(default=None, init=False, repr=False,
                                                                    compare=False)

    def init(self, problem: ObjectiveProblem, x0: torch.Tensor) -> TrustRegionState:
        self._curvature = None
        return super().init(problem, x0)

    def subproblem(self, problem: ObjectiveProblem, state: TrustRegionState):
        g = state.g
        if self._curvature is not None and self._curvature[0] is state.x:
            operator = self._curvature[1]
        else:
            operator = problem.operator(state.x)
            self._curvature = (state.x, operator) if lean(state.x) else None
        forcing = forcing_term(g)
        solution = cg(operator, -g, rtol=forcing, max_iter=self.cg_max_iter, radius=state.radius)
        problem.counters.nlinsolve += 1
        # m(s) = gᵀs + ½sᵀHs from CG's recurrences: no Hessian-vector product beyond the solve
        model = solution.model_value
        return solution.x, -(solution.model if model is None else model), state
