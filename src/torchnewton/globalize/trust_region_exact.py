"""The exact trust-region subproblem min gᵀs + ½sᵀHs, ‖s‖ ≤ Δ, for small and medium n.

Moré & Sorensen (1983, "Computing a trust region step"): s is a global minimizer iff
(H + λI)s = −g, H + λI ⪰ 0, λ ≥ 0 and λ(Δ − ‖s‖) = 0. λ solves the secular equation
1/‖s(λ)‖ = 1/Δ by Newton's method; here it is evaluated in an eigenbasis of H (``secular``),
which makes every trial O(n), lets rejected steps reuse the factorization, and resolves the
hard case exactly instead of by Moré–Sorensen's approximate null vector.

Example:
    >>> H = torch.diag(torch.tensor([[-1.0, 2.0]])[0]).unsqueeze(0); g = torch.tensor([[0.0, 1.0]])
    >>> s = exact_trust_region_step(EigenHessian.of(H), g, torch.tensor([1.0]))
    >>> round(float(s.norm()), 6)  # the hard case: the step reaches the boundary along v₁
    1.0
"""
from __future__ import annotations

import torch
from torch.linalg import vector_norm

from .members import ops_for
from .secular import EigenHessian, solve_secular


def exact_trust_region_step(eig: EigenHessian, g: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """The global minimizer of the quadratic model inside ‖s‖ ≤ Δ, per member (B, n)."""
    o = ops_for(g)
    radius, g_norm, lowest = o.values(radius, vector_norm(g, dim=-1), eig.values[:, 0])
    inverse_radius = 1 / radius

    def target(lam):
        if o.batched:
            return inverse_radius.expand_as(lam), torch.zeros_like(lam)
        return inverse_radius, 0.0

    # ‖s(λ)‖ ≤ ‖g‖/(λ₁ + λ) ≤ Δ once λ ≥ ‖g‖/Δ − λ₁
    upper = g_norm / radius - lowest
    interior_allowed = o.full(o.isfinite(radius), True)
    return solve_secular(eig, g, target, upper * (1 + 1e-6) + torch.finfo(g.dtype).tiny,
                         interior_allowed=interior_allowed, g_norm=g_norm).step
