"""The AOL rescaling that Turbo-Muon uses in place of the norm normalization.

Boissin, Massena, Mamalet, Serrurier, "Turbo-Muon: Accelerating Orthogonality-Based Optimization
with Pre-Conditioning" (2025), after Prach & Lampert, "Almost-Orthogonal Layers for Efficient
General-Purpose Lipschitz Networks" (2022). For a wide X (m <= n) with Gram matrix G = X X^T,

    d_i = (sum_j |G_ij|)^{-1/2},    X_1 = D X,    G_1 = D G D,      D = diag(d),

guarantees ||X_1||_2 <= 1 (a Schur test: the spectral norm of D G D is at most its largest
absolute row sum after the symmetric weighting), typically with far less slack than the
Frobenius norm, so small singular values start larger and the iteration needs fewer steps.
G_1 is the first Gram matrix of the iteration, so the preconditioner costs no extra product.

D X is not a scalar multiple of X: its polar factor differs from that of X unless D is a
multiple of the identity, and the iteration converges to polar(D X). The difference is small
when the rows of X have similar norms and absolute Gram row sums (e.g. Gaussian matrices) and
is measured in the benchmark.
"""
from __future__ import annotations

import torch


def aol_rescale(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (D X, D X X^T D) for a wide batch X (b, m, n), D = diag(row-sum(|X X^T|))^{-1/2}.

    Zero rows get d_i = 1/sqrt(tiny) and stay zero.

    Example:
        >>> X1, G1 = aol_rescale(torch.tensor([[[3.0, 0.0], [0.0, 0.5]]]))
        >>> X1[0]
        tensor([[1., 0.],
                [0., 1.]])
    """
    G = X @ X.mT
    d = G.abs().sum(dim=-1).clamp_min(torch.finfo(X.dtype).tiny).rsqrt()
    return X * d[..., :, None], G * d[..., :, None] * d[..., None, :]
