"""Batched matrix–vector products. ``matmul`` on (B, m, n) @ (B, n, 1) is several times faster
than the equivalent einsum for the tiny matrices of batched small problems; for exactly (B, m, n)
with (B, n), the same B, it ends in one ``bmm`` after an expand/reshape/view decomposition, so
that case calls ``bmm`` directly (the same values bit for bit, three dispatched operations instead
of eight: on tiny data a batched iteration costs what it dispatches); other shapes broadcast as
``matmul`` does."""
from __future__ import annotations

import torch


def matvec(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A v for A (B, m, n), v (B, n) → (B, m)."""
    if A.dim() == 3 and v.dim() == 2 and A.shape[0] == v.shape[0]:  # bmm does not broadcast
        return torch.bmm(A, v.unsqueeze(-1)).squeeze(-1)
    return (A @ v.unsqueeze(-1)).squeeze(-1)


def rmatvec(A: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Aᵀ u for A (B, m, n), u (B, m) → (B, n)."""
    if A.dim() == 3 and u.dim() == 2 and A.shape[0] == u.shape[0]:
        return torch.bmm(u.unsqueeze(1), A).squeeze(1)
    return (u.unsqueeze(-2) @ A).squeeze(-2)
