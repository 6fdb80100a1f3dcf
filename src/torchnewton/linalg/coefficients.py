"""Minimax design of the odd polynomials behind Newton–Schulz-type polar iterations.

Every polar iteration here applies an odd polynomial to the singular values,

    p(x) = c_0 x + c_1 x^3 + ... + c_k x^{2k+1},      X <- c_0 X + c_1 (XX^T) X + ... ,

so the whole design problem is scalar: push every x in [l, u] as close to 1 as possible.
Polar Express (Amsel, Persson, Musco, Gower, "The Polar Express: Optimal Matrix Sign Methods
and Their Application to the Muon Algorithm", 2025) picks, at step t, the odd polynomial of the
given degree that minimizes max_{x in [l_t, u_t]} |1 - p(x)| (found here with the Remez exchange
algorithm), then continues on the image interval [l_{t+1}, u_{t+1}] = [p(l_t), 2 - p(l_t)].
The greedy composition is optimal among all compositions of such polynomials (their Theorem 4.1).

Two modifications from the paper make the coefficients usable in finite precision, and both are
part of the method (a coefficient list is only valid with its own normalization):

- cushion: the design interval's lower end is raised to at least ``cushion * u_t``; a polynomial
  designed for a tiny l has huge coefficients and amplifies rounding. The polynomial is then
  rescaled so that its images of l_t and u_t are centred on 1.
- safety: every polynomial except the converged limit is replaced by p(x / safety), so singular
  values that rounding pushed slightly above u_t are still mapped into [l_{t+1}, u_{t+1}]. The
  input must then be normalized by ``safety * ||A||_F`` (see ``polar``).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# The cushion used for the coefficients published in the paper.
PAPER_CUSHION = 0.02407327424182761

# Muon's fixed quintic (Jordan et al., 2024): slope 3.4445 at 0, oscillates around 1 without
# converging to it; kept here as the baseline the designed polynomials are compared against.
MUON_QUINTIC = (3.4445, -4.7750, 2.0315)


def newton_schulz_limit(degree: int) -> tuple[float, ...]:
    """Coefficients of the degree-``degree`` odd polynomial with the highest contact order at 1.

    It is x times the Taylor polynomial of (x^2)^{-1/2} = (1 - (1 - x^2))^{-1/2} about x = 1,

        p(x) = x * sum_{j=0}^{k} binom(2j, j) / 4^j * (1 - x^2)^j,     degree = 2k + 1,

    i.e. the classical Newton–Schulz iteration of that order: (3/2, -1/2) for degree 3 and
    (15/8, -10/8, 3/8) for degree 5. It is what the minimax polynomial tends to as the interval
    shrinks to a point, and the iteration it defines converges to 1 with order k + 1.

    Example:
        >>> newton_schulz_limit(5)
        (1.875, -1.25, 0.375)
    """
    k = _half_degree(degree)
    coeffs = [0.0] * (k + 1)
    for j in range(k + 1):
        weight = math.comb(2 * j, j) / 4**j
        # expand (1 - y)^j with y = x^2
        for i in range(j + 1):
            coeffs[i] += weight * math.comb(j, i) * (-1) ** i
    return tuple(coeffs)


def minimax_odd_polynomial(lower: float, upper: float, degree: int = 5) -> tuple[tuple[float, ...], float]:
    """The odd polynomial p of the given degree minimizing max_{x in [lower, upper]} |1 - p(x)|.

    Remez exchange: with k + 1 coefficients, the optimum equioscillates at k + 2 points
    lower = x_0 < x_1 < ... < x_{k+1} = upper, with p(x_i) = 1 - (-1)^i E. Each sweep solves this
    linear system for (c, E), then moves the interior points to the local extrema of p (the roots
    of p', a polynomial in x^2), until E stops changing.

    Returns the coefficients (c_0, ..., c_k) and the minimax error E.

    Example:
        >>> coeffs, err = minimax_odd_polynomial(0.1, 1.0, degree=3)
        >>> round(err, 6)
        0.60723
    """
    k = _half_degree(degree)
    if not 0.0 < lower < upper:
        raise ValueError(f"need 0 < lower < upper, got lower={lower}, upper={upper}")
    # Work on [lower/upper, 1] so the Vandermonde matrix stays well scaled; rescale at the end.
    lo = lower / upper
    powers = np.arange(k + 1) * 2 + 1
    signs = (-1.0) ** np.arange(k + 2)
    nodes = (1 + lo) / 2 - (1 - lo) / 2 * np.cos(np.pi * np.arange(k + 2) / (k + 1))
    error = math.inf
    for _ in range(100):
        system = np.column_stack([nodes[:, None] ** powers[None, :], signs])
        solution = np.linalg.solve(system, np.ones(k + 2))
        coeffs, new_error = solution[:-1], abs(solution[-1])
        # interior extrema: p'(x) = sum_j (2j+1) c_j x^{2j} = 0, solved for y = x^2
        derivative = (powers * coeffs)[::-1]
        roots = np.roots(derivative) if k > 0 else np.array([])
        real = roots[np.abs(roots.imag) <= 1e-12 * np.abs(roots)].real
        x = np.sqrt(real[real > 0])
        interior = np.sort(x[(x > lo) & (x < 1)])
        converged = abs(new_error - error) <= 1e-15 * max(1.0, new_error)
        error = new_error
        if converged or interior.size != k:
            break
        nodes = np.concatenate([[lo], interior, [1.0]])
    scaled = tuple(float(c / upper**p) for c, p in zip(coeffs, powers))
    return scaled, float(error)


@lru_cache(maxsize=64)
def polar_express_coefficients(
    degree: int = 5,
    steps: int = 8,
    lower: float = 1e-3,
    safety: float = 1.01,
    cushion: float = PAPER_CUSHION,
) -> tuple[tuple[float, ...], ...]:
    """Per-step coefficients of Polar Express for singular values in [lower, 1].

    Step t uses the minimax odd polynomial on [max(l_t, cushion * u_t), u_t], rescaled by
    2 / (p(l_t) + p(u_t)) so that the image of [l_t, u_t] is [l_{t+1}, 2 - l_{t+1}]; l_0 = lower,
    u_0 = 1. Once the interval is so narrow that the limit polynomial (``newton_schulz_limit``)
    is within float64 resolution of 1 on it, every later step is that limit polynomial: it is the
    minimax polynomial of a vanishing interval and converges to 1 with order (degree + 1) / 2.
    Each polynomial except the limit is finally replaced by p(x / safety) (``safety=1`` gives the
    raw minimax polynomials). Results are cached.

    Returns a tuple of ``steps`` tuples (c_0, ..., c_k), p(x) = sum_j c_j x^{2j+1}.

    Example (the first step of the paper's list, before the safety factor):
        >>> polar_express_coefficients(steps=1, safety=1.0)[0]  # doctest: +ELLIPSIS
        (8.2872120181..., -23.595886519..., 17.300387312...)
    """
    _half_degree(degree)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not 0.0 < lower <= 1.0:
        raise ValueError(f"lower must lie in (0, 1], got {lower}")
    if safety < 1.0:
        raise ValueError(f"safety must be >= 1, got {safety}")
    if not 0.0 <= cushion < 1.0:
        raise ValueError(f"cushion must lie in [0, 1), got {cushion}")
    limit = newton_schulz_limit(degree)
    lo, hi = lower, 1.0
    schedule: list[tuple[float, ...]] = []
    for _ in range(steps):
        narrow = hi - lo <= 0.0 or 1.0 - _evaluate(limit, lo) <= 2.0**-52
        if narrow:
            schedule.append(limit)
            lo = _evaluate(limit, lo)
            hi = 2.0 - lo
            continue
        coeffs, _ = minimax_odd_polynomial(max(lo, cushion * hi), hi, degree)
        scale = 2.0 / (_evaluate(coeffs, lo) + _evaluate(coeffs, hi))
        coeffs = tuple(scale * c for c in coeffs)
        lo = _evaluate(coeffs, lo)
        hi = 2.0 - lo
        schedule.append(tuple(float(c) / safety ** (2 * j + 1) for j, c in enumerate(coeffs)))
    return tuple(schedule)


def composite_map(x: float, schedule: tuple[tuple[float, ...], ...]) -> float:
    """Apply the polynomials of ``schedule`` in turn to the scalar ``x`` (one singular value).

    Example:
        >>> round(composite_map(1.0, (newton_schulz_limit(3),)), 12)
        1.0
    """
    for coeffs in schedule:
        x = _evaluate(coeffs, x)
    return x


def _evaluate(coeffs: tuple[float, ...], x: float) -> float:
    y = x * x
    acc = 0.0
    for c in reversed(coeffs):
        acc = acc * y + c
    return acc * x


def _half_degree(degree: int) -> int:
    if not isinstance(degree, int) or degree < 3 or degree % 2 == 0:
        raise ValueError(f"degree must be an odd integer >= 3, got {degree!r}")
    return (degree - 1) // 2
