"""Trace of a symmetric operator from matrix–vector products: Hutchinson and Hutch++.

Hutchinson: tr(A) ≈ (1/m) Σᵢ zᵢᵀAzᵢ with E[zzᵀ] = I (Rademacher z has the least variance,
2‖A‖_F² − 2Σ A_ii² per sample; Hutchinson 1989). Hutch++ (Meyer, Musco, Musco, Woodruff 2021,
"Hutch++: optimal stochastic trace estimation") spends a third of the products on a sketch
Q = orth(AS), takes tr(QᵀAQ) exactly and Hutchinson only on the deflated (I − QQᵀ)A(I − QQᵀ):
for a matrix whose trace sits in a few large eigenvalues — a network Hessian — the error falls
like 1/m instead of 1/√m.

Example:
    >>> Q, _ = torch.linalg.qr(torch.randn(200, 200, dtype=torch.float64))
    >>> A = (Q * torch.cat([torch.logspace(3, 1, 10), torch.full((190,), 0.01)]).double()) @ Q.T
    >>> trace(A, "hutch++", num_samples=30)   # tr A = 2483.74; Hutchinson errs by ~10% here
    tensor(2483.74..., dtype=torch.float64)
"""
from __future__ import annotations

from typing import Any

import torch

from ..core.validate import check_method, check_positive
from .blocks import apply_block, as_square_operator, random_vectors

METHODS = ("hutchinson", "hutch++", "exact")


def _quadratic_forms(op: Any, vectors: torch.Tensor, block_size: int) -> torch.Tensor:
    """zᵢᵀ A zᵢ for each row, ``block_size`` rows per product call."""
    forms = [(block * apply_block(op, block)).sum(-1) for block in vectors.split(block_size)]
    return torch.cat(forms)


def trace(op: Any, method: str = "hutch++", *, num_samples: int = 60, generator: torch.Generator | None = None,
          distribution: str = "rademacher", block_size: int = 32) -> torch.Tensor:
    """Estimate tr(A) with ``num_samples`` products with A.

    ``method``: 'hutchinson', 'hutch++' (needs num_samples ≥ 3: ⌊m/3⌋ sketch products, as many
    for the sketch's projection, the rest for Hutchinson on the remainder) or 'exact' (n products
    with the identity's columns; ``num_samples`` ignored). Probes are Rademacher or Gaussian
    rows from ``generator``, applied ``block_size`` at a time. Returns a 0-dim tensor.
    """
    op = as_square_operator(op)
    method = check_method(method, METHODS)
    check_positive(num_samples, "num_samples", integer=True)
    check_positive(block_size, "block_size", integer=True)
    n = op.shape[-1]
    if method == "exact":
        eye = torch.eye(n, dtype=op.dtype, device=op.device)
        return _quadratic_forms(op, eye, block_size).sum()
    if method == "hutchinson":
        probes = random_vectors(num_samples, op, generator, distribution)
        return _quadratic_forms(op, probes, block_size).mean()
    if num_samples < 3:
        raise ValueError(f"hutch++ needs num_samples >= 3 (sketch, projection, remainder), got {num_samples}")
    sketch_size = min(num_samples // 3, n)
    sketch = random_vectors(sketch_size, op, generator, distribution)
    range_basis, _ = torch.linalg.qr(torch.cat([apply_block(op, b) for b in sketch.split(block_size)]).T)
    exact_part = _quadratic_forms(op, range_basis.T, block_size).sum()
    remainder_size = num_samples - 2 * sketch_size
    probes = random_vectors(remainder_size, op, generator, distribution)
    probes = probes - (probes @ range_basis) @ range_basis.T
    return exact_part + _quadratic_forms(op, probes, block_size).mean()
