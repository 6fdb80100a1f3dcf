"""Odd polynomials whose composition is a spectral high-pass filter (Pion's iteration).

Applied to the singular values of X (see ``polynomial.odd_polynomial_step``), a composition of
odd polynomials F = p_K ∘ ... ∘ p_1 maps X = U S V^T to U F(S) V^T. Pion (Fan, Liu, Hong,
Kompella, Liu, "Rethinking Muon Beyond Pretraining: Spectral Failures and High-Pass Remedies for
VLA and RLVR", 2026) wants the step function

    F(x) ≈ 1 for x >= tau (pass band [tau, upper]),   F(x) ≈ 0 for x <= rho tau (stop band [0, rho tau]),

with a transition band (rho tau, tau) in between. The paper composes two fixed quintics, the
promotion polynomial (15x - 10x^3 + 3x^5) / 8 (Newton–Schulz, lifts everything towards 1) and
the suppression polynomial (5x^3 - 3x^5) / 2 (repels from sqrt(2/3): larger values go to 1,
smaller to 0), after a Frobenius normalization, so its cut sits wherever the promotion steps put
the pre-image of sqrt(2/3). Here the cut is placed where it is asked for, with designed
polynomials, in the same two stages:

- promotion (k_p steps): the Polar Express polynomials of the pass band (``polar_express_coefficients``,
  the minimax polynomials of [tau, upper]) narrow the pass band's image to [l, 2 - l] around 1;
  they are increasing on [0, tau], so the stop band's image stays below that of tau;
- suppression (K - k_p steps): at each step the odd polynomial of the given degree minimizing

      max( max_{x in [0, c]} |p(x)|,  max_{x in [a, b]} |1 - p(x)| )

  over the current images [0, c] (stop) and [a, b] (pass) — the two-band minimax problem, solved
  by Remez exchange (``two_band_minimax_odd_polynomial``). With error E, the images become
  [0, E] and [1 - E, 1 + E] and the next step repeats on those. As E -> 0 this polynomial tends
  to the one with p'(0) = 0 and the highest contact order with 1 at x = 1 (``suppression_limit``),
  which for degree 5 is exactly the paper's (5x^3 - 3x^5) / 2.

Left unset, k_p is the count (0 <= k_p < K) that gives the smallest final error. The composite
then maps the stop band into [-E, E] and the pass band into [1 - E, 1 + E], E the last step's
error (``highpass_error``). In the transition band it rises monotonically (checked on a grid in
the tests); with 5 steps and rho = 1/2 it crosses 1/2 at 0.84-0.87 tau and 0.01 at 0.58-0.75
tau (tau from 0.2 to 0.7), so the filter is sharper than the band it was designed for.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .coefficients import PAPER_CUSHION, _evaluate, _half_degree, polar_express_coefficients


def two_band_minimax_odd_polynomial(stop: float, lower: float, upper: float,
                                    degree: int = 5) -> tuple[tuple[float, ...], float]:
    """The odd p of the given degree minimizing max(max_{[0, stop]} |p|, max_{[lower, upper]} |1 - p|).

    Remez exchange, as in ``minimax_odd_polynomial`` but on two bands: {x, x^3, ..., x^{2k+1}}
    is a Chebyshev system on (0, inf) (Descartes' rule of signs), so the optimum equioscillates
    at k + 2 points of (0, stop] ∪ [lower, upper]. Each sweep solves for (c, E) on the current
    points, then takes as new points the band edges stop, lower, upper and the local extrema of p
    inside the bands (roots of p', a polynomial in x^2), keeping an alternating subset. At x = 0
    every odd polynomial vanishes, so (0, stop] loses nothing against [0, stop].

    Returns the coefficients (c_0, ..., c_k) and the minimax error E. Raises ValueError if the
    bands do not leave k + 2 alternation points (a degenerate design).

    Example:
        >>> coeffs, err = two_band_minimax_odd_polynomial(0.25, 0.5, 1.0)
        >>> round(err, 6)
        0.262654
    """
    k = _half_degree(degree)
    if not 0.0 < stop < lower < upper:
        raise ValueError(f"need 0 < stop < lower < upper, got stop={stop}, lower={lower}, upper={upper}")
    # Work on the bands divided by upper (a well-scaled Vandermonde matrix); rescale at the end.
    c, a = stop / upper, lower / upper
    powers = np.arange(k + 1) * 2 + 1
    signs = (-1.0) ** np.arange(k + 2)
    in_stop = (k + 2) // 2
    nodes = np.concatenate([c * np.linspace(0.5, 1.0, in_stop), np.linspace(a, 1.0, k + 2 - in_stop)])
    for _ in range(100):
        target = (nodes >= a).astype(float)
        system = np.column_stack([nodes[:, None] ** powers[None, :], signs])
        solution = np.linalg.solve(system, target)
        coeffs, level = solution[:-1], abs(solution[-1])
        nodes, largest = _alternating_extrema(coeffs, powers, c, a, k + 2)
        if largest - level <= 1e-13 * max(1.0, level):
            break
    scaled = tuple(float(ci / upper**p) for ci, p in zip(coeffs, powers))
    return scaled, float(largest)


def _alternating_extrema(coeffs: np.ndarray, powers: np.ndarray, stop: float, lower: float,
                         count: int) -> tuple[np.ndarray, float]:
    """The next Remez reference: ``count`` points of alternating error sign, largest errors kept."""
    derivative = (powers * coeffs)[::-1]
    roots = np.roots(derivative) if len(coeffs) > 1 else np.array([])
    real = roots[np.abs(roots.imag) <= 1e-12 * np.abs(roots)].real
    critical = np.sqrt(real[real > 0])
    candidates = np.sort(np.concatenate([
        critical[critical < stop], [stop, lower], critical[(critical > lower) & (critical < 1.0)], [1.0]]))
    errors = np.polyval(coeffs[::-1], candidates**2) * candidates - (candidates >= lower)
    chosen: list[tuple[float, float]] = []
    for x, e in zip(candidates, errors):
        if chosen and np.sign(e) == np.sign(chosen[-1][1]):
            if abs(e) > abs(chosen[-1][1]):
                chosen[-1] = (x, e)
        else:
            chosen.append((x, e))
    while len(chosen) > count:  # drop the smaller end: the rest still alternates
        chosen.pop(0 if abs(chosen[0][1]) < abs(chosen[-1][1]) else -1)
    if len(chosen) < count:
        raise ValueError("the two-band design lost its alternation (bands too close or too narrow "
                         "for this degree)")
    return np.array([x for x, _ in chosen]), max(abs(e) for _, e in chosen)


def suppression_limit(degree: int = 5) -> tuple[float, ...]:
    """The odd polynomial with p'(0) = 0 and the highest contact order with 1 at x = 1.

    p(x) = c_1 x^3 + ... + c_k x^{2k+1} with p(1) = 1 and p^{(i)}(1) = 0 for i = 1 .. k - 1: the
    limit of the two-band design as both bands shrink to {0} and {1}. It maps a small x to
    O(x^3) and 1 - e to 1 - O(e^k); its repelling fixed point separates the two basins. Degree 5
    gives Pion's suppression polynomial (0, 5/2, -3/2), repelling at sqrt(2/3).

    Example:
        >>> suppression_limit(5)
        (0.0, 2.5, -1.5)
    """
    k = _half_degree(degree)
    powers = np.arange(1, k + 1) * 2 + 1
    # row i: the i-th derivative of x^p at 1 is p (p - 1) ... (p - i + 1)
    rows = [[math.perm(int(p), i) for p in powers] for i in range(k)]
    rhs = np.zeros(k)
    rhs[0] = 1.0
    solution = np.linalg.solve(np.array(rows, dtype=float), rhs)
    return (0.0, *(float(round(s, 12)) for s in solution))


@lru_cache(maxsize=64)
def highpass_coefficients(threshold: float, steps: int, degree: int = 5, transition: float = 0.5,
                          upper: float = 1.5, promotion_steps: int | None = None) -> tuple[tuple[float, ...], ...]:
    """Per-step odd polynomials whose composition approximates the step at ``threshold``.

    Pass band [threshold, upper] -> 1, stop band [0, transition * threshold] -> 0 (see the module
    docstring for the two stages). ``upper`` > 1 leaves room for a normalization by an estimate of
    the largest singular value that falls short of it (power iteration estimates from below).
    ``promotion_steps`` (k_p) fixes the number of Polar Express steps; None picks the count with
    the smallest final error. Results are cached.

    Returns ``steps`` tuples (c_0, ..., c_k), p(x) = sum_j c_j x^{2j+1}; the maximal deviation
    of the composite from the step on the two bands is ``highpass_error(...)`` with the same
    arguments.

    Example:
        >>> from torchnewton.linalg.coefficients import composite_map
        >>> schedule = highpass_coefficients(0.5, steps=5)
        >>> abs(composite_map(0.8, schedule) - 1) < 1e-4, abs(composite_map(0.2, schedule)) < 1e-4
        (True, True)
    """
    return _design(threshold, steps, degree, transition, upper, promotion_steps)[0]


def highpass_error(threshold: float, steps: int, degree: int = 5, transition: float = 0.5,
                   upper: float = 1.5, promotion_steps: int | None = None) -> float:
    """The design error E of ``highpass_coefficients`` with the same arguments.

    The composite maps [0, transition * threshold] into [-E, E] and [threshold, upper] into
    [1 - E, 1 + E].

    Example:
        >>> highpass_error(0.5, steps=5) < 1e-3
        True
    """
    return _design(threshold, steps, degree, transition, upper, promotion_steps)[1]


@lru_cache(maxsize=64)
def _design(threshold: float, steps: int, degree: int, transition: float, upper: float,
            promotion_steps: int | None) -> tuple[tuple[tuple[float, ...], ...], float, int]:
    _half_degree(degree)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0.0 < threshold < upper:
        raise ValueError(f"threshold must lie in (0, upper={upper}), got {threshold!r}")
    if not upper >= 1.0:
        raise ValueError(f"upper must be >= 1, got {upper!r}")
    if not 0.0 < transition < 1.0:
        raise ValueError(f"transition must lie in (0, 1), got {transition!r}")
    if promotion_steps is not None:
        valid = isinstance(promotion_steps, int) and not isinstance(promotion_steps, bool)
        if not (valid and 0 <= promotion_steps < steps):
            raise ValueError(f"promotion_steps must be an integer in [0, steps), got {promotion_steps!r}")
        candidates = [promotion_steps]
    else:
        candidates = list(range(steps))
    best: tuple[tuple[tuple[float, ...], ...], float, int] | None = None
    for count in candidates:
        try:
            schedule, error = _staged_design(threshold, steps, degree, transition, upper, count)
        except ValueError:
            continue
        if best is None or error < best[1]:
            best = (schedule, error, count)
    if best is None:
        raise ValueError(f"no high-pass design with threshold={threshold}, transition={transition}, "
                         f"steps={steps}, degree={degree}: the bands are too close for this budget")
    return best


def _staged_design(threshold: float, steps: int, degree: int, transition: float, upper: float,
                   promotion: int) -> tuple[tuple[tuple[float, ...], ...], float]:
    """k_p Polar Express steps on [threshold, upper], then two-band minimax steps."""
    schedule: list[tuple[float, ...]] = []
    stop, lower = transition * threshold, threshold
    if promotion:
        # Polar Express for [threshold / upper, 1], its first polynomial taking x / upper.
        raw = polar_express_coefficients(degree, promotion, threshold / upper, 1.0, PAPER_CUSHION)
        first = tuple(c / upper ** (2 * j + 1) for j, c in enumerate(raw[0]))
        schedule = [first, *raw[1:]]
        for coeffs in schedule:
            stop, lower = _evaluate(coeffs, stop), _evaluate(coeffs, lower)
        upper = 2.0 - lower
        if not stop < lower:
            raise ValueError("promotion merged the bands")
    error = math.inf
    limit = suppression_limit(degree)
    for _ in range(steps - promotion):
        if error <= 1e-6:
            # Both bands are points to working precision: the limit polynomial, whose images of
            # the band edges bound the next error.
            coeffs = limit
            error = max(abs(_evaluate(coeffs, stop)), abs(1.0 - _evaluate(coeffs, lower)),
                        abs(1.0 - _evaluate(coeffs, upper)))
        else:
            coeffs, error = two_band_minimax_odd_polynomial(stop, lower, upper, degree)
        if not error < 0.5:
            raise ValueError("the suppression step does not separate the bands")
        schedule.append(coeffs)
        stop, lower, upper = error, 1.0 - error, 1.0 + error
    return tuple(schedule), error
