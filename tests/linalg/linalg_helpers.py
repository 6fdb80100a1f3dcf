"""Test matrices and the two error measures against a float64 SVD / eigendecomposition."""
from __future__ import annotations

import math

import torch

F64 = torch.float64


def svd_polar(A: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(A.to(F64), full_matrices=False)
    return U @ Vh


def orthogonality_error(X: torch.Tensor) -> float:
    """max over the batch of ||X^T X - I||_F / sqrt(k), on the small side k = min(m, n)."""
    X = X.to(F64)
    m, n = X.shape[-2:]
    G = X.mT @ X if m >= n else X @ X.mT
    k = min(m, n)
    return float((torch.linalg.matrix_norm(G - torch.eye(k, dtype=F64)) / math.sqrt(k)).max())


def polar_error(X: torch.Tensor, A: torch.Tensor) -> float:
    """max over the batch of ||X - U V^T||_F / ||U V^T||_F against the float64 SVD of A."""
    P = svd_polar(A)
    return float((torch.linalg.matrix_norm(X.to(F64) - P) / torch.linalg.matrix_norm(P)).max())


def with_singular_values(s: torch.Tensor, m: int, n: int, generator: torch.Generator) -> torch.Tensor:
    k = s.shape[-1]
    U, _ = torch.linalg.qr(torch.randn(m, k, dtype=F64, generator=generator))
    V, _ = torch.linalg.qr(torch.randn(n, k, dtype=F64, generator=generator))
    return (U * s) @ V.mT


def family(name: str, m: int, n: int, seed: int = 0) -> torch.Tensor:
    """The four input families of the issue, in float64."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    if name == "gaussian":
        return torch.randn(m, n, dtype=F64, generator=g)
    if name == "log-spectrum":
        return with_singular_values(torch.logspace(-6, 0, k, dtype=F64), m, n, g)
    if name == "low-rank+noise":
        r = max(1, k // 16)
        low = torch.randn(m, r, dtype=F64, generator=g) @ torch.randn(r, n, dtype=F64, generator=g)
        return low + 1e-3 * torch.randn(m, n, dtype=F64, generator=g)
    if name == "levy":
        # standard Lévy samples are 1/Z^2 for Z ~ N(0, 1); random signs make them symmetric
        z = torch.randn(m, n, dtype=F64, generator=g)
        signs = torch.randint(0, 2, (m, n), generator=g, dtype=F64) * 2 - 1
        return signs / z**2
    raise ValueError(name)


FAMILIES = ("gaussian", "log-spectrum", "low-rank+noise", "levy")


def spd(n: int, kappa: float, seed: int = 0, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """Symmetric positive definite matrix with eigenvalues log-spaced in [1/kappa, 1]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(*batch, n, n, dtype=F64, generator=g))
    w = torch.logspace(0, -math.log10(kappa), n, dtype=F64)
    A = (Q * w) @ Q.mT
    return 0.5 * (A + A.mT)


def eigh_function(A: torch.Tensor, f) -> torch.Tensor:
    w, V = torch.linalg.eigh(A)
    return (V * f(w)[..., None, :]) @ V.mT


def relative_error(X: torch.Tensor, R: torch.Tensor) -> float:
    return float((torch.linalg.matrix_norm(X.to(F64) - R) / torch.linalg.matrix_norm(R)).max())
