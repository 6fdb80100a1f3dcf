"""Matrix Newton iterations: polar factor, matrix sign, square roots, inverse roots, pseudo-inverse.

Every function is batched over leading dimensions, works in float64, float32 and bfloat16 on any
device, and uses matrix products only (the Denman–Beavers option of the square roots excepted).

- ``polar(A, method=...)``: orthogonal polar factor U V^T by Newton–Schulz, Muon's quintic,
  Polar Express or AOL-preconditioned Polar Express; differentiable by a Lyapunov solve.
- ``orthogonalize(G, ...)``: the fixed-cost version an optimizer calls every step.
- ``polar_express_coefficients(...)``: the Remez-designed Polar Express polynomials.
- ``sign(A)``, ``sqrtm(A)``, ``inv_sqrtm(A)``, ``inv_root(A, p)``, ``pinv(A)``.
- ``highpass_coefficients(threshold, steps)``: odd polynomials whose composition maps singular
  values above ``threshold`` to 1 and below it to 0 (Pion's high-pass filter).
- ``clip_singular_values(A, max_sv)``: min(sigma, max_sv) on the singular values (SPECTRA).
- ``solve_lyapunov(H, C)``: H X + X H = C by the matrix sign iteration (used by the backward passes).

Example:
    >>> import torch, torchnewton.linalg as tl
    >>> Q = tl.polar(torch.randn(8, 5, dtype=torch.float64))
    >>> torch.allclose(Q.mT @ Q, torch.eye(5, dtype=torch.float64))
    True
"""
from .backward import solve_lyapunov
from .highpass import highpass_coefficients, two_band_minimax_odd_polynomial
from .coefficients import minimax_odd_polynomial, newton_schulz_limit, polar_express_coefficients
from .pinv import pinv
from .polar import POLAR_METHODS, orthogonalize, polar
from .roots import inv_root, inv_sqrtm, sqrtm
from .sign import sign
from .spectral_clip import clip_singular_values

__all__ = [
    "POLAR_METHODS",
    "clip_singular_values",
    "highpass_coefficients",
    "inv_root",
    "inv_sqrtm",
    "minimax_odd_polynomial",
    "newton_schulz_limit",
    "orthogonalize",
    "pinv",
    "polar",
    "polar_express_coefficients",
    "sign",
    "solve_lyapunov",
    "sqrtm",
    "two_band_minimax_odd_polynomial",
]
