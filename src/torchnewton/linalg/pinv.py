"""Moore–Penrose pseudo-inverse by the Newton–Schulz–Hotelling iteration.

Ben-Israel & Cohen, "On iterative computation of generalized inverses" (1966): with
X_0 = A^T / ||A||_F^2,

    X_{k+1} = X_k (2I - A X_k),

X_k = V f_k(S) U^T with f_k(s) = (1 - (1 - s^2/||A||_F^2)^{2^k}) / s, so every non-zero singular
value is inverted with quadratic convergence once s^2 2^k / ||A||_F^2 is large, and exact zero
singular values stay at zero (X_k lies in the row space of A). Singular values far below
``rtol * ||A||_F`` are not inverted within the step cap 2^k >= log(1/tol) / rtol^2: the cap acts
as the usual cutoff of a pseudo-inverse (relative to ||A||_F here, not to the largest singular
value). Rounding makes components in the null space grow by 2 per step, so the loop also stops
once the iterates stop changing.
"""
from __future__ import annotations

import math

import torch

from .iteration import iterate_to_tolerance
from .norms import frobenius_norm
from .validate import check_matrix, default_tol


def pinv(A: torch.Tensor, *, tol: float | None = None, rtol: float | None = None,
         max_steps: int | None = None) -> torch.Tensor:
    """Pseudo-inverse A^+ of A (..., m, n), batched, using only matrix products.

    ``rtol`` defaults to max(m, n) * eps of the dtype, as in ``torch.linalg.pinv``.

    Example:
        >>> A = torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
        >>> pinv(A)
        tensor([[0.5000, 0.0000],
                [0.0000, 0.0000]], dtype=torch.float64)
    """
    check_matrix(A, "A")
    m, n = A.shape[-2:]
    finfo = torch.finfo(A.dtype)
    tol = default_tol(A.dtype) if tol is None else tol
    rtol = max(m, n) * finfo.eps if rtol is None else rtol
    if not tol > 0 or not 0 < rtol < 1:
        raise ValueError(f"need tol > 0 and 0 < rtol < 1, got tol={tol!r}, rtol={rtol!r}")
    if max_steps is None:
        max_steps = math.ceil(math.log2(math.log(1.0 / tol) / rtol**2)) + 2
    norm = frobenius_norm(A).clamp_min(finfo.tiny)
    X0 = A.mT / norm / norm  # not norm**2, which underflows to 0 for tiny or zero A
    eye = torch.eye(min(m, n), dtype=A.dtype, device=A.device)

    def step(X: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        # 2X - X A X, with the product A X or X A taken on the smaller side
        new = X @ (2 * eye - A @ X) if m <= n else (2 * eye - X @ A) @ X
        change = torch.linalg.matrix_norm(new - X) / torch.linalg.matrix_norm(new).clamp_min(finfo.tiny)
        return new, change

    X, _ = iterate_to_tolerance(step, X0, tol=tol, max_steps=max_steps)
    return X
