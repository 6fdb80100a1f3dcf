"""The high-pass designer: two-band Remez against a linear program and the one-band designer,
the composite filter against its design error and an SVD reference, the normalization bounds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from torchnewton.linalg.coefficients import composite_map, minimax_odd_polynomial
from torchnewton.linalg.highpass import (
    highpass_coefficients,
    highpass_error,
    suppression_limit,
    two_band_minimax_odd_polynomial,
)
from torchnewton.optim.spectral_filters import apply_odd_polynomials, spectral_normalization

F64 = torch.float64


def _evaluate(coeffs, x):
    return sum(c * x ** (2 * j + 1) for j, c in enumerate(coeffs))


def _composite(schedule, x):
    for coeffs in schedule:
        x = _evaluate(coeffs, x)
    return x


def _linear_program(stop, lower, upper, degree, points=4000):
    """The same minimax problem discretized: min E s.t. |p - target| <= E on a fine grid (HiGHS)."""
    x = np.concatenate([np.linspace(stop / points, stop, points), np.linspace(lower, upper, points)])
    target = (x >= lower).astype(float)
    basis = np.stack([x ** (2 * j + 1) for j in range((degree + 1) // 2)], axis=1)
    ones = np.ones((len(x), 1))
    A = np.vstack([np.hstack([basis, -ones]), np.hstack([-basis, -ones])])
    b = np.concatenate([target, -target])
    cost = np.zeros(basis.shape[1] + 1)
    cost[-1] = 1.0
    result = linprog(cost, A_ub=A, b_ub=b, bounds=[(None, None)] * basis.shape[1] + [(0, None)], method="highs")
    return result.x[:-1], result.x[-1]


@pytest.mark.parametrize("stop, lower, upper, degree", [
    (0.25, 0.5, 1.0, 5), (0.4, 0.5, 1.5, 5), (0.1, 0.9, 1.1, 5), (0.2, 0.5, 1.0, 7), (0.3, 0.6, 1.2, 3)])
def test_two_band_remez_matches_linear_program(stop, lower, upper, degree):
    coeffs, error = two_band_minimax_odd_polynomial(stop, lower, upper, degree)
    lp_coeffs, lp_error = _linear_program(stop, lower, upper, degree)
    # The grid optimum lies below the continuous one by at most the grid's resolution.
    assert lp_error <= error + 1e-9
    assert error - lp_error <= 1e-5 * max(error, 1e-3)
    assert np.allclose(coeffs, lp_coeffs, atol=1e-3 * np.abs(lp_coeffs).max())
    # And the Remez error is the true maximum over both bands (dense check).
    x_stop, x_pass = np.linspace(0, stop, 20001), np.linspace(lower, upper, 20001)
    dense = max(np.abs(_evaluate(coeffs, x_stop)).max(), np.abs(1 - _evaluate(coeffs, x_pass)).max())
    assert dense == pytest.approx(error, rel=1e-9)


def test_vanishing_stop_band_gives_the_one_band_minimax_polynomial():
    """Odd polynomials vanish at 0: a stop band [0, 1e-7] constrains nothing."""
    coeffs, error = two_band_minimax_odd_polynomial(1e-7, 0.2, 1.0, 5)
    reference, reference_error = minimax_odd_polynomial(0.2, 1.0, 5)
    assert error == pytest.approx(reference_error, rel=1e-9)
    assert np.allclose(coeffs, reference, rtol=1e-7)


def test_suppression_limit_is_the_papers_polynomial_and_the_narrow_band_limit():
    assert suppression_limit(5) == (0.0, 2.5, -1.5)
    p = suppression_limit(7)
    assert _evaluate(p, 1.0) == pytest.approx(1.0) and p[0] == 0.0
    # the derivatives 1..k-1 vanish at 1: degree 7 has p'(1) = p''(1) = 0
    assert sum((2 * j + 1) * c for j, c in enumerate(p)) == pytest.approx(0.0, abs=1e-12)
    assert sum((2 * j + 1) * (2 * j) * c for j, c in enumerate(p)) == pytest.approx(0.0, abs=1e-12)
    # bands [0, e] and [1 - e, 1 + e] shrinking: the minimax polynomial tends to the limit
    gaps = [max(abs(a - b) for a, b in zip(two_band_minimax_odd_polynomial(e, 1 - e, 1 + e)[0], (0.0, 2.5, -1.5)))
            for e in (1e-2, 1e-3)]
    assert gaps[1] < 0.2 * gaps[0] and gaps[1] < 0.02


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("steps", [4, 5])
def test_composite_meets_its_design_error(threshold, steps):
    """Pass band [tau, 1.5] within E of 1, stop band [0, tau / 2] within E of 0, the transition band
    monotone and everything inside [-E, 1 + E]."""
    schedule = highpass_coefficients(threshold, steps)
    error = highpass_error(threshold, steps)
    assert len(schedule) == steps
    x = np.linspace(0.0, 1.5, 300001)
    F = _composite(schedule, x)
    passband, stopband = x >= threshold, x <= 0.5 * threshold
    assert np.abs(F[passband] - 1).max() <= error * (1 + 1e-6) + 1e-12
    assert np.abs(F[stopband]).max() <= error * (1 + 1e-6) + 1e-12
    assert np.abs(F).max() <= 1 + error * (1 + 1e-6) + 1e-12
    assert F.min() >= -error * (1 + 1e-6) - 1e-12
    transition = (x > 0.5 * threshold) & (x < threshold)
    assert np.all(np.diff(F[transition]) >= -1e-12)
    # The designs used by Pion's defaults are accurate (documented: E < 1e-3 at 5 steps, tau >= 0.3).
    if steps == 5 and threshold >= 0.3:
        assert error < 1e-3


def test_more_steps_sharpen_and_bad_arguments_raise():
    assert highpass_error(0.3, 6) < highpass_error(0.3, 5) < highpass_error(0.3, 4)
    assert highpass_error(0.5, 5, transition=0.75) > highpass_error(0.5, 5, transition=0.5)
    for kwargs in ({"threshold": 0.0, "steps": 5}, {"threshold": 2.0, "steps": 5}, {"threshold": 0.5, "steps": 0},
                   {"threshold": 0.5, "steps": 5, "transition": 1.0},
                   {"threshold": 0.5, "steps": 5, "promotion_steps": 5}):
        with pytest.raises(ValueError):
            highpass_coefficients(**kwargs)
    with pytest.raises(ValueError, match="stop < lower < upper"):
        two_band_minimax_odd_polynomial(0.5, 0.4, 1.0)


def _with_singular_values(s, rows, cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(rows, len(s), generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(cols, len(s), generator=g, dtype=F64))
    return U, torch.tensor(s, dtype=F64), V


def test_filter_on_matrices_matches_svd_reference():
    """Pion's designed filter (tau = 0.5, 5 steps) on a 12 x 20 matrix with known singular values:
    values >= tau sigma_1 come out 1 and values <= tau sigma_1 / 2 come out 0 within the design
    error 3e-5 (plus the normalization's power-iteration error, ~1e-6 here), against U h V^T."""
    tau = 0.5
    s = [4.0, 3.6, 2.8, 2.2, 0.9, 0.4, 0.2, 0.04]  # relative: 1, .9, .7, .55 | .225, .1, .05, .01
    U, S, V = _with_singular_values(s, 12, 20)
    M = (U * S) @ V.T
    schedule = highpass_coefficients(tau, 5)
    out = apply_odd_polynomials(M[None], schedule, spectral_normalization(1.5, 8), F64)[0]
    ideal = (U * (S >= tau * S[0]).to(F64)) @ V.T
    tolerance = highpass_error(tau, 5) + 1e-5
    assert torch.linalg.matrix_norm(out - ideal, ord=2) <= tolerance
    # and equal to the scalar composite applied to S / sigma_1 through the SVD
    reference = (U * torch.tensor([composite_map(v / s[0], schedule) for v in s], dtype=F64)) @ V.T
    assert torch.linalg.matrix_norm(out - reference, ord=2) <= 1e-5


@pytest.mark.parametrize("spectrum", ["gaussian", "decaying", "low-rank", "flat"])
def test_spectral_normalization_bounds(spectrum):
    """sigma_1 / s always in [1, 1.5] (certified); measured within 11% of 1 on these families."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(16, 48, 96, generator=g, dtype=F64)
    if spectrum == "decaying":
        U, _, Vh = torch.linalg.svd(A, full_matrices=False)
        A = (U * torch.logspace(0, -3, 48, dtype=F64)) @ Vh
    elif spectrum == "low-rank":
        A = torch.randn(16, 48, 3, generator=g, dtype=F64) @ torch.randn(16, 3, 96, generator=g, dtype=F64) + 0.05 * A
    elif spectrum == "flat":
        U, _, Vh = torch.linalg.svd(A, full_matrices=False)
        A = U @ Vh
    X, G = spectral_normalization(1.5, 8)(A)
    ratio = torch.linalg.svdvals(X)[:, 0]
    assert torch.allclose(G, X @ X.mT, atol=1e-12)
    assert bool((ratio >= 1 - 1e-12).all()) and bool((ratio <= 1.5 + 1e-12).all())
    assert float(ratio.max()) <= 1.11
    zero = spectral_normalization(1.5, 8)(torch.zeros(1, 3, 5, dtype=F64))[0]
    assert bool((zero == 0).all())
