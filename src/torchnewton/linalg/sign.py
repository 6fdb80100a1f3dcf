"""The matrix sign function by Newton–Schulz-type iterations.

For A with no eigenvalues on the imaginary axis, sign(A) = A (A^2)^{-1/2}; for symmetric A it
is U sign(Λ) U^T. The iteration applies an odd polynomial to X through X^2 (see
``polynomial.odd_polynomial_step``): the classical Newton–Schulz step X <- X (3I - X^2) / 2
(Higham, "Functions of Matrices", 2008, Sec. 5.3), or the Polar Express quintics, which for
symmetric A take the same number of steps as for the polar factor. X_0 = A / ||A||_F
(times 1.01 for Polar Express). Convergence needs ||I - X_0^2|| < 1 in some norm, which holds
for every symmetric non-singular A and for non-normal A whose eigenvalues are real and not too
ill-conditioned; zero eigenvalues of a singular symmetric A stay zero.
"""
from __future__ import annotations

import torch

from .methods import run_fixed, run_to_tolerance
from .polynomial import flatten_batch
from .validate import check_matrix, check_method, check_steps, default_max_steps, default_tol

SIGN_METHODS = ("newton-schulz", "polar-express")


def sign(A: torch.Tensor, *, method: str = "newton-schulz", steps: int | None = None,
         tol: float | None = None, lower: float = 1e-3) -> torch.Tensor:
    """Matrix sign of a square A (..., n, n).

    With ``steps`` and no ``tol``, exactly ``steps`` steps (no synchronization); otherwise it
    iterates until the relative change is at most ``tol`` (default eps^(3/4) of the dtype),
    within ``steps`` if given. ``lower`` is the Polar Express design bound on |eigenvalue|/||A||_F.
    Gradients, if needed, flow by unrolling the iteration.

    Example:
        >>> A = torch.tensor([[2.0, 1.0], [1.0, -3.0]], dtype=torch.float64)
        >>> S = sign(A)
        >>> torch.allclose(S @ S, torch.eye(2, dtype=torch.float64))
        True
    """
    check_matrix(A, "A", square=True)
    check_method(method, SIGN_METHODS)
    check_steps(steps)
    if not 0.0 < lower <= 1.0:
        raise ValueError(f"lower must lie in (0, 1], got {lower!r}")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    X = flatten_batch(A)
    if steps is not None and tol is None:
        out = run_fixed(X, method, steps, lower, square=True)
    else:
        out = run_to_tolerance(
            X, method, lower, square=True,
            tol=default_tol(A.dtype) if tol is None else tol,
            max_steps=default_max_steps(A.dtype) if steps is None else steps,
        )
    return out.reshape(A.shape)
