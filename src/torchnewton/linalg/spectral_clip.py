"""Spectral clipping: every singular value σ of A replaced by min(σ, c), by matrix products only.

For A = U Σ V^T, ``clip_singular_values(A, c) = U min(Σ, c) V^T``, the Euclidean projection of A
onto the spectral-norm ball of radius c. SPECTRA (Jiang, Semenov, Stich, "Enhancing LLM Training
via Spectral Clipping", ICML 2026) applies it to optimizer updates and gradients; the paper's own
code replaces it by the smooth map σ / sqrt(1 + σ²/c²), which also shrinks the singular values
below c (by 11% at σ = c/2). This module computes the clipping itself.

Formulation. With A wide (k = m <= n; a tall A is transposed), q(σ) the fixed-step polar
iteration applied to σ (q ≈ 1 for σ > 0, q(0) = 0) and s = sign(c − σ q):

    Q = polar(A) = U q(Σ) V^T,      H = A Q^T = U Σ q(Σ) U^T   (k x k, symmetric),
    S = sign(c I − H) = U s U^T,    D = A − c Q,
    clip(A) = A − ½ (I − S) D = U [σ − ½ (1 − s)(σ − c q)] V^T,

which is min(σ, c) = σ − (σ − c)_+ with the projector ½(I − S) onto the singular directions
above c. Why this form:

- A kept singular value (s = 1) comes out as σ exactly, whatever the polar error q − 1: only the
  clipped ones carry it, as c (q − 1) with σ > c, where the polar iteration is accurate whenever
  c is not tiny against ||A||_F.
- The sign is taken of a matrix whose eigenvalues c − σ q are linear in σ, on the small k x k side.
  The Gram form sign(c² I − A A^T) has eigenvalues c² − σ², and the gap near the threshold
  shrinks relative to their range by about σ_max / (2c) (measured, a bulk of singular values
  straddling c = 1 plus spikes up to 100 or 1000: errors 4.5e-3 and 0.41 against 1.3e-4 and
  1.1e-3 here); forming (A A^T)^{-1/2} as a polynomial in the Gram matrix (to avoid the
  products with the n side) overflows on tiny singular values; and the form
  ½(A + cQ − Q P^T (cQ − A)) with P = polar(cQ − A) multiplies |σ − c q| by q, so every kept
  singular value carries the polar error (an odd function of σ needs that extra odd factor;
  the projector form above does not).
- Zero singular values stay zero (Q and H vanish there, s = 1, and A, Q have no component).
- c is replaced by min(c, 2 ||A||_F) (no singular value exceeds ||A||_F, so the result is the
  same) so that c Q never dwarfs A: with c >> ||A|| the rounding of A − c Q would swamp A. The
  factor 2 keeps the replaced threshold a distance ||A||_F from every singular value, where the
  sign is resolved (with ||A||_F itself a rank-one-like A would sit right at the threshold).

Accuracy. Both iterations are ``steps`` Polar Express quintics designed for [ℓ, 1] with the
smallest ℓ (a quarter decade) that ``steps`` steps bring to within 1e-9 of 1 in exact arithmetic
(ℓ = 3e-5 for the default 10 steps, 5.6e-4 for 8, 1.8e-6 for 12). A singular value is clipped to
rounding when σ >= ℓ ||A||_F (for the polar factor) and |σ − c| >= ℓ ||c I − H||_F (for the
sign); inside that band the error is at most |σ − c q| <= |σ − c| + c |q − 1|, a continuous
transition. Rounding adds roughly eps sqrt(k) σ_max / c relative to c near the threshold.
Measured as ||X − R||_2 / c against a float64 SVD (tests/linalg/test_linalg_spectral_clip.py):
float64 2e-14 to 2e-11 away from the band, singular values 1e-3 c from c included; float32
7e-8 to 1e-5 for c in [0.1, 0.5] σ_max at k <= 48, up to 2.4e-4 for c = 0.01 σ_max; at
1024 x 1024 (Gaussian) 4.6e-6 for c = 0.5 σ_max and 8.5e-5 for c = 0.1 σ_max, where a float32
SVD gives 4.2e-6 and 5.6e-6. With spikes 1000 c over a bulk around c (the stochastic gradients
SPECTRA pre-clips), float32 stalls at 1e-3 (eps sqrt(k) σ_max / c), float64 with steps=12
reaches 3e-12. "newton-schulz" (30 cubic steps, twice the products) rounds 2-5x less in float32.

Cost: a wide k x n A takes 10 (2 k²n + k³) multiply-adds for the polar factor, 30 k³ for the
sign and 2 k²n for H and S D: 62 k³ for a square matrix, matrix products only, so it batches and
runs on any device without a decomposition.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .coefficients import PAPER_CUSHION, composite_map, polar_express_coefficients
from .methods import POLAR_EXPRESS_SAFETY, run_fixed
from .norms import frobenius_norm
from .polar import _wide
from .validate import check_matrix, check_method

CLIP_METHODS = ("polar-express", "newton-schulz")
# Polar Express resolves [3e-5, 1] in 10 steps; the classical cubic grows small values by 1.5 per
# step, so it needs about 30 steps (60 products against 30) for the same resolution.
DEFAULT_CLIP_STEPS = {"polar-express": 10, "newton-schulz": 30}
CLIP_DTYPES = (torch.float32, torch.float64)
# Tolerance, in exact arithmetic, of the composite polynomial on [lower, 1] that fixes ``lower``.
_DESIGN_TOL = 1e-9


def clip_singular_values(A: torch.Tensor, max_sv: float | torch.Tensor, *, method: str = "polar-express",
                         steps: int | None = None, dtype: torch.dtype | None = None,
                         check_finite: bool = True) -> torch.Tensor:
    """U min(Σ, max_sv) V^T for A = U Σ V^T (..., m, n): singular values above max_sv set to it.

    ``max_sv``: a positive number, or a tensor of positive numbers broadcastable to the batch
    shape A.shape[:-2] (one threshold per matrix). ``method``: "polar-express" (default) or
    "newton-schulz", the polynomial of both the polar and the sign iteration; ``steps`` per
    iteration (default 10, or 30 for "newton-schulz"). ``dtype``: the working precision, float32
    or float64 (default: float64 for float64 input, float32 otherwise; half precisions are refused
    because eps = 8e-3 would blur the threshold by about 1%). The result has A's dtype.
    No synchronization unless ``check_finite`` (one check of A). See the module docstring for the
    formulation and its accuracy.

    Example:
        >>> A = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))
        >>> clip_singular_values(A, 2.0).diagonal()
        tensor([2.0000, 1.0000, 0.5000], dtype=torch.float64)
    """
    check_matrix(A, "A", check_finite=check_finite)
    check_method(method, CLIP_METHODS)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive int or None, got {steps!r}")
    work = dtype if dtype is not None else (torch.float64 if A.dtype == torch.float64 else torch.float32)
    if work not in CLIP_DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64 (the threshold needs more "
                        f"precision than half types give), got {work}")
    batch = A.shape[:-2]
    c = _thresholds(max_sv, batch, work, A.device)
    count = DEFAULT_CLIP_STEPS[method] if steps is None else steps
    lower = design_lower(count) if method == "polar-express" else 1.0
    run = lambda X: _clip_wide(X, c.reshape(-1, 1, 1), method, count, lower)
    return _wide(A.to(work), run).to(A.dtype)


def _clip_wide(X: torch.Tensor, c: torch.Tensor, method: str, steps: int, lower: float) -> torch.Tensor:
    """The clipping of a wide batch X (b, k, n), k <= n, with thresholds c (b or 1, 1, 1)."""
    c = torch.minimum(c, 2 * frobenius_norm(X))
    Q = run_fixed(X, method, steps, lower)
    H = X @ Q.mT
    H = 0.5 * (H + H.mT)  # symmetric in exact arithmetic; rounding would leak into the sign
    eye = torch.eye(X.shape[-2], dtype=X.dtype, device=X.device)
    S = run_fixed(c * eye - H, method, steps, lower, square=True)
    D = X - c * Q
    return torch.baddbmm(X - 0.5 * D, S, D, alpha=0.5)


def _thresholds(max_sv: float | torch.Tensor, batch: torch.Size, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """``max_sv`` as a tensor of the batch shape, after checking that every entry is finite and > 0."""
    if isinstance(max_sv, torch.Tensor):
        if max_sv.is_complex() or max_sv.dtype == torch.bool:
            raise TypeError(f"max_sv must hold real numbers, got dtype {max_sv.dtype}")
        try:
            c = torch.broadcast_to(max_sv.to(device=device, dtype=dtype), batch)
        except RuntimeError:
            raise ValueError(f"max_sv of shape {tuple(max_sv.shape)} does not broadcast to the batch "
                             f"shape {tuple(batch)} of A") from None
        if not bool(((c > 0) & torch.isfinite(c)).all()):
            raise ValueError("max_sv must be finite and > 0 for every matrix")
        return c
    if isinstance(max_sv, bool) or not isinstance(max_sv, (int, float)):
        raise TypeError(f"max_sv must be a real number or a tensor, got {type(max_sv).__name__}")
    if not (math.isfinite(max_sv) and max_sv > 0):
        raise ValueError(f"max_sv must be finite and > 0, got {max_sv!r}")
    return torch.full(batch, float(max_sv), dtype=dtype, device=device)


@lru_cache(maxsize=32)
def design_lower(steps: int) -> float:
    """The design bound ℓ of ``steps`` Polar Express steps used by the clipping.

    The smallest ℓ = 10^(-j/4) such that the composite of the ``steps`` polynomials designed for
    [ℓ, 1] maps every x in [ℓ, 1] to within 1e-9 of 1 (bisection over j; a smaller ℓ needs more
    steps). 1e-2 for 6 steps, 5.6e-4 for 8, 3.2e-5 for 10, 1.8e-6 for 12.

    Example:
        >>> design_lower(8)  # doctest: +ELLIPSIS
        0.000562...
    """
    def resolves(j: int) -> bool:
        lower = 10.0 ** (-j / 4)
        coeffs = polar_express_coefficients(5, steps, lower, POLAR_EXPRESS_SAFETY, PAPER_CUSHION)
        grid = np.logspace(math.log10(lower), 0.0, 200)
        return max(abs(1.0 - composite_map(float(x), coeffs)) for x in grid) <= _DESIGN_TOL

    good, bad = 0, 80  # 10^0 is always resolved (one Newton–Schulz-limit step fixes 1 exactly)
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if resolves(mid) else (good, mid)
    return 10.0 ** (-good / 4)
