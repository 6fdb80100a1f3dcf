"""Termination rules for residual methods: F(x) = 0 for root finding, scipy's rules for least squares."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.status import Status
from .state import ResidualState


def _failures(state: ResidualState, success: torch.Tensor,
              failure: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine success with the honest failure codes (``state.failure`` unless ``failure`` is
    given): non-finite beats everything."""
    nonfinite = ~torch.isfinite(state.cost) | ~torch.isfinite(state.x).all(-1)
    failure = state.failure if failure is None else failure
    failed = failure != 0
    # a member that failed on a singular system reports SINGULAR, not the symptom
    failure = torch.where(state.regularized & failed & (failure != int(Status.NONFINITE)),
                          int(Status.SINGULAR), failure)
    status = torch.where(success, int(Status.SUCCESS), failure)
    status = torch.where(nonfinite, int(Status.NONFINITE), status)
    done = nonfinite | success | failed
    return done, status


@dataclass
class RootTermination:
    """Converged when ‖F(x)‖∞ ≤ tol."""

    tol: float

    def __call__(self, state: ResidualState) -> tuple[torch.Tensor, torch.Tensor]:
        success = state.F.abs().amax(-1) <= self.tol
        return _failures(state, success & torch.isfinite(state.cost))


@dataclass
class LeastSquaresTermination:
    """scipy.optimize.least_squares rules: a first-order test (≤ gtol), relative cost decrease
    ≤ ftol after a step the model predicted well, or ‖DΔx‖ ≤ xtol(xtol + ‖Dx‖) in the method's
    variable scaling D (as MINPACK); a zero residual also converges.

    The first-order test is ‖Jᵀr‖∞ ≤ gtol (scipy's trf). With ``scaled`` (Levenberg–Marquardt,
    whose state provides ``gradient_cosine`` and ``saturated``) it is MINPACK's scale-invariant
    cosine maxⱼ |Jⱼᵀr| / (‖Jⱼ‖‖r‖) ≤ gtol (scipy's lm), and the decrease and step tests do not
    count where the residual still points along a Jacobian column that has vanished (a
    parameter saturated, e.g. a rate in exp(−b x) run off to +∞): the steps there are small only
    because the model has lost that direction, so the member ends STALLED, not SUCCESS. What
    ``step_norm`` and ``reduction`` measure is the method's to say (Levenberg–Marquardt: the trust
    radius, and MINPACK's max(|actred|, prered)).
    """

    ftol: float
    xtol: float
    gtol: float
    scaled: bool = False

    def __call__(self, state: ResidualState) -> tuple[torch.Tensor, torch.Tensor]:
        first_order = state.gradient_cosine if self.scaled else state.grad.abs().amax(-1)
        gradient_small = first_order <= self.gtol
        small_change = (state.reduction <= self.ftol) | \
            (state.step_norm <= self.xtol * (self.xtol + (state.scale * state.x).norm(dim=-1)))
        zero = state.cost <= torch.finfo(state.cost.dtype).tiny
        finite = torch.isfinite(state.cost)
        if not self.scaled:
            return _failures(state, (gradient_small | small_change | zero) & finite)
        success = (gradient_small | (small_change & ~state.saturated) | zero) & finite
        stalled = small_change & state.saturated & ~success & (state.failure == 0)
        return _failures(state, success, torch.where(stalled, int(Status.STALLED), state.failure))
