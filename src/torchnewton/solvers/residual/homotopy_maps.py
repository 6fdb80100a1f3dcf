"""The homotopies H(z, λ) that continuation tracks from λ = 0 (a known point) to λ = 1 (F(z) = 0),
and the tangent of their solution curve.

Two maps, each given by its value H and its derivative A = [∂H/∂z, ∂H/∂λ] (B, n, n + 1):

* ``"newton"`` (the global Newton homotopy, Keller 1978): H(z, λ) = F(z) − (1 − λ) F(z₀),
  A = [J(z), F(z₀)]. Its curve satisfies J ż = −λ̇ F(z₀): the direction of Newton's method
  at every point, so it follows F(z) ∝ F(z₀) to a root or to a point where J is singular,
  and passes such turning points where the plain Newton iteration stops.
* ``"fixed-point"`` (Chow, Mallet-Paret & Yorke 1978): H(z, λ) = (1 − λ)(z − z₀) + λ F(z),
  A = [(1 − λ) I + λ J(z), F(z) − (z − z₀)]. It starts from a trivially regular problem
  (H = z − z₀) and, for almost every z₀, its curve has no bifurcations.

At λ = 1 both reduce to F(z), so the last correction is Newton's method on F itself.

The tangent of the curve {H = 0} at a regular point is the unit null vector of A: with
Aᵀ = Q R (complete QR, Q of size n + 1) it is the last column of Q (Allgower & Georg,
"Introduction to Numerical Continuation Methods", 2003, §2.1 and §4.1). Its sign is fixed by
continuity (positive inner product with the previous tangent), not by λ̇ > 0, which is what
lets the curve pass turning points where λ̇ changes sign.

Example:
    >>> z, F, J = torch.ones(1, 1), torch.full((1, 1), 2.0), torch.ones(1, 1, 1)
    >>> H, A = homotopy_map("newton", z, torch.zeros(1), F, J, z, F)
    >>> H, A
    (tensor([[0.]]), tensor([[[1., 2.]]]))
"""
from __future__ import annotations

import torch

from ...globalize.members import lean

HOMOTOPIES = ("newton", "fixed-point")


def homotopy_map(kind: str, z: torch.Tensor, lam: torch.Tensor, F: torch.Tensor, J: torch.Tensor,
                 z0: torch.Tensor, F0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H(z, λ), A = [∂H/∂z, ∂H/∂λ]) from F(z) (B, n) and J(z) (B, n, n); λ is (B,) or a column (B, 1)."""
    weight = lam if lam.dim() == 2 else lam.unsqueeze(-1)
    if kind == "newton":
        return F - (1 - weight) * F0, torch.cat([J, F0.unsqueeze(-1)], dim=-1)
    shift = z - z0
    eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
    Hz = (1 - weight).unsqueeze(-1) * eye + weight.unsqueeze(-1) * J
    return (1 - weight) * shift + weight * F, torch.cat([Hz, (F - shift).unsqueeze(-1)], dim=-1)


def tangent(A: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """The unit null vector (B, n + 1) of A (B, n, n + 1), oriented along ``previous``;
    without ``previous`` (the start of the curve) oriented towards increasing λ."""
    Q, _ = torch.linalg.qr(A.transpose(-1, -2), mode="complete")
    t = Q[..., -1]
    if lean(t):  # one problem: the sign is decided on floats (one read-back, no masks)
        values = t.tolist()[0]
        reference = values[-1] if previous is None else sum(a * b for a, b in zip(values, previous.tolist()[0]))
        return -t if reference < 0 else t
    reference = (t * previous).sum(-1) if previous is not None else t[..., -1]
    return torch.where((reference < 0).unsqueeze(-1), -t, t)
