"""The orthogonal polar factor: ``polar`` (accurate, differentiable) and ``orthogonalize`` (fixed cost).

For A = U S V^T (thin SVD) the polar factor is U V^T, the nearest matrix with orthonormal rows
or columns. Every method applies odd polynomials to the singular values through X X^T (see
``methods`` for the table of methods and normalizations):

- "newton-schulz": X <- 1.5 X - 0.5 X X^T X, quadratic convergence, slow from small singular values;
- "quintic": Muon's fixed quintic (3.4445, -4.7750, 2.0315); fast start, but it oscillates in
  about [0.7, 1.2] and never converges (5 steps map [1e-3, 1] into about [0.47, 1.20]);
- "polar-express": Amsel, Persson, Musco, Gower (2025), a minimax-optimal quintic per step
  (5 steps map [1e-3, 1] into about [0.85, 1.12]; later steps converge like Newton–Schulz);
- "aol": Turbo-Muon's AOL row rescaling (Boissin et al., 2025) in place of the norm
  normalization, fused with the first Gram matrix, then the Polar Express quintics; it converges
  to polar(D A), which differs from polar(A) unless D is a multiple of I.

Tall inputs are transposed internally so the Gram matrix is the smaller min(m, n) side.
``orthogonalize`` can run its fixed steps entirely on that Gram matrix (``gram``); ``polar``
does not, since squaring the condition number would cap its accuracy near sqrt(eps). Zero
singular values stay zero: a rank-deficient A gives the partial isometry U_r V_r^T, a zero A gives 0.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.autograd.function import once_differentiable

from .backward import polar_backward
from .gram import GRAM_DTYPES, use_gram
from .methods import DEFAULT_STEPS, run_fixed, run_to_tolerance
from .polynomial import flatten_batch
from .validate import SUPPORTED_DTYPES, check_matrix, check_method, check_steps, default_max_steps, default_tol

POLAR_METHODS = ("polar-express", "quintic", "newton-schulz", "aol")
# These two stop at a fixed step count: "quintic" never converges, "aol" converges to polar(D A).
FIXED_STEP_METHODS = ("quintic", "aol")


def polar(A: torch.Tensor, *, method: str = "polar-express", steps: int | None = None,
          tol: float | None = None, lower: float = 1e-3) -> torch.Tensor:
    """Orthogonal polar factor U V^T of A (..., m, n), computed in A's dtype.

    Stopping: with ``steps`` and no ``tol``, exactly ``steps`` steps (no synchronization).
    Otherwise "polar-express" and "newton-schulz" iterate until ||X_{k+1} - X_k||_F <=
    tol ||X_{k+1}||_F (default tol eps^(3/4) of the dtype), within ``steps`` if given;
    "quintic" and "aol" always run a fixed count (default 5 and 4) and reject ``tol``.
    ``lower`` is the Polar Express design bound on sigma_min / (1.01 ||A||_F); for "aol" the
    polynomials are designed from the first Polar Express polynomial's image of ``lower``.

    Differentiable: the backward pass solves H W + W H = G Q^T - Q G^T (H = (A A^T)^{1/2})
    by a matrix-sign iteration, the gradient of the exact polar factor at the computed Q.

    Example:
        >>> A = torch.randn(6, 4, dtype=torch.float64)
        >>> Q = polar(A)
        >>> torch.allclose(Q.mT @ Q, torch.eye(4, dtype=torch.float64))
        True
    """
    check_matrix(A, "A")
    check_method(method, POLAR_METHODS)
    check_steps(steps)
    if not 0.0 < lower <= 1.0:
        raise ValueError(f"lower must lie in (0, 1], got {lower!r}")
    if tol is not None:
        if method in FIXED_STEP_METHODS:
            raise ValueError(f"method {method!r} runs a fixed number of steps and does not converge to "
                             "the polar factor; pass steps=, not tol=")
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol!r}")
    if method in FIXED_STEP_METHODS or (steps is not None and tol is None):
        count = DEFAULT_STEPS[method] if steps is None else steps
        run: Callable[[torch.Tensor], torch.Tensor] = lambda X: run_fixed(X, method, count, lower)
    else:
        tol = default_tol(A.dtype) if tol is None else tol
        cap = default_max_steps(A.dtype) if steps is None else steps
        run = lambda X: run_to_tolerance(X, method, lower, tol=tol, max_steps=cap)
    return _Polar.apply(A, lambda A: _wide(A, run))


def orthogonalize(G: torch.Tensor, *, method: str = "polar-express", steps: int | None = None,
                  dtype: torch.dtype | None = None, check_finite: bool = True,
                  gram: bool | None = None) -> torch.Tensor:
    """Fixed-cost approximate polar factor, for an optimizer to call every step (Muon).

    Runs ``steps`` steps of ``method`` (default: 5, or 4 for "aol", 7 for "newton-schulz") in
    ``dtype`` and returns the result in G's dtype. The default ``dtype`` is a per-device choice:
    bfloat16 on CUDA, float32 elsewhere (a bfloat16 matmul on CPU is far slower than float32).
    No synchronization unless ``check_finite`` (one check of G for nan/inf). Not routed through
    the implicit backward of ``polar``.

    ``gram=True`` evaluates the same steps on the min(m, n)-sized Gram matrix (see ``gram``):
    X_K = q_K(X_0 X_0^T) X_0 with two products of the full size instead of two per step, fewer
    operations once max(m, n) > 1.5 min(m, n), at the price of resolving singular values only
    down to about sqrt(eps) instead of eps (measured: the fixed-step polar error changes by
    under 1e-5 relative in float32). Only for a float32 or float64 ``dtype``. ``gram=None``
    (default) uses it for those when max(m, n) >= 2 min(m, n) and steps <= 6 (more steps diverge
    in float32 on ill-conditioned inputs, see ``gram``); ``gram=False`` never.

    Example:
        >>> G = torch.randn(64, 256)
        >>> O = orthogonalize(G)
        >>> bool((torch.linalg.svdvals(O) - 1).abs().max() < 0.2)
        True
    """
    check_matrix(G, "G", check_finite=check_finite)
    check_method(method, POLAR_METHODS)
    check_steps(steps)
    work = dtype if dtype is not None else (torch.bfloat16 if G.device.type == "cuda" else torch.float32)
    if work not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be a floating dtype (float64, float32, float16, bfloat16), got {work}")
    if gram and work not in GRAM_DTYPES:
        raise ValueError(f"gram=True needs dtype float32 or float64 (the Gram matrix squares the "
                         f"condition number), got {work}")
    count = DEFAULT_STEPS[method] if steps is None else steps
    run = lambda X: run_fixed(X, method, count, 1e-3, gram=use_gram(X, count) if gram is None else gram)
    return _wide(G.to(work), run).to(G.dtype)


def _wide(A: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``run`` (on a (b, m, n) batch with m <= n) to A of any orientation and batch shape."""
    tall = A.shape[-2] > A.shape[-1]
    X = A.mT if tall else A
    out = run(flatten_batch(X)).reshape(X.shape)
    return out.mT if tall else out


class _Polar(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        Q = compute(A)
        ctx.save_for_backward(A, Q)
        return Q

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        A, Q = ctx.saved_tensors
        return polar_backward(A, Q, grad), None
