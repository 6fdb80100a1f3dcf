"""Termination rules for residual methods: F(x) = 0 for root finding, scipy's rules for least squares."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.status import Status
from .residual_state import ResidualState


def _code(mask: torch.Tensor, status: Status) -> torch.Tensor:
    return torch.full(mask.shape, int(status), dtype=torch.long, device=mask.device)


def _failures(state: ResidualState, success: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine success with the honest failure codes: non-finite beats everything."""
    nonfinite = ~torch.isfinite(state.cost) | ~torch.isfinite(state.x).all(-1)
    failed = state.failure != 0
    # a member that failed on a singular system reports SINGULAR, not the symptom
    failure = torch.where(state.regularized & failed & (state.failure != int(Status.NONFINITE)),
                          _code(failed, Status.SINGULAR), state.failure)
    status = torch.where(success, _code(success, Status.SUCCESS), failure)
    status = torch.where(nonfinite, _code(nonfinite, Status.NONFINITE), status)
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
    """scipy.optimize.least_squares rules: ‖Jᵀr‖∞ ≤ gtol, relative cost decrease ≤ ftol after a
    step the model predicted well, or ‖DΔx‖ ≤ xtol(xtol + ‖Dx‖) in the method's variable scaling D
    (as MINPACK); a zero residual also converges."""

    ftol: float
    xtol: float
    gtol: float

    def __call__(self, state: ResidualState) -> tuple[torch.Tensor, torch.Tensor]:
        gradient_small = state.grad.abs().amax(-1) <= self.gtol
        cost_small = state.reduction <= self.ftol
        step_small = state.step_norm <= self.xtol * (self.xtol + (state.scale * state.x).norm(dim=-1))
        zero = state.cost <= torch.finfo(state.cost.dtype).tiny
        success = (gradient_small | cost_small | step_small | zero) & torch.isfinite(state.cost)
        return _failures(state, success)
