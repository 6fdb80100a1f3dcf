"""Default tolerances that depend on the dtype: tight where float64 allows it, looser in float32."""
from __future__ import annotations

import torch


def default_tol(dtype: torch.dtype) -> float:
    """Default absolute tolerance: about eps**(2/3), 4e-11 in float64 and 5e-6 in float32."""
    return float(torch.finfo(dtype).eps) ** (2.0 / 3.0)


def eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)
