"""Entropic Wasserstein distance between weighted point clouds, in one call."""
from __future__ import annotations

from typing import Any

import torch

from .costs import pnorm_cost
from .solve import sinkhorn


def wasserstein(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None,
                p: float = 2.0, reg: float | None = None, **kwargs: Any) -> torch.Tensor:
    """W_p(μ, ν) ≈ ⟨C, P_ε⟩^{1/p} with C_ij = ‖x_i − y_j‖₂^p and P_ε the entropic plan of :func:`sinkhorn`.

    ``x`` (..., n, d), ``y`` (..., m, d); weights ``a``/``b`` default to uniform 1/n, 1/m.
    ``reg`` defaults to 1e-3 × the mean of C (per call), weak enough that the entropic bias is
    small for clouds of a few thousand points. Differentiable in x, y, a and b (through the
    implicit plan). ``kwargs`` go to :func:`sinkhorn` (method, tol, max_iter, ...). The
    distance is returned even if the solve did not converge; call :func:`sinkhorn` with
    :func:`~torchnewton.ot.costs.pnorm_cost` to see the status.

    Example:
        >>> x = torch.rand(200, 2, dtype=torch.float64); y = x + 0.5
        >>> wasserstein(x, y, p=2, reg=1e-3)  # doctest: +SKIP
        tensor(0.7071, dtype=torch.float64)
    """
    C = pnorm_cost(x, y, p=p)
    n, m = C.shape[-2:]
    if a is None:
        a = torch.full(C.shape[:-1], 1.0 / n, dtype=C.dtype, device=C.device)
    if b is None:
        b = torch.full(C.shape[:-2] + (m,), 1.0 / m, dtype=C.dtype, device=C.device)
    if reg is None:
        reg = 1e-3 * float(C.detach().mean())
    return sinkhorn(a, b, C, reg, **kwargs).cost.clamp(min=0) ** (1.0 / p)
