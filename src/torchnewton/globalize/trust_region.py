"""Trust-region pieces: the radius update from the gain ratio and Powell's dogleg step.

The Steihaug truncated-CG subproblem solver lives with CG in ``linear.krylov.cg(radius=...)``
so there is one CG in the library.
"""
from __future__ import annotations

import torch


def gain_ratio(actual: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """ρ = actual / predicted reduction; a non-finite trial value gives ρ = −inf (reject)."""
    safe = torch.where(predicted > 0, predicted, torch.ones_like(predicted))
    rho = torch.where(predicted > 0, actual / safe, torch.full_like(actual, -1.0))
    return torch.where(torch.isfinite(rho), rho, torch.full_like(rho, -float("inf")))


def update_radius(radius: torch.Tensor, rho: torch.Tensor, step_norm: torch.Tensor, *,
                  max_radius: float | torch.Tensor = float("inf"), shrink_below: float = 0.25,
                  expand_above: float = 0.75) -> torch.Tensor:
    """Classic rule (Nocedal & Wright Alg. 4.1): shrink to ¼‖s‖ on a poor model fit, double on a
    good fit whose step reached the boundary, else keep."""
    on_boundary = step_norm >= 0.99 * radius
    shrunk = 0.25 * torch.minimum(step_norm, radius)
    grown = torch.clamp(2 * radius, max=max_radius)
    return torch.where(rho < shrink_below, shrunk,
                       torch.where((rho > expand_above) & on_boundary, grown, radius))


def dogleg(newton: torch.Tensor, gradient: torch.Tensor, curvature_gradient: torch.Tensor,
           radius: torch.Tensor) -> torch.Tensor:
    """Powell's dogleg step for min gᵀs + ½sᵀBs, ‖s‖ ≤ Δ, batched.

    ``newton`` is −B⁻¹g, ``curvature_gradient`` is gᵀBg (for Gauss–Newton B = JᵀJ: ‖Jg‖²). The
    step is the Newton step if inside, else the Cauchy point scaled to the boundary if that is
    outside, else the point where the segment Cauchy→Newton crosses the boundary.
    """
    g_norm2 = (gradient * gradient).sum(-1)
    cauchy = -(g_norm2 / curvature_gradient.clamp(min=torch.finfo(gradient.dtype).tiny)).unsqueeze(-1) * gradient
    newton_norm, cauchy_norm = newton.norm(dim=-1), cauchy.norm(dim=-1)
    scaled_gradient = -(radius / g_norm2.sqrt().clamp(min=torch.finfo(gradient.dtype).tiny)).unsqueeze(-1) * gradient
    d = newton - cauchy
    a, b = (d * d).sum(-1), 2 * (cauchy * d).sum(-1)
    c = cauchy_norm**2 - radius**2
    tau = (-b + torch.sqrt(torch.clamp(b * b - 4 * a * c, min=0))) / (2 * a).clamp(min=torch.finfo(gradient.dtype).tiny)
    blended = cauchy + tau.unsqueeze(-1) * d
    col = lambda m: m.unsqueeze(-1)
    return torch.where(col(newton_norm <= radius), newton,
                       torch.where(col(cauchy_norm >= radius), scaled_gradient, blended))
