"""Powell's dogleg step (the radius update and the gain ratio are in :mod:`.radius`).

The Steihaug truncated-CG subproblem solver lives with CG in ``linear.krylov.cg(radius=...)``
so there is one CG in the library.
"""
from __future__ import annotations

import torch


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
