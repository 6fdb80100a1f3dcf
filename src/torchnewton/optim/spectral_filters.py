"""A designed list of odd polynomials applied to the singular values of a stack of momenta.

ROOT (per-shape Polar Express coefficients), Pion (the high-pass filter) and Hybrid-AuON (one
Newton–Schulz step) all run X <- p_t(X) = U p_t(S) V^T for their own coefficient lists (see
``linalg.polynomial.odd_polynomial_step``); a list is only valid with the normalization it was
designed for, so each comes with one:

- ``frobenius_normalization(safety)``: X / (safety ||X||_F), singular values in [0, 1 / safety];
- ``spectral_normalization(upper, iterations)``: X / s with s close to the largest singular value
  sigma_1 (for thresholds relative to it), and sigma_1 / s <= ``upper`` guaranteed.

Tall matrices run transposed so the Gram matrix is the small side, and with n >= 2m (float32 or
float64, at most 6 steps) the steps run on the m x m Gram side (``linalg.gram.use_gram``), as in
``orthogonalize``; the work happens in the dtype the linalg package picks per device (bfloat16
on CUDA, float32 elsewhere) unless one is given.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch

from ..linalg.gram import gram_space_steps, use_gram
from ..linalg.norms import frobenius_norm
from ..linalg.polynomial import flatten_batch, odd_polynomial_step

Normalization = Callable[[torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]
Schedule = tuple[tuple[float, ...], ...]


def working_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """``dtype``, or the per-device default of ``torchnewton.linalg.orthogonalize``."""
    if dtype is not None:
        return dtype
    return torch.bfloat16 if tensor.device.type == "cuda" else torch.float32


def check_dtype(dtype: object) -> None:
    """``dtype`` is None or a floating torch.dtype (the precision of a matrix iteration)."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")


def apply_odd_polynomials(M: torch.Tensor, schedule: Schedule, normalize: Normalization,
                          dtype: torch.dtype | None = None, *, flush_vanishing: bool = False) -> torch.Tensor:
    """p_K(...p_1(normalize(M))) for a stack M (..., m, n), returned in M's dtype.

    ``flush_vanishing``: before each step, set entries below tiny^(1/5) (2e-8 in float32 and
    bfloat16) to zero. A filter that sends every singular value to 0 (Pion's paper filter on a
    flat spectrum) otherwise drives the quintic's products into subnormal numbers, which CPUs
    process many times slower (measured on this CPU: a 512 x 2048 step 8x slower than Muon's). With
    singular values at most 1 the flushed entries change the result by at most tiny^(1/5)
    sqrt(m n) in Frobenius norm, below float32 rounding; the Gram-side evaluation is skipped so
    that every step is flushed.

    Example:
        >>> M = torch.diag(torch.tensor([3.0, 4.0]))[None]
        >>> apply_odd_polynomials(M, ((1.5, -0.5),), frobenius_normalization(1.0))[0].diagonal()
        tensor([0.7920, 0.9440])
    """
    tall = M.shape[-2] > M.shape[-1]
    X = flatten_batch((M.mT if tall else M).to(working_dtype(M, dtype)))
    X, G = normalize(X)
    if use_gram(X, len(schedule)) and not flush_vanishing:
        # n >= 2m in float32/64, at most 6 steps: the same steps on m x m matrices, as ``orthogonalize`` does.
        X = gram_space_steps(X, X @ X.mT if G is None else G, schedule)
    else:
        floor = torch.finfo(X.dtype).tiny ** 0.2 if flush_vanishing else 0.0
        for coeffs in schedule:
            if floor:
                X = X.masked_fill(X.abs() < floor, 0.0)
                G = None
            if G is None:
                G = X @ X.mT
            X = odd_polynomial_step(X, G, coeffs)
            G = None
    X = X.reshape(M.mT.shape if tall else M.shape)
    return (X.mT if tall else X).to(M.dtype)


def frobenius_normalization(safety: float) -> Normalization:
    """X / (safety ||X||_F): every singular value in [0, 1 / safety]; a zero matrix stays zero."""
    def normalize(X: torch.Tensor) -> tuple[torch.Tensor, None]:
        norm = frobenius_norm(X) * safety
        return X / norm.clamp_min(torch.finfo(X.dtype).tiny), None
    return normalize


def spectral_normalization(upper: float, iterations: int) -> Normalization:
    """X / s for a wide stack X (b, m, n), with s = max(L, U / upper) and L <= sigma_1 <= U.

    With G = X X^T and G4 = G^4 (two m x m squarings), U = ||G4||_F^(1/8) is a certified upper
    bound: ||G4||_F = (sum_i sigma_i^16)^(1/2) >= sigma_1^8. L = ||G4 v||^(1/8), v the unit vector
    after ``iterations`` power iterations on G4 from a fixed pseudo-random start, is a lower
    bound that converges like (sigma_2 / sigma_1)^(8 k) (each iteration on G4 is four on G).
    Hence sigma_1 / s <= upper always, and s = sigma_1 once the power iteration has converged
    and U <= upper sigma_1, which holds unless the top of the spectrum is flat (U / sigma_1 <=
    m^(1/16): 1.54 at m = 1024). X is first divided by ||X||_F so that G4 neither overflows nor
    underflows in bfloat16. Cost beyond G (which the first polynomial step receives): two
    m x m products and ``iterations`` matrix-vector products.
    """
    def normalize(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tiny = torch.finfo(X.dtype).tiny
        X = X / frobenius_norm(X).clamp_min(tiny)
        G = X @ X.mT
        G2 = G @ G
        G4 = G2 @ G2
        certified = torch.linalg.matrix_norm(G4, keepdim=True) ** 0.125
        v = _start_vector(G.shape[-1], G.device, G.dtype).expand(G.shape[0], -1, 1)
        growth = torch.zeros_like(certified)
        for _ in range(iterations):
            w = G4 @ v
            growth = torch.linalg.vector_norm(w, dim=(-2, -1), keepdim=True)
            v = w / growth.clamp_min(tiny)
        scale = torch.maximum(growth ** 0.125, certified / upper).clamp_min(tiny)
        return X / scale, G / scale / scale  # not / scale^2: tiny^2 underflows for a zero X
    return normalize


@lru_cache(maxsize=32)
def _start_vector(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A fixed Gaussian unit vector (size, 1): deterministic, and not orthogonal to structured
    directions the way the all-ones vector is to zero-mean gradients."""
    generator = torch.Generator().manual_seed(size)
    v = torch.randn(size, 1, generator=generator, dtype=torch.float64)
    return (v / v.norm()).to(device=device, dtype=dtype)
