"""When a constrained solve stops, and why: the KKT test, infeasibility and unboundedness.

A member succeeds when all three KKT residuals are small:

* optimality ‖∇f + Jᵀλ + z‖∞ ≤ tol·s_d (of the unscaled f), with the multiplier scale of Ipopt
  s_d = max(100, (‖λ‖₁ + ‖z‖₁)/(m + n))/100 (large multipliers make cancellation inexact);
* violation ‖c(x) − Π_[c_l, c_u](c(x))‖∞ ≤ tol (absolute; bounds on x are kept exactly);
* complementarity max_i |sᵢzᵢ| ≤ tol (interior point only; zero for SQP).

It fails with

* ``INFEASIBLE`` / ``LOCALLY_INFEASIBLE``: the violation v is not small but the iterate is a
  stationary point of ½‖v‖² (‖Jᵀv‖∞ ≤ infeasibility_tol·‖v‖∞) at two consecutive
  iterations. That is a proof of infeasibility when the constraints are affine (a convex
  violation), reported ``INFEASIBLE``; otherwise only a local one, ``LOCALLY_INFEASIBLE``;
* ``UNBOUNDED``: a feasible iterate with f < −``unbounded`` or ‖x‖∞ > ``unbounded`` (1e15 by
  default: beyond it a float64 iterate cannot resolve unit changes, and Newton steps along a
  direction of recession stop growing there);
* ``STALLED``: for ``patience`` (25) consecutive iterations the steps were short
  (‖Δx‖ ≤ 1e-6(1 + ‖x‖)) and the KKT error max(optimality/s_d, violation, complementarity)
  stayed above 0.9 of its best value: a degenerate problem (LICQ failing at the solution), or a
  line search that only accepts tiny steps, ends with an honest status instead of running to the
  iteration limit or a caller's time limit (long steps through a region where the KKT error
  does not fall are progress, not stagnation);
* ``NONFINITE``: f or x not finite; or the failure code a step recorded (``LINESEARCH_FAILED``,
  ``SINGULAR``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.fusion import Fusion
from ...core.status import Status
from .lean import constant

_EAGER = Fusion(enabled=False)


@dataclass
class KKTFields:
    """The fields every constrained state carries for the termination test (batched, dim 0)."""

    x: torch.Tensor
    f: torch.Tensor
    optimality: torch.Tensor
    violation: torch.Tensor
    complementarity: torch.Tensor
    multiplier_scale: torch.Tensor
    infeasible_count: torch.Tensor  # consecutive iterations at a stationary point of the violation
    failure: torch.Tensor
    best_error: torch.Tensor  # smallest KKT error so far (B,)
    stall_count: torch.Tensor  # consecutive short steps without a tenth off best_error (B,)


def multiplier_scale(*multipliers: torch.Tensor) -> torch.Tensor:
    """Ipopt's s_d = max(100, mean |multiplier|)/100 over all given (B, k) multiplier tensors."""
    every = torch.cat(multipliers, -1) if len(multipliers) > 1 else multipliers[0]
    return torch.clamp(every.abs().sum(-1) / max(every.shape[-1], 1), min=100.0) / 100.0


