"""Preconditioners: callables r ↦ M⁻¹r on a batch (B, n), plugged into the Krylov solvers."""
from __future__ import annotations

from typing import Callable

import torch

from .operator import LinearOperator


def jacobi(A: LinearOperator, *, floor: float | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Diagonal (Jacobi) preconditioner M = diag(A); tiny or negative diagonals are floored so
    the preconditioner stays SPD (CG and MINRES need that)."""
    diag = A.diagonal()
    floor = floor if floor is not None else float(torch.finfo(diag.dtype).eps) ** 0.5
    scale = diag.abs().amax(-1, keepdim=True).clamp(min=torch.finfo(diag.dtype).tiny)
    safe = torch.clamp(diag, min=floor) if floor > 0 else diag
    safe = torch.maximum(safe, floor * scale)
    return lambda r: r / safe
