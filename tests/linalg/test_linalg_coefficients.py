"""Polar Express coefficients: Remez design vs the paper's published list, and composite maps."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from linalg_helpers import with_singular_values
from torchnewton.linalg import minimax_odd_polynomial, newton_schulz_limit, polar, polar_express_coefficients
from torchnewton.bench.problems.polar_express_published import PUBLISHED_POLAR_EXPRESS
from torchnewton.linalg.coefficients import MUON_QUINTIC, composite_map

PUBLISHED = PUBLISHED_POLAR_EXPRESS


def test_designed_coefficients_match_published_list():
    ours = polar_express_coefficients(degree=5, steps=8, lower=1e-3, safety=1.0)
    for step, (mine, theirs) in enumerate(zip(ours, PUBLISHED)):
        # step 7's interval has width ~1e-4, where the Remez system is ill-conditioned
        rtol = 1e-10 if step == 6 else 1e-13
        np.testing.assert_allclose(mine, theirs, rtol=rtol, err_msg=f"step {step}")
    assert ours[7] == (1.875, -1.25, 0.375)


def test_safety_factor_is_applied_to_all_but_the_limit_polynomial():
    safe = polar_express_coefficients(steps=10, safety=1.01)
    for mine, (a, b, c) in zip(safe[:7], PUBLISHED[:7]):
        np.testing.assert_allclose(mine, (a / 1.01, b / 1.01**3, c / 1.01**5), rtol=1e-10)
    assert safe[7:] == ((1.875, -1.25, 0.375),) * 3


def test_composite_maps_of_polar_express_and_muon_quintic():
    xs = np.logspace(-3, 0, 4001)
    pe5 = [composite_map(x, polar_express_coefficients(steps=5)) for x in xs]
    quintic5 = [composite_map(x, (MUON_QUINTIC,) * 5) for x in xs]
    assert 0.84 < min(pe5) < 0.86 and 1.11 < max(pe5) < 1.13  # issue: about [0.85, 1.13]
    assert 0.46 < min(quintic5) < 0.48 and 1.19 < max(quintic5) < 1.21  # issue: about [0.47, 1.20]


def test_eight_steps_reach_one_percent_in_float32():
    schedule = polar_express_coefficients(steps=8)
    x = torch.logspace(-3, 0, 10001, dtype=torch.float32)
    for a, b, c in schedule:
        y = x * x
        x = x * (a + y * (b + c * y))
    assert float((x - 1).abs().max()) < 1e-2
    # and on a float32 matrix whose normalized singular values span [2e-3, 1]
    g = torch.Generator().manual_seed(0)
    s = torch.cat([torch.ones(1, dtype=torch.float64), torch.logspace(-2.7, -1, 15, dtype=torch.float64)])
    A = with_singular_values(s, 24, 16, g).float()
    sigma = torch.linalg.svdvals(polar(A, steps=8).double())
    assert float((sigma - 1).abs().max()) < 1e-2


def test_limit_polynomials():
    assert newton_schulz_limit(3) == (1.5, -0.5)
    assert newton_schulz_limit(5) == (1.875, -1.25, 0.375)
    c = newton_schulz_limit(7)
    # order-4 contact at 1: p(1) = 1 and p'(1) = p''(1) = p'''(1) = 0
    p = np.polynomial.Polynomial([0, c[0], 0, c[1], 0, c[2], 0, c[3]])
    assert abs(p(1.0) - 1) < 1e-15
    for order in (1, 2, 3):
        assert abs(p.deriv(order)(1.0)) < 1e-12


@settings(max_examples=30, deadline=None)
@given(lower=st.floats(1e-3, 0.9), degree=st.sampled_from([3, 5, 7]))
def test_minimax_polynomial_equioscillates(lower, degree):
    coeffs, error = minimax_odd_polynomial(lower, 1.0, degree)
    x = np.linspace(lower, 1.0, 20001)
    p = sum(c * x ** (2 * j + 1) for j, c in enumerate(coeffs))
    deviation = np.abs(1 - p)
    assert deviation.max() <= error * (1 + 1e-6) + 1e-12
    assert abs(deviation[0] - error) <= 1e-9 * max(1.0, error)
    assert abs(deviation[-1] - error) <= 1e-9 * max(1.0, error)
    # an optimum is not improved by nudging the coefficients
    rng = np.random.default_rng(0)
    for _ in range(5):
        nudged = np.asarray(coeffs) * (1 + 1e-4 * rng.standard_normal(len(coeffs)))
        q = sum(c * x ** (2 * j + 1) for j, c in enumerate(nudged))
        assert np.abs(1 - q).max() >= error * (1 - 1e-9)


def test_scaled_interval_matches_unit_interval():
    small, e_small = minimax_odd_polynomial(0.02, 0.5, 5)
    unit, e_unit = minimax_odd_polynomial(0.04, 1.0, 5)
    assert math.isclose(e_small, e_unit, rel_tol=1e-12)
    for j, (a, b) in enumerate(zip(small, unit)):
        assert math.isclose(a, b * 2 ** (2 * j + 1), rel_tol=1e-10)


@pytest.mark.parametrize("kwargs", [dict(degree=4), dict(degree=1), dict(lower=0.0), dict(lower=2.0),
                                    dict(safety=0.5), dict(cushion=1.0), dict(steps=-1)])
def test_bad_design_arguments(kwargs):
    with pytest.raises(ValueError):
        polar_express_coefficients(**kwargs)
