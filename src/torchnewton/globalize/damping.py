"""Levenberg–Marquardt damping: the damped Gauss–Newton step and the damping update."""
from __future__ import annotations

import torch


def levenberg_marquardt_step(J: torch.Tensor, F: torch.Tensor, damping: torch.Tensor,
                             scale: torch.Tensor) -> torch.Tensor:
    """Solve min ‖J p + F‖² + λ‖D p‖² for p, batched (J (B, m, n), F (B, m), λ (B,), D diag (B, n)).

    Solved as the least-squares problem [J; √λ D] p ≈ [−F; 0] by QR rather than the normal
    equations, so the conditioning is κ(J), not κ(J)² (Moré 1978, "The Levenberg–Marquardt
    algorithm: implementation and theory").
    """
    lower = torch.diag_embed(damping.sqrt().unsqueeze(-1) * scale)
    A = torch.cat([J, lower], dim=-2)
    rhs = torch.cat([-F, torch.zeros_like(scale)], dim=-1).unsqueeze(-1)
    Q, R = torch.linalg.qr(A)
    return _triangular_or_lstsq(R, Q.transpose(-1, -2) @ rhs, A, rhs)


def _triangular_or_lstsq(R: torch.Tensor, Qtb: torch.Tensor, A: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    diag = R.diagonal(dim1=-2, dim2=-1).abs()
    rank_ok = diag.min(-1).values > torch.finfo(R.dtype).eps * diag.max(-1).values.clamp(min=torch.finfo(R.dtype).tiny) * R.shape[-1]
    p = torch.linalg.solve_triangular(R, Qtb, upper=True).squeeze(-1)
    if bool(rank_ok.all()):
        return p
    # rank-deficient [J; √λD] (λ = 0 with singular J): minimum-norm solution via pseudo-inverse
    p_min = (torch.linalg.pinv(A) @ rhs).squeeze(-1)
    return torch.where(rank_ok.unsqueeze(-1), p, p_min)


def update_damping(damping: torch.Tensor, nu: torch.Tensor, rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nielsen's rule: on success λ ← λ·max(⅓, 1 − (2ρ − 1)³), ν ← 2; on failure λ ← λν, ν ← 2ν.

    (H. B. Nielsen 1999, "Damping parameter in Marquardt's method".)
    """
    accepted = rho > 0
    factor = torch.clamp(1 - (2 * rho - 1) ** 3, min=1.0 / 3.0)
    new_damping = torch.where(accepted, damping * torch.where(torch.isfinite(factor), factor, torch.ones_like(factor)),
                              damping * nu)
    new_nu = torch.where(accepted, torch.full_like(nu, 2.0), 2 * nu)
    return new_damping, new_nu
