"""A Frobenius norm that neither underflows nor overflows, for normalizing iterations."""
from __future__ import annotations

import torch


def frobenius_norm(A: torch.Tensor) -> torch.Tensor:
    """||A||_F over the last two dimensions, shape (..., 1, 1), computed as max|a| * ||A / max|a|||_F.

    The plain sum of squares underflows to 0 for entries below sqrt(tiny) (1e-19 in float32) and
    overflows for entries above sqrt(max); dividing by the largest entry first avoids both.
    Returns 0 for a zero matrix; callers clamp before dividing.

    Example:
        >>> frobenius_norm(torch.full((2, 2), 1e-30))
        tensor([[2.0000e-30]])
    """
    largest = A.abs().amax(dim=(-2, -1), keepdim=True)
    scaled = A / largest.clamp_min(torch.finfo(A.dtype).tiny)
    return largest * torch.linalg.matrix_norm(scaled, keepdim=True)
