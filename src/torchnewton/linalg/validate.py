"""Argument checks and dtype-dependent defaults shared by the matrix iterations.

Bad arguments raise before any work starts, naming the argument: ``TypeError`` for a
non-tensor or a non-floating dtype, ``ValueError`` for a wrong shape or non-finite entries.
"""
from __future__ import annotations

import math

import torch

SUPPORTED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def check_matrix(
    value: object, name: str, *, square: bool = False, check_finite: bool = True
) -> torch.Tensor:
    """Check that ``value`` is a real floating tensor of shape (..., m, n) and return it.

    ``check_finite`` costs one host-device synchronization; hot loops that already trust
    their input (an optimizer step) can skip it.

    Example:
        >>> check_matrix(torch.eye(3), "A", square=True).shape
        torch.Size([3, 3])
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} must have a real floating dtype (float64, float32, float16 or bfloat16), "
            f"got {value.dtype}"
        )
    if value.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., m, n), got shape {tuple(value.shape)}")
    if square and value.shape[-1] != value.shape[-2]:
        raise ValueError(f"{name} must be square (..., n, n), got shape {tuple(value.shape)}")
    if value.shape[-1] == 0 or value.shape[-2] == 0:
        raise ValueError(f"{name} must have non-empty matrix dimensions, got shape {tuple(value.shape)}")
    if check_finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} has non-finite entries (nan or inf)")
    return value


def check_method(method: str, valid: tuple[str, ...]) -> str:
    """Return ``method`` if it is one of ``valid``; otherwise raise a ValueError listing them."""
    if method not in valid:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in valid)}; got {method!r}")
    return method


def check_steps(steps: int | None, name: str = "steps") -> int | None:
    """``None`` or a non-negative int."""
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"{name} must be a non-negative int or None, got {steps!r}")
    return steps


def default_tol(dtype: torch.dtype) -> float:
    """Default stopping tolerance for a converging iteration in ``dtype``.

    eps^(3/4): far enough above the rounding floor (a few eps times a dimension factor) to be
    reachable, and for the quadratically/cubically converging iterations used here one more
    step past it lands at the floor anyway. About 2e-12 in float64, 7e-6 in float32.
    """
    return torch.finfo(dtype).eps ** 0.75


def default_max_steps(dtype: torch.dtype) -> int:
    """Iteration cap: enough for linear growth by 1.5 per step from the dtype's eps to 1, plus margin."""
    return int(math.log(1.0 / torch.finfo(dtype).eps) / math.log(1.5)) + 20
