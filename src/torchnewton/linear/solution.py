"""What every linear solver returns: the solution and an honest per-member status."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LinearSolution:
    """``x`` (B, n); ``status`` int64 (B,) of Status codes (SUCCESS, MAX_ITER, BREAKDOWN,
    SINGULAR, NEGATIVE_CURVATURE); ``iterations`` int64 (B,); ``residual_norm`` (B,).
    ``direction`` holds a negative-curvature direction where CG found one (else zeros);
    ``on_boundary`` marks members of a trust-region CG stopped at the radius."""

    x: torch.Tensor
    status: torch.Tensor
    iterations: torch.Tensor
    residual_norm: torch.Tensor
    direction: torch.Tensor | None = None
    on_boundary: torch.Tensor | None = None
