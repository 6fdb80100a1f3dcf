"""Lean tensor primitives of the batched constrained solvers: each one or a few dispatched operations.

A batched iteration of a small problem (HS71 at B = 256: tiny data, a few microseconds per torch
operation) costs what it dispatches, so the solvers' hot paths use these instead of the
composite forms, with the same values bit for bit:

* ``matvec(A, v) = Av``, ``rmatvec(A, u) = Aᵀu`` for A (B, m, n): one ``torch.bmm`` — what
  ``A @ v.unsqueeze(-1)`` (:mod:`torchnewton.linear.batched`) ends in after matmul's
  expand/reshape/view decomposition; three operations instead of eight;
* ``finite(t)``: ``t − t == 0``, true exactly where t is finite (∞ − ∞ and NaN − NaN are NaN):
  two operations instead of the four of ``torch.isfinite``;
* ``constant(value, like)``: a cached 0-d tensor, for ``torch.where`` branches (a Python number
  there costs one more operation, a ``scalar_tensor``, per call).

Example:
    >>> A = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    >>> matvec(A, torch.tensor([[1.0, 1.0]])), rmatvec(A, torch.tensor([[1.0, 0.0]]))
    (tensor([[3., 7.]]), tensor([[1., 2.]]))
    >>> finite(torch.tensor([1.0, float("inf"), float("nan")]))
    tensor([ True, False, False])
"""
from __future__ import annotations

import torch


def matvec(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A v (B, m) for A (B, m, n), v (B, n)."""
    return torch.bmm(A, v.unsqueeze(-1)).squeeze(-1)


def rmatvec(A: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Aᵀ u (B, n) for A (B, m, n), u (B, m)."""
    return torch.bmm(u.unsqueeze(1), A).squeeze(1)


def finite(t: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite(t)`` for a floating tensor, in two operations."""
    return (t - t) == 0


def constant(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-d tensor of ``like``'s dtype and device, made once per (value, dtype, device)."""
    # the key tells 0.0 from -0.0 and 1 from 1.0 (equal, and equal hashes, as Python numbers)
    key = (type(value), repr(value), like.dtype, like.device)
    tensor = _CONSTANTS.get(key)
    if tensor is None:
        tensor = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return tensor


_CONSTANTS: dict[tuple, torch.Tensor] = {}
