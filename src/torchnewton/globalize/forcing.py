"""Forcing terms of inexact Newton methods: how accurately to solve J d = −F at each step.

Eisenstat & Walker, "Choosing the forcing terms in an inexact Newton method" (SIAM J. Sci.
Comput. 17, 1996), choice 2: ηₖ = γ (‖Fₖ‖/‖Fₖ₋₁‖)^α, kept at least γ ηₖ₋₁^α when that exceeds
0.1 (so η does not collapse after one lucky step), capped at η_max. Kelley ("Iterative methods
for linear and nonlinear equations", 1995, §6.3) adds a floor ½ τ/‖Fₖ‖ for a target residual
τ: below it the linear solve would be more accurate than the stopping test can see.

Example:
    >>> eisenstat_walker(torch.tensor([0.5]), torch.tensor([0.1]), torch.tensor([1.0]))
    tensor([0.2250])
"""
from __future__ import annotations

import torch


def eisenstat_walker(previous: torch.Tensor, norm: torch.Tensor, previous_norm: torch.Tensor, *,
                     gamma: float = 0.9, alpha: float = 2.0, threshold: float = 0.1, maximum: float = 0.9,
                     target: float = 0.0) -> torch.Tensor:
    """The next forcing term η (B,) from η of the last step and ‖F‖ after/before it (B,).

    ``target`` (τ ≥ 0) sets Kelley's floor ½τ/‖F‖; the result also stays ≥ √eps.
    """
    tiny = torch.finfo(norm.dtype).tiny
    eta = gamma * (norm / previous_norm.clamp(min=tiny)) ** alpha
    safeguard = gamma * previous**alpha
    eta = torch.where(safeguard > threshold, torch.maximum(eta, safeguard), eta)
    eta = torch.clamp(eta, max=maximum)
    if target > 0:
        eta = torch.maximum(eta, torch.clamp(0.5 * target / norm.clamp(min=tiny), max=maximum))
    eta = torch.where(torch.isfinite(eta), eta, torch.full_like(eta, maximum))
    return torch.clamp(eta, min=torch.finfo(norm.dtype).eps ** 0.5)