def track_progress(best: torch.Tensor, count: torch.Tensor, error: torch.Tensor, x: torch.Tensor,
                   step_norm: torch.Tensor, *, factor: float = 0.9, short: float = 1e-6
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(best⁺, count⁺): consecutive short steps that left the error above ``factor``·best."""
    improved = (error <= factor * best) | (step_norm > short * (1 + x.norm(dim=-1)))
    best = torch.minimum(best, error)
    return best, torch.where(improved, constant(0, count), count + 1)


def infeasibility_measure(J: torch.Tensor, violation: torch.Tensor) -> torch.Tensor:
    """‖Jᵀv‖∞ / ‖v‖∞ (inf where v = 0): zero at an infeasible stationary point of ½‖v‖², while
    near a feasible point with J of full rank it stays near the smallest singular value of J."""
    if violation.shape[-1] == 0:
        return violation.new_full((violation.shape[0],), float("inf"))
    gradient = torch.bmm(J.transpose(-1, -2), violation.unsqueeze(-1)).squeeze(-1)
    size = violation.abs().amax(-1)
    return torch.where(size > 0, gradient.abs().amax(-1) / size.clamp(min=torch.finfo(size.dtype).tiny),
                       torch.full_like(size, float("inf")))


@dataclass
class KKTTermination:
    tol: float
    infeasibility_tol: float
    unbounded: float = 1e15
    patience: int = 25

    def __call__(self, problem, state: KKTFields) -> tuple[torch.Tensor, torch.Tensor]:
        # the test is in the user's units: the solver's optimality is that of s·f (objective scaling,
        # :mod:`.problem`), so it is divided by s; s_d from the scaled multipliers is the smaller one
        fusion = getattr(problem, "fusion", None) or _EAGER
        done, status, infeasible, *overruling = fusion(
            verdict, self.tol, self.unbounded, self.patience, state.optimality, getattr(problem, "scale", None),
            state.violation, state.multiplier_scale, state.complementarity, state.x, state.f,
            state.infeasible_count, state.failure, state.stall_count)
        if bool(infeasible.any()):  # rare: the code needs the constraints' curvature (autodiff, eager)
            unbounded, nonfinite, converged = overruling
            status = torch.where(infeasible & ~(unbounded | nonfinite | converged),
                                 self._infeasible_code(problem, state, infeasible), status)
        return done, status

    @staticmethod
    def _infeasible_code(problem, state: KKTFields, infeasible: torch.Tensor) -> torch.Tensor:
        code = torch.full_like(state.failure, int(Status.LOCALLY_INFEASIBLE))
        if problem.m == 0:
            return code
        generator = torch.Generator(device=state.x.device).manual_seed(0)
        weights = torch.randn(state.x.shape[0], problem.m, dtype=state.x.dtype, device=state.x.device,
                              generator=generator)
        curvature = problem.constraint_curvature(state.x, weights).abs().amax((-1, -2))
        return torch.where(curvature == 0, int(Status.INFEASIBLE), code)


def verdict(tol: float, unbounded_limit: float, patience: int, optimality: torch.Tensor,
            scale: torch.Tensor | None, violation: torch.Tensor, multipliers: torch.Tensor,
            complementarity: torch.Tensor, x: torch.Tensor, f: torch.Tensor, infeasible_count: torch.Tensor,
            failure: torch.Tensor, stall_count: torch.Tensor
            ) -> tuple[torch.Tensor, ...]:
    """(done, status, infeasible, unbounded, nonfinite, converged) of :class:`KKTTermination` without
    the infeasibility code: ``infeasible`` marks the members whose status is INFEASIBLE or
    LOCALLY_INFEASIBLE unless one of the last three says otherwise. A pure function of
    tensors (no host read): fused in compiled mode. ``multipliers``: the scale s_d."""
    optimality = optimality if scale is None else optimality / scale
    feasible = violation <= tol
    converged = (optimality <= tol * multipliers) & feasible & (complementarity <= tol)
    size = x.abs().amax(-1)  # NaN if any component is (amax propagates NaN)
    # f − f + (size − size) is 0 where both are finite and NaN otherwise
    nonfinite = (f - f + (size - size)) != 0
    # each test below is overruled by convergence in the status, so none needs masking by it here
    infeasible = infeasible_count >= 2
    unbounded = feasible & ((f < -unbounded_limit) | (size > unbounded_limit))
    failed = failure != 0
    stalled = stall_count >= patience
    done = converged | nonfinite | infeasible | unbounded | failed | stalled
    # later tests overrule earlier ones; the codes are cached 0-d tensors (a Python int would
    # cost one more dispatched operation per torch.where)
    status = torch.where(stalled, constant(int(Status.STALLED), failure), constant(int(Status.RUNNING), failure))
    status = torch.where(failed, failure, status)
    status = torch.where(unbounded, constant(int(Status.UNBOUNDED), failure), status)
    status = torch.where(nonfinite, constant(int(Status.NONFINITE), failure), status)
    return done, torch.where(converged, constant(int(Status.SUCCESS), failure), status), infeasible & ~converged, \
        unbounded, nonfinite, converged
