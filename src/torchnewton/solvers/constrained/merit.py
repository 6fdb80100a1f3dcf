"""The exact augmented Lagrangian merit of an equality-constrained problem, and its penalty rule.

    L_μ,ν(x, λ) = f(x) + λᵀc(x) + (μ/2)‖c(x)‖² + (ν/2)‖∇ₓL(x, λ)‖²

(Di Pillo & Grippo 1979; Hong, Na, Mahoney & Kolar, ICML 2023). It is differentiable and, for μ
large enough relative to ν, its stationary points with c = 0 are the KKT points, so a line search
on it needs no multiplier estimate from outside: (x, λ) move together. Its gradient is

    ∇ₓL_μ,ν = (I + ν∇²ₓL)∇ₓL + μJᵀc,      ∇_λL_μ,ν = c + νJ∇ₓL.

Along a Newton step (Δx, Δλ) of the KKT system the slope is a + νb − μq with

    a = ∇ₓLᵀΔx + cᵀΔλ,   b = (∇²ₓL∇ₓL)ᵀΔx + (J∇ₓL)ᵀΔλ,   q = −cᵀJΔx (= ‖c‖² for an exact step).

For an exact step with W = ∇²ₓL + δI, a = −ΔxᵀWΔx + 2cᵀΔλ and b = −‖∇ₓL‖² + δ∇ₓLᵀΔx: the ν-term
is a descent term unless the inertia correction δ is large, and the μ-term is one unless c ≈ 0.
Penalty rule (Hong, Na, Mahoney & Kolar: μ = η₁ raised, ν = η₂ lowered until the step is a
sufficient-descent direction):

    a + νb − μq ≤ −σ(ν‖∇ₓL‖² + μq)      (σ = ½).

First ν is lowered (to at most −a/(2b'), b' = b + σ‖∇ₓL‖²) where its term is what spoils the test
and a < 0 — a near-feasible iterate with q ≈ 0 then needs no μ at all (without this, μ climbs
to 1e15 and the line search stalls); then μ is raised (×ρ, at least to twice the needed value)
where q > 0. So an exact Newton step, and an inexact one accurate enough, is a descent direction.

Example:
    >>> f, c, gl, lam = torch.tensor([1.0]), torch.tensor([[0.5]]), torch.tensor([[2.0]]), torch.tensor([[1.0]])
    >>> augmented_lagrangian(f, c, gl, lam, torch.tensor([4.0]), 0.5)
    tensor([3.])
"""
from __future__ import annotations

import torch

from ...linear.batched import matvec, rmatvec


def augmented_lagrangian(f: torch.Tensor, c: torch.Tensor, grad_lagrangian: torch.Tensor | None, lam: torch.Tensor,
                         mu: torch.Tensor, nu: torch.Tensor | float) -> torch.Tensor:
    """L_μ,ν (B,) from f (B,), c (B, m), ∇ₓL (B, n), λ (B, m), μ (B,), ν (B,) or a float.

    ``grad_lagrangian=None`` leaves the ν-term out: f + λᵀc + (μ/2)‖c‖², a lower bound of L_μ,ν
    from f and c alone. A line search with fixed penalties forms :func:`merit_weights` once and
    calls :func:`weighted_merit` per trial (the same values bit for bit)."""
    return weighted_merit(*merit_weights(mu, nu), f, c, grad_lagrangian, lam)


def merit_weights(mu: torch.Tensor, nu: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(μ/2 as a column (B, 1), ν/2): what :func:`weighted_merit` takes."""
    return 0.5 * mu.unsqueeze(-1), 0.5 * nu


def weighted_merit(half_mu: torch.Tensor, half_nu: torch.Tensor | float, f: torch.Tensor, c: torch.Tensor,
                   grad_lagrangian: torch.Tensor | None, lam: torch.Tensor) -> torch.Tensor:
    """L_μ,ν from :func:`merit_weights` (without the ν-term where ``grad_lagrangian`` is None)."""
    value = f + (c * (lam + half_mu * c)).sum(-1)
    return value if grad_lagrangian is None else value + half_nu * (grad_lagrangian * grad_lagrangian).sum(-1)


def _column(nu: torch.Tensor | float) -> torch.Tensor | float:
    return nu.unsqueeze(-1) if isinstance(nu, torch.Tensor) else nu


def merit_gradient(grad_lagrangian: torch.Tensor, c: torch.Tensor, J: torch.Tensor, hess_grad: torch.Tensor,
                   mu: torch.Tensor, nu: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇ₓL_μ,ν, ∇_λL_μ,ν); ``hess_grad`` = ∇²ₓL∇ₓL (B, n), the unregularized Lagrangian Hessian
    times ∇ₓL (a dense product or one Hessian-vector product)."""
    gx = grad_lagrangian + _column(nu) * hess_grad + mu.unsqueeze(-1) * rmatvec(J, c)
    return gx, c + _column(nu) * matvec(J, grad_lagrangian)


def slope_parts(grad_lagrangian: torch.Tensor, c: torch.Tensor, J: torch.Tensor, hess_grad: torch.Tensor,
                dx: torch.Tensor, dlam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, b, q): the slope of L_μ,ν along (Δx, Δλ) is a + νb − μq; ``hess_grad`` = ∇²ₓL∇ₓL (B, n)."""
    a = (grad_lagrangian * dx).sum(-1) + (c * dlam).sum(-1)
    b = (hess_grad * dx).sum(-1) + (matvec(J, grad_lagrangian) * dlam).sum(-1)
    q = -(c * matvec(J, dx)).sum(-1)
    return a, b, q


def update_penalty(mu: torch.Tensor, nu: torch.Tensor, a: torch.Tensor, b: torch.Tensor, q: torch.Tensor,
                   grad_norm_sq: torch.Tensor, *, rho: float = 10.0, sigma: float = 0.5
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(μ⁺ ≥ μ, ν⁺ ≤ ν, descent) after the rule above; ``descent`` (B,) says whether the test holds
    with (μ⁺, ν⁺) (False where q ≤ 0 and a ≥ 0: no penalty makes the step a descent step)."""
    tiny = torch.finfo(mu.dtype).tiny
    b_total = b + sigma * grad_norm_sq
    lower_nu = (a < 0) & (b_total > 0) & (a + nu * b_total > 0.5 * a)
    nu = torch.where(lower_nu, torch.minimum(nu, -0.5 * a / b_total.clamp(min=tiny)), nu)
    margin = a + nu * b_total
    needed = margin / ((1 - sigma) * q).clamp(min=tiny)
    fine = margin - (1 - sigma) * mu * q <= 0
    raise_ = ~fine & (q > 0)
    mu_new = torch.where(raise_, torch.maximum(rho * mu, 2 * needed), mu)
    return mu_new, nu, fine | raise_
