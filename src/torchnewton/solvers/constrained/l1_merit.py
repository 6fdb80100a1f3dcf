"""The ℓ₁ exact penalty merit of an equality-constrained problem, and its penalty rule.

    φ_μ(x) = f(x) + μ‖c(x)‖₁

(Han 1977; Powell 1978; Nocedal & Wright §15.4, §18.3). Unlike the exact augmented Lagrangian of
:mod:`.merit`, its value needs only f and c, so a line search on it evaluates no derivative at a
trial point: ∇f and J follow at the accepted point alone. It is not differentiable where a cᵢ
vanishes, but it has a directional derivative along every step p; with the linearized
constraint reduction r = ‖c‖₁ − ‖c + Jp‖₁ (= ‖c‖₁ for an exact KKT step, Jp = −c), the model

    D = ∇fᵀp − μ r

bounds it (Nocedal & Wright, Lemma 18.2). Penalty rule (Nocedal & Wright eq. 18.36, ρ = ½):

    μ ≥ (∇fᵀp + (σ/2) pᵀWp) / ((1 − ρ) r),     σ = 1 if pᵀWp > 0 else 0,

which makes D ≤ −ρμr − (σ/2)pᵀWp < 0. Before that test, μ follows the new multipliers as in
Powell's rule (Powell 1978; SLSQP, Kraft 1988): μ⁺ = max(‖λ⁺‖∞, ½(μ + ‖λ⁺‖∞)) — ‖λ*‖∞ < μ is what
makes the penalty exact, and letting μ fall back towards it (instead of only ever raising it)
keeps the merit from rejecting the full steps near the solution; where the descent bound asks
for more, μ becomes 1.1 times the bound. Where r ≈ 0 (feasible iterate) the test is on ∇fᵀp
alone, a descent direction whenever W is positive definite on the null space of J. As μ may fall,
φ_μ is not monotone over the iterations; each line search is on one φ_μ.

Example:
    >>> l1_merit(torch.tensor([1.0]), torch.tensor([[0.5, -0.25]]), torch.tensor([2.0]))
    tensor([2.5000])
"""
from __future__ import annotations

import torch

from ...linear.batched import matvec

GROWTH = 1.1  # μ just above the descent bound where that bound is what binds


def l1_merit(f: torch.Tensor, c: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """φ_μ (B,) from f (B,), c (B, m), μ (B,)."""
    return f + mu * c.abs().sum(-1)


def l1_slope(g: torch.Tensor, c: torch.Tensor, J: torch.Tensor, W_dx: torch.Tensor, dx: torch.Tensor,
             lam: torch.Tensor, mu: torch.Tensor, *, rho: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ⁺, D): the penalty after the rule above and the model slope of φ_μ⁺ along dx.

    ``W_dx`` (B, n) is W dx, W the (regularized) Hessian model of the step's quadratic program (a
    dense product or one Hessian-vector product), ``lam`` the new multipliers λ + Δλ."""
    tiny = torch.finfo(g.dtype).tiny
    gdx = (g * dx).sum(-1)
    curvature = (dx * W_dx).sum(-1)
    reduction = c.abs().sum(-1) - (c + matvec(J, dx)).abs().sum(-1) if c.shape[-1] else torch.zeros_like(gdx)
    size = lam.abs().amax(-1) if lam.shape[-1] else torch.zeros_like(mu)
    mu = torch.maximum(size, 0.5 * (mu + size))
    needed = (gdx + 0.5 * curvature.clamp(min=0)) / ((1 - rho) * reduction.clamp(min=tiny))
    mu = torch.where((reduction > 0) & (mu < needed), GROWTH * needed, mu)
    return mu, gdx - mu * reduction
