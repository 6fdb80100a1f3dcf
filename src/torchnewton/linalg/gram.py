"""Gram-space evaluation of the polar iterations: the fixed steps on m x m matrices only.

For a wide X_0 (b, m, n), m <= n, every iterate of an odd-polynomial iteration is
X_k = Q_k X_0 with Q_k a polynomial in G = X_0 X_0^T (symmetric, commuting with G). With
A_k = X_k X_k^T = Q_k G Q_k and the step matrix P_k = c_0 I + c_1 A_k + ... + c_d A_k^d,

    X_{k+1} = P_k X_k,    Q_{k+1} = P_k Q_k,    A_{k+1} = P_k A_k P_k,

and Q_0 = I, A_0 = G. So G is formed once (one m x m x n product), the steps run on m x m
matrices, and X_K = Q_K X_0 is applied once at the end (a second m x m x n product). A quintic
step costs 4 products of m x m matrices (A^2, P Q, P A, P (P A)) instead of 2 of m x m x n and
1 of m x m; the first step saves P Q (Q_0 = I) and the last the update of A. With K quintic steps
that is 2 m^2 n + (4K - 3) m^3 multiply-adds against K (2 m^2 n + m^3), fewer as soon as
n > (3K - 3) m / (2K - 2) = 1.5 m.

Rounding: G squares the condition number, so a singular value s of X_0 is perturbed like
sqrt(s^2 + eps) in the working precision instead of s + eps. Singular values below ~sqrt(eps)
(3e-4 in float32) are not resolved; a fixed-step run does not resolve them either (5 Polar
Express steps only lift [1e-3, 1] into [0.85, 1.12]), so the fixed-cost result changes little
(measured in the benchmark and the tests), but a run to a tolerance would stall far above eps.
In bfloat16 sqrt(eps) is 0.06 and the Gram evaluation diverges on ill-conditioned inputs
(measured polar errors of 1e4 on the log-spectrum family at 128 x 512), so it is offered for
float32 and float64 only.
"""
from __future__ import annotations

import torch

from .polynomial import gram_polynomial

# The automatic choice uses the Gram evaluation from this aspect ratio n / m on. Measured on CPU
# float32 (5 Polar Express steps, standard time / Gram time): 1.07-1.43 at n = 2m, 0.89-0.99 at
# n = 1.5m, 0.3-0.8 for square matrices, 1.4-1.8 at n = 4m (256 <= m <= 1024).
GRAM_MIN_ASPECT = 2.0
GRAM_DTYPES = (torch.float32, torch.float64)
# Past the fixed-cost budget the Gram evaluation diverges in float32: once the resolved singular
# values have converged, the polynomials keep amplifying the unresolved ones (below sqrt(eps))
# through Q_k. Measured on the log-spectrum family (sigma in [1e-6, 1], 128 x 512 and 64 x 256):
# largest singular value of the result 1.002 at 6 steps, 1.02 at 8, 1.6-9.9 at 10, 8e11 or inf at
# 12, against 1.0000002 without it. The automatic choice stops at 6 steps.
GRAM_MAX_AUTO_STEPS = 6


def use_gram(X: torch.Tensor, steps: int) -> bool:
    """The automatic choice for a wide batch X (b, m, n): float32/float64, n >= 2m, <= 6 steps."""
    return (X.dtype in GRAM_DTYPES and X.shape[-1] >= GRAM_MIN_ASPECT * X.shape[-2]
            and steps <= GRAM_MAX_AUTO_STEPS)


def gram_space_steps(X: torch.Tensor, G: torch.Tensor, schedule: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """Apply the odd-polynomial steps ``schedule`` to a wide X (b, m, n) with Gram matrix G = X X^T.

    The result equals that of ``odd_polynomial_step`` applied step by step, up to rounding.

    Example:
        >>> X = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 1.0, 0.0]]])
        >>> gram_space_steps(X, X @ X.mT, ((1.5, -0.5),))[0]
        tensor([[0.6875, 0.0000, 0.0000],
                [0.0000, 1.0000, 0.0000]])
    """
    if not schedule:
        return X
    A, Q = G, None
    for k, coeffs in enumerate(schedule):
        c0 = coeffs[0]
        B = gram_polynomial(A, coeffs)  # P = c0 I + B
        if Q is None:
            Q = B + c0 * torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        else:
            Q = torch.baddbmm(Q, B, Q, beta=c0)
        if k + 1 < len(schedule):
            PA = torch.baddbmm(A, B, A, beta=c0)
            A = torch.baddbmm(PA, B, PA, beta=c0)
    return Q @ X
