"""Shared input handling of the spectral tools: one symmetric n×n operator, products with a
block of k row vectors (k, n) → (k, n), and seeded random probe vectors."""
from __future__ import annotations

from typing import Any

import torch

from ..core.validate import check_method
from ..linear.operator import DenseOperator, LinearOperator


def as_square_operator(op: Any, name: str = "op") -> LinearOperator:
    """A ``LinearOperator`` of shape (1, n, n); a dense (n, n) or (1, n, n) tensor is wrapped."""
    if isinstance(op, torch.Tensor):
        if not op.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {op.dtype}")
        op = DenseOperator(op.unsqueeze(0) if op.dim() == 2 else op)
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{name} must be a torchnewton LinearOperator (e.g. a HessianOperator) or a "
                        f"square tensor, got {type(op).__name__}")
    batch, m, n = op.shape
    if batch != 1 or m != n:
        raise ValueError(f"{name} must be one square matrix, shape (1, n, n), got {tuple(op.shape)}")
    return op


def apply_block(op: LinearOperator, block: torch.Tensor) -> torch.Tensor:
    """A vᵢ for each row vᵢ of ``block`` (k, n)."""
    out = op.matvec(block)
    if out.shape != block.shape:
        raise ValueError(f"{type(op).__name__}.matvec must map a block (k, n) to (k, n); for a block "
                         f"of shape {tuple(block.shape)} it returned {tuple(out.shape)}")
    return out


def random_vectors(count: int, op: LinearOperator, generator: torch.Generator | None,
                   distribution: str = "rademacher") -> torch.Tensor:
    """``count`` probe vectors (count, n): Rademacher (±1) or standard Gaussian entries."""
    distribution = check_method(distribution, ("rademacher", "gaussian"), "distribution")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = generator.device if generator is not None else op.device
    shape = (count, op.shape[-1])
    if distribution == "gaussian":
        vectors = torch.randn(shape, generator=generator, dtype=op.dtype, device=device)
    else:
        vectors = torch.randint(0, 2, shape, generator=generator, device=device).to(op.dtype) * 2 - 1
    return vectors.to(op.device)
