"""When a fixed-point iteration stops, and why: honest statuses for maps without fixed points."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...core.status import Status
from .problem import FixedPointState


@dataclass
class FixedPointTermination:
    """Converged when the best residual ‖T(z) − z‖ ≤ ``tol`` (a number, or a (B,) tensor of
    per-member tolerances).

    A member whose current iterate or T-value is non-finite ends ``NONFINITE`` (the methods
    already fell back to a plain step where they could). A member whose residual has not
    fallen by 0.1% in ``patience`` steps ends ``STALLED``: that is what a cycling map (Picard
    on a rotation), a map without fixed points (a translation) or an iteration stuck at the
    resolution of the dtype look like. ``patience=None`` turns the stall test off (a long
    transient growth of a non-normal contraction could otherwise end a solve that would converge).
    """

    tol: float | torch.Tensor
    patience: int | None = 200

    def __call__(self, state: FixedPointState) -> tuple[torch.Tensor, torch.Tensor]:
        # T(z) − z is finite exactly when z and T(z) are (an Inf in both gives NaN); a norm is
        # never −∞, so `not < ∞` marks NaN and +∞
        nonfinite = ~(state.residual < math.inf)
        finished = (state.best_residual <= self.tol) | nonfinite
        done = finished if self.patience is None else finished | (state.since_progress >= self.patience)
        status = torch.where(nonfinite, int(Status.NONFINITE), int(Status.SUCCESS))
        if self.patience is not None:
            status = torch.where(done & ~finished, int(Status.STALLED), status)
        return done, status
