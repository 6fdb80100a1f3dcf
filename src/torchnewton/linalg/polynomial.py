"""One step of an odd matrix polynomial, the kernel of every Newton–Schulz-type iteration.

For X with SVD U S V^T and G = X X^T = U S^2 U^T,

    X <- c_0 X + (c_1 G + c_2 G^2 + ... + c_k G^k) X = U p(S) V^T,
    p(s) = c_0 s + c_1 s^3 + ... + c_k s^{2k+1},

so the step applies the scalar odd polynomial p to every singular value and keeps the singular
vectors. With G = X @ X (square X) the same step applies p to the eigenvalues, which is the
matrix sign iteration. The cost is k + 1 matrix products: G, then k - 1 Horner products in G,
then B @ X (2 for the cubic, 3 for the quintic); with X wide (m <= n), G is the small m x m side.
"""
from __future__ import annotations

import torch


def flatten_batch(A: torch.Tensor) -> torch.Tensor:
    """View (..., m, n) as (b, m, n) so the fused batched kernels (baddbmm) apply."""
    return A.reshape(-1, A.shape[-2], A.shape[-1])


def gram_polynomial(G: torch.Tensor, coeffs: tuple[float, ...]) -> torch.Tensor:
    """Return B = c_1 G + c_2 G^2 + ... + c_k G^k for G (b, m, m), by Horner (k - 1 products).

    The step matrix of the odd polynomial p(s) = c_0 s + ... + c_k s^{2k+1} is c_0 I + B.

    Example:
        >>> gram_polynomial(torch.full((1, 1, 1), 2.0), (0.0, 1.0, 1.0))
        tensor([[[6.]]])
    """
    B = coeffs[-1] * G
    for c in reversed(coeffs[1:-1]):
        B = torch.baddbmm(G, B, G, beta=c)
    return B


def odd_polynomial_step(X: torch.Tensor, G: torch.Tensor, coeffs: tuple[float, ...]) -> torch.Tensor:
    """Return c_0 X + (c_1 G + ... + c_k G^k) X for X (b, m, n) and G (b, m, m).

    ``G`` is X X^T for the polar factor or X X for the matrix sign; the caller passes it so that
    a Gram matrix computed elsewhere (the AOL preconditioner) is reused.

    Example:
        >>> X = torch.diag(torch.tensor([0.5, 1.0]))[None]
        >>> odd_polynomial_step(X, X @ X.mT, (1.5, -0.5))[0].diagonal()
        tensor([0.6875, 1.0000])
    """
    return torch.baddbmm(X, gram_polynomial(G, coeffs), X, beta=coeffs[0])
