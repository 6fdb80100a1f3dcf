"""What every linear solver returns: the solution and an honest per-member status."""
from __future__ import annotations

from typing import Callable

import torch


class LinearSolution:
    """``x`` (B, n); ``status`` int64 (B,) of Status codes (SUCCESS, MAX_ITER, BREAKDOWN,
    SINGULAR, NEGATIVE_CURVATURE); ``iterations`` int64 (B,); ``residual_norm`` (B,) the true
    residual ‖b − A x‖. ``direction`` holds a negative-curvature direction where CG found one
    (else zeros); ``on_boundary`` marks members of a trust-region CG stopped at the radius.

    A solver may hand ``residual_norm`` over as a zero-argument function: it is then evaluated
    on first access and kept, so a caller that never reads it (a Newton step takes ``x`` only)
    does not pay the extra product with A."""

    def __init__(self, x: torch.Tensor, status: torch.Tensor, iterations: torch.Tensor,
                 residual_norm: torch.Tensor | Callable[[], torch.Tensor],
                 direction: torch.Tensor | None = None, on_boundary: torch.Tensor | None = None):
        self.x, self.status, self.iterations = x, status, iterations
        self.direction, self.on_boundary = direction, on_boundary
        self._residual_norm = residual_norm

    @property
    def residual_norm(self) -> torch.Tensor:
        if callable(self._residual_norm):
            self._residual_norm = self._residual_norm()
        return self._residual_norm

    def __repr__(self) -> str:
        return (f"LinearSolution(x={self.x!r}, status={self.status!r}, iterations={self.iterations!r}, "
                f"residual_norm={self.residual_norm!r})")
