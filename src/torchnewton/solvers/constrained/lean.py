"""Lean tensor primitives of the batched constrained solvers: each one or a few dispatched operations.

A batched iteration of a small problem (HS71 at B = 256: tiny data, a few microseconds per torch
operation) costs what it dispatches, so the solvers' hot paths use these instead of the
composite forms, with the same values bit for bit (batched products: :mod:`torchnewton.linear.batched`):

* ``finite(t)``: ``t − t == 0``, true exactly where t is finite (∞ − ∞ and NaN − NaN are NaN):
  two operations instead of the four of ``torch.isfinite``;
* ``constant(value, like)``: a cached 0-d tensor, for ``torch.where`` branches (a Python number
  there costs one more operation, a ``scalar_tensor``, per call).

Example:
    >>> finite(torch.tensor([1.0, float("inf"), float("nan")]))
    tensor([ True, False, False])
"""
from __future__ import annotations

import torch


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
