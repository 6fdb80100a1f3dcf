"""Stochastic curvature estimates from Hessian-vector products."""
from __future__ import annotations

from typing import Callable

import torch


def hutchinson_diagonal(hessp: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                        samples: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """Estimate diag(H) (B, n) as the mean of z ⊙ (H z) over Rademacher vectors z.

    E[z ⊙ Hz] = diag(H) because E[z_i z_j] = δ_ij (Bekas, Kokiopoulou, Saad 2007,
    "An estimator for the diagonal of a matrix"). ``hessp(v)`` maps (B, n) to (B, n).
    """
    estimate = torch.zeros_like(x)
    for _ in range(samples):
        z = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        estimate = estimate + z * hessp(z)
    return estimate / samples
