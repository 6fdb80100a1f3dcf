"""The Moré–Garbow–Hillstrom test functions as batched torch residuals.

Source: J. J. Moré, B. S. Garbow and K. E. Hillstrom, "Testing unconstrained optimization
software", ACM Transactions on Mathematical Software 7(1), 17–41, 1981.  Problem numbers in
the comments below are the paper's.

Each problem is a residual ``r: R^n -> R^m`` written in pure torch, so autodiff works, and it
maps ``(..., n) -> (..., m)``: a batch ``X`` of shape ``(B, n)`` gives ``(B, m)``, row by row.
Data constants are created in the dtype and on the device of the input.

``f_star`` follows the paper's convention ``f(x) = sum_i r_i(x)**2`` (no factor 1/2) and is the
published optimal value, quoted to the digits the paper gives.  ``x_star`` is set where the
paper gives the minimizer in closed form.  ``is_square_system`` marks the problems with
``m == n`` and a zero residual at the solution, which are usable as root-finding tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Residual = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MGHProblem:
    """One Moré–Garbow–Hillstrom problem with its standard starting point."""

    name: str
    n: int
    m: int
    x0: torch.Tensor
    residual: Residual
    f_star: float
    is_square_system: bool
    x_star: torch.Tensor | None = None


def _const(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Data as a tensor in the dtype and on the device of ``like``."""
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _index(start: int, stop: int, like: torch.Tensor) -> torch.Tensor:
    """The integers ``start, ..., stop - 1`` in the dtype and on the device of ``like``."""
    return torch.arange(start, stop, dtype=like.dtype, device=like.device)


# --- fixed-dimension problems -------------------------------------------------------------


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """(1) Rosenbrock, n = m = 2."""
    x1, x2 = x[..., 0], x[..., 1]
    return torch.stack([10.0 * (x2 - x1**2), 1.0 - x1], dim=-1)


def freudenstein_roth(x: torch.Tensor) -> torch.Tensor:
    """(2) Freudenstein and Roth, n = m = 2."""
    x1, x2 = x[..., 0], x[..., 1]
    return torch.stack(
        [-13.0 + x1 + ((5.0 - x2) * x2 - 2.0) * x2, -29.0 + x1 + ((x2 + 1.0) * x2 - 14.0) * x2],
        dim=-1,
    )


def powell_badly_scaled(x: torch.Tensor) -> torch.Tensor:
    """(3) Powell badly scaled, n = m = 2."""
    x1, x2 = x[..., 0], x[..., 1]
    return torch.stack([1e4 * x1 * x2 - 1.0, torch.exp(-x1) + torch.exp(-x2) - 1.0001], dim=-1)


def brown_badly_scaled(x: torch.Tensor) -> torch.Tensor:
    """(4) Brown badly scaled, n = 2, m = 3."""
    x1, x2 = x[..., 0], x[..., 1]
    return torch.stack([x1 - 1e6, x2 - 2e-6, x1 * x2 - 2.0], dim=-1)


def beale(x: torch.Tensor) -> torch.Tensor:
    """(5) Beale, n = 2, m = 3."""
    y = _const([1.5, 2.25, 2.625], x)
    i = _index(1, 4, x)
    return y - x[..., :1] * (1.0 - x[..., 1:2] ** i)


def jennrich_sampson(x: torch.Tensor) -> torch.Tensor:
    """(6) Jennrich and Sampson, n = 2, m = 10."""
    i = _index(1, 11, x)
    return 2.0 + 2.0 * i - (torch.exp(i * x[..., :1]) + torch.exp(i * x[..., 1:2]))


def helical_valley(x: torch.Tensor) -> torch.Tensor:
    """(7) Helical valley, n = m = 3 (theta has the paper's jump of 1/2 at x1 < 0)."""
    x1, x2, x3 = x[..., 0], x[..., 1], x[..., 2]
    theta = torch.atan(x2 / x1) / (2.0 * math.pi) + 0.5 * (x1 < 0).to(x.dtype)
    return torch.stack(
        [10.0 * (x3 - 10.0 * theta), 10.0 * (torch.sqrt(x1**2 + x2**2) - 1.0), x3], dim=-1
    )


def bard(x: torch.Tensor) -> torch.Tensor:
    """(8) Bard, n = 3, m = 15."""
    y = _const(
        [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39],
        x,
    )
    u = _index(1, 16, x)
    v = 16.0 - u
    w = torch.minimum(u, v)
    return y - (x[..., :1] + u / (v * x[..., 1:2] + w * x[..., 2:3]))


def gaussian(x: torch.Tensor) -> torch.Tensor:
    """(9) Gaussian, n = 3, m = 15."""
    y = _const(
        [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989,
         0.3521, 0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009],
        x,
    )
    t = (8.0 - _index(1, 16, x)) / 2.0
    return x[..., :1] * torch.exp(-x[..., 1:2] * (t - x[..., 2:3]) ** 2 / 2.0) - y


def meyer(x: torch.Tensor) -> torch.Tensor:
    """(10) Meyer, n = 3, m = 16."""
    y = _const(
        [34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0,
         8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0],
        x,
    )
    t = 45.0 + 5.0 * _index(1, 17, x)
    return x[..., :1] * torch.exp(x[..., 1:2] / (t + x[..., 2:3])) - y


def gulf(x: torch.Tensor) -> torch.Tensor:
    """(11) Gulf research and development, n = 3, m = 99."""
    t = _index(1, 100, x) / 100.0
    y = 25.0 + (-50.0 * torch.log(t)) ** (2.0 / 3.0)
    return torch.exp(-torch.abs(y - x[..., 1:2]) ** x[..., 2:3] / x[..., :1]) - t


def box_3d(x: torch.Tensor) -> torch.Tensor:
    """(12) Box three-dimensional, n = 3, m = 10."""
    t = 0.1 * _index(1, 11, x)
    return (
        torch.exp(-t * x[..., :1])
        - torch.exp(-t * x[..., 1:2])
        - x[..., 2:3] * (torch.exp(-t) - torch.exp(-10.0 * t))
    )


def _powell_singular_blocks(x: torch.Tensor) -> torch.Tensor:
    """The four Powell singular residuals of each consecutive block of four variables."""
    a, b, c, d = x[..., 0::4], x[..., 1::4], x[..., 2::4], x[..., 3::4]
    blocks = [
        a + 10.0 * b,
        math.sqrt(5.0) * (c - d),
        (b - 2.0 * c) ** 2,
        math.sqrt(10.0) * (a - d) ** 2,
    ]
    return torch.stack(blocks, dim=-1).flatten(-2)


def powell_singular(x: torch.Tensor) -> torch.Tensor:
    """(13) Powell singular, n = m = 4."""
    return _powell_singular_blocks(x)


def wood(x: torch.Tensor) -> torch.Tensor:
    """(14) Wood, n = 4, m = 6."""
    x1, x2, x3, x4 = x[..., 0], x[..., 1], x[..., 2], x[..., 3]
    return torch.stack(
        [
            10.0 * (x2 - x1**2),
            1.0 - x1,
            math.sqrt(90.0) * (x4 - x3**2),
            1.0 - x3,
            math.sqrt(10.0) * (x2 + x4 - 2.0),
            (x2 - x4) / math.sqrt(10.0),
        ],
        dim=-1,
    )


def kowalik_osborne(x: torch.Tensor) -> torch.Tensor:
    """(15) Kowalik and Osborne, n = 4, m = 11."""
    y = _const(
        [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246],
        x,
    )
    u = _const([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625], x)
    x1, x2, x3, x4 = x[..., :1], x[..., 1:2], x[..., 2:3], x[..., 3:4]
    return y - x1 * (u**2 + u * x2) / (u**2 + u * x3 + x4)


def brown_dennis(x: torch.Tensor) -> torch.Tensor:
    """(16) Brown and Dennis, n = 4, m = 20."""
    t = _index(1, 21, x) / 5.0
    x1, x2, x3, x4 = x[..., :1], x[..., 1:2], x[..., 2:3], x[..., 3:4]
    return (x1 + t * x2 - torch.exp(t)) ** 2 + (x3 + x4 * torch.sin(t) - torch.cos(t)) ** 2


def osborne_1(x: torch.Tensor) -> torch.Tensor:
    """(17) Osborne 1, n = 5, m = 33."""
    y = _const(
        [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751,
         0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490,
         0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406],
        x,
    )
    t = 10.0 * _index(0, 33, x)
    x1, x2, x3, x4, x5 = (x[..., k : k + 1] for k in range(5))
    return y - (x1 + x2 * torch.exp(-t * x4) + x3 * torch.exp(-t * x5))


def biggs_exp6(x: torch.Tensor) -> torch.Tensor:
    """(18) Biggs EXP6, n = 6, m = 13."""
    t = 0.1 * _index(1, 14, x)
    y = torch.exp(-t) - 5.0 * torch.exp(-10.0 * t) + 3.0 * torch.exp(-4.0 * t)
    x1, x2, x3, x4, x5, x6 = (x[..., k : k + 1] for k in range(6))
    return x3 * torch.exp(-t * x1) - x4 * torch.exp(-t * x2) + x6 * torch.exp(-t * x5) - y


def osborne_2(x: torch.Tensor) -> torch.Tensor:
    """(19) Osborne 2, n = 11, m = 65."""
    y = _const(
        [1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746,
         0.679, 0.608, 0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649,
         0.694, 0.644, 0.624, 0.661, 0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395,
         0.375, 0.372, 0.391, 0.396, 0.405, 0.428, 0.429, 0.523, 0.562, 0.607, 0.653,
         0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559, 0.597, 0.625, 0.739,
         0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054],
        x,
    )
    t = _index(0, 65, x) / 10.0
    p = [x[..., k : k + 1] for k in range(11)]
    model = (
        p[0] * torch.exp(-t * p[4])
        + p[1] * torch.exp(-((t - p[8]) ** 2) * p[5])
        + p[2] * torch.exp(-((t - p[9]) ** 2) * p[6])
        + p[3] * torch.exp(-((t - p[10]) ** 2) * p[7])
    )
    return y - model


# --- variable-dimension problems (factories over n) ---------------------------------------


def watson(n: int) -> Residual:
    """(20) Watson, 2 <= n <= 31, m = 31."""

    def residual(x: torch.Tensor) -> torch.Tensor:
        t = (_index(1, 30, x) / 29.0).unsqueeze(-1)
        j = _index(0, n, x)
        powers = t**j
        derivative = torch.zeros_like(powers)
        derivative[:, 1:] = j[1:] * t ** (j[1:] - 1.0)
        fitted = x @ powers.T
        slopes = x @ derivative.T
        head = slopes - fitted**2 - 1.0
        x1, x2 = x[..., :1], x[..., 1:2]
        return torch.cat([head, x1, x2 - x1**2 - 1.0], dim=-1)

    return residual


def extended_rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """(21) Extended Rosenbrock, n even, m = n."""
    odd, even = x[..., 0::2], x[..., 1::2]
    return torch.stack([10.0 * (even - odd**2), 1.0 - odd], dim=-1).flatten(-2)


def extended_powell_singular(x: torch.Tensor) -> torch.Tensor:
    """(22) Extended Powell singular, n a multiple of 4, m = n."""
    return _powell_singular_blocks(x)


def penalty_1(x: torch.Tensor) -> torch.Tensor:
    """(23) Penalty function I, m = n + 1."""
    root_a = math.sqrt(1e-5)
    return torch.cat([root_a * (x - 1.0), (x**2).sum(-1, keepdim=True) - 0.25], dim=-1)


def penalty_2(x: torch.Tensor) -> torch.Tensor:
    """(24) Penalty function II, m = 2n."""
    n = x.shape[-1]
    root_a = math.sqrt(1e-5)
    i = _index(2, n + 1, x)
    y = torch.exp(i / 10.0) + torch.exp((i - 1.0) / 10.0)
    scaled = torch.exp(x / 10.0)
    first = x[..., :1] - 0.2
    pairs = root_a * (scaled[..., 1:] + scaled[..., :-1] - y)
    singles = root_a * (scaled[..., 1:] - math.exp(-0.1))
    weights = _index(0, n, x).flip(0) + 1.0
    last = (weights * x**2).sum(-1, keepdim=True) - 1.0
    return torch.cat([first, pairs, singles, last], dim=-1)


def variably_dimensioned(x: torch.Tensor) -> torch.Tensor:
    """(25) Variably dimensioned, m = n + 2."""
    j = _index(1, x.shape[-1] + 1, x)
    s = (j * (x - 1.0)).sum(-1, keepdim=True)
    return torch.cat([x - 1.0, s, s**2], dim=-1)


def trigonometric(x: torch.Tensor) -> torch.Tensor:
    """(26) Trigonometric, m = n."""
    n = x.shape[-1]
    i = _index(1, n + 1, x)
    return n - torch.cos(x).sum(-1, keepdim=True) + i * (1.0 - torch.cos(x)) - torch.sin(x)


def brown_almost_linear(x: torch.Tensor) -> torch.Tensor:
    """(27) Brown almost-linear, m = n."""
    n = x.shape[-1]
    linear = x[..., :-1] + x.sum(-1, keepdim=True) - (n + 1.0)
    return torch.cat([linear, x.prod(-1, keepdim=True) - 1.0], dim=-1)


def discrete_boundary_value(x: torch.Tensor) -> torch.Tensor:
    """(28) Discrete boundary value, m = n (zero boundary values x_0 = x_{n+1} = 0)."""
    n = x.shape[-1]
    h = 1.0 / (n + 1)
    t = _index(1, n + 1, x) * h
    padded = torch.nn.functional.pad(x, (1, 1))
    return 2.0 * x - padded[..., :-2] - padded[..., 2:] + h**2 * (x + t + 1.0) ** 3 / 2.0


def discrete_integral_equation(x: torch.Tensor) -> torch.Tensor:
    """(29) Discrete integral equation, m = n."""
    n = x.shape[-1]
    h = 1.0 / (n + 1)
    t = _index(1, n + 1, x) * h
    cubes = (x + t + 1.0) ** 3
    lower = torch.cumsum(t * cubes, dim=-1)
    tail = (1.0 - t) * cubes
    upper = tail.sum(-1, keepdim=True) - torch.cumsum(tail, dim=-1)
    return x + h * ((1.0 - t) * lower + t * upper) / 2.0


def broyden_tridiagonal(x: torch.Tensor) -> torch.Tensor:
    """(30) Broyden tridiagonal, m = n (x_0 = x_{n+1} = 0)."""
    padded = torch.nn.functional.pad(x, (1, 1))
    return (3.0 - 2.0 * x) * x - padded[..., :-2] - 2.0 * padded[..., 2:] + 1.0


def broyden_banded(x: torch.Tensor) -> torch.Tensor:
    """(31) Broyden banded, m = n, with lower bandwidth 5 and upper bandwidth 1."""
    n = x.shape[-1]
    i = torch.arange(n, device=x.device)
    offset = i.unsqueeze(0) - i.unsqueeze(1)
    band = ((offset >= -5) & (offset <= 1) & (offset != 0)).to(x.dtype)
    return x * (2.0 + 5.0 * x**2) + 1.0 - (x * (1.0 + x)) @ band.T


def linear_full_rank(m: int) -> Residual:
    """(32) Linear function, full rank, m >= n."""

    def residual(x: torch.Tensor) -> torch.Tensor:
        s = 2.0 * x.sum(-1, keepdim=True) / m + 1.0
        tail = s.expand(*s.shape[:-1], m - x.shape[-1])
        return torch.cat([x - s, -tail], dim=-1)

    return residual


def chebyquad(x: torch.Tensor) -> torch.Tensor:
    """(35) Chebyquad, m = n: means of shifted Chebyshev polynomials minus their integrals."""
    n = x.shape[-1]
    y = 2.0 * x - 1.0
    previous, current = torch.ones_like(y), y
    means = []
    for i in range(1, n + 1):
        integral = -1.0 / (i * i - 1.0) if i % 2 == 0 else 0.0
        means.append(current.mean(-1) - integral)
        previous, current = current, 2.0 * y * current - previous
    return torch.stack(means, dim=-1)


# --- the problem list ---------------------------------------------------------------------


def _vector(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _problem(
    name: str,
    x0: Sequence[float],
    m: int,
    residual: Residual,
    f_star: float,
    x_star: Sequence[float] | None = None,
) -> MGHProblem:
    n = len(x0)
    return MGHProblem(
        name=name,
        n=n,
        m=m,
        x0=_vector(x0),
        residual=residual,
        f_star=f_star,
        is_square_system=(m == n and f_star == 0.0),
        x_star=None if x_star is None else _vector(x_star),
    )


def _build() -> list[MGHProblem]:
    """The problems at their standard sizes, in the paper's order."""
    problems = [
        _problem("rosenbrock", [-1.2, 1.0], 2, rosenbrock, 0.0, [1.0, 1.0]),
        _problem("freudenstein_roth", [0.5, -2.0], 2, freudenstein_roth, 0.0, [5.0, 4.0]),
        _problem("powell_badly_scaled", [0.0, 1.0], 2, powell_badly_scaled, 0.0),
        _problem("brown_badly_scaled", [1.0, 1.0], 3, brown_badly_scaled, 0.0, [1e6, 2e-6]),
        _problem("beale", [1.0, 1.0], 3, beale, 0.0, [3.0, 0.5]),
        _problem("jennrich_sampson", [0.3, 0.4], 10, jennrich_sampson, 124.362),
        _problem("helical_valley", [-1.0, 0.0, 0.0], 3, helical_valley, 0.0, [1.0, 0.0, 0.0]),
        _problem("bard", [1.0, 1.0, 1.0], 15, bard, 8.21487e-3),
        _problem("gaussian", [0.4, 1.0, 0.0], 15, gaussian, 1.12793e-8),
        _problem("meyer", [0.02, 4000.0, 250.0], 16, meyer, 87.9458),
        _problem("gulf", [5.0, 2.5, 0.15], 99, gulf, 0.0, [50.0, 25.0, 1.5]),
        _problem("box_3d", [0.0, 10.0, 20.0], 10, box_3d, 0.0, [1.0, 10.0, 1.0]),
        _problem("powell_singular", [3.0, -1.0, 0.0, 1.0], 4, powell_singular, 0.0, [0.0] * 4),
        _problem("wood", [-3.0, -1.0, -3.0, -1.0], 6, wood, 0.0, [1.0] * 4),
        _problem("kowalik_osborne", [0.25, 0.39, 0.415, 0.39], 11, kowalik_osborne, 3.07505e-4),
        _problem("brown_dennis", [25.0, 5.0, -5.0, -1.0], 20, brown_dennis, 85822.2),
        _problem("osborne_1", [0.5, 1.5, -1.0, 0.01, 0.02], 33, osborne_1, 5.46489e-5),
        _problem(
            "biggs_exp6", [1.0, 2.0, 1.0, 1.0, 1.0, 1.0], 13, biggs_exp6, 0.0,
            [1.0, 10.0, 1.0, 5.0, 4.0, 3.0],
        ),
        _problem(
            "osborne_2", [1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5], 65,
            osborne_2, 4.01377e-2,
        ),
        _problem("watson_6", [0.0] * 6, 31, watson(6), 2.28767e-3),
        _problem("watson_9", [0.0] * 9, 31, watson(9), 1.39976e-6),
        _problem(
            "extended_rosenbrock_10", [-1.2, 1.0] * 5, 10, extended_rosenbrock, 0.0, [1.0] * 10
        ),
        _problem(
            "extended_powell_singular_12", [3.0, -1.0, 0.0, 1.0] * 3, 12,
            extended_powell_singular, 0.0, [0.0] * 12,
        ),
        _problem("penalty_1_4", [1.0, 2.0, 3.0, 4.0], 5, penalty_1, 2.24997e-5),
        _problem("penalty_1_10", [float(j) for j in range(1, 11)], 11, penalty_1, 7.08765e-5),
        _problem("penalty_2_4", [0.5] * 4, 8, penalty_2, 9.37629e-6),
        _problem("penalty_2_10", [0.5] * 10, 20, penalty_2, 2.93660e-4),
        _problem(
            "variably_dimensioned_10", [1.0 - j / 10 for j in range(1, 11)], 12,
            variably_dimensioned, 0.0, [1.0] * 10,
        ),
        _problem("trigonometric_10", [0.1] * 10, 10, trigonometric, 0.0, [0.0] * 10),
        _problem(
            "brown_almost_linear_10", [0.5] * 10, 10, brown_almost_linear, 0.0, [1.0] * 10
        ),
        _problem(
            "discrete_boundary_value_10", [t * (t - 1.0) for t in (j / 11 for j in range(1, 11))],
            10, discrete_boundary_value, 0.0,
        ),
        _problem(
            "discrete_integral_equation_10",
            [t * (t - 1.0) for t in (j / 11 for j in range(1, 11))], 10,
            discrete_integral_equation, 0.0,
        ),
        _problem("broyden_tridiagonal_10", [-1.0] * 10, 10, broyden_tridiagonal, 0.0),
        _problem("broyden_banded_10", [-1.0] * 10, 10, broyden_banded, 0.0),
        _problem(
            "linear_full_rank_10_20", [1.0] * 10, 20, linear_full_rank(20), 10.0, [-1.0] * 10
        ),
        _problem("chebyquad_8", [j / 9 for j in range(1, 9)], 8, chebyquad, 3.51687e-3),
        _problem("chebyquad_9", [j / 10 for j in range(1, 10)], 9, chebyquad, 0.0),
    ]
    return problems


MGH_PROBLEMS: list[MGHProblem] = _build()
"""The Moré–Garbow–Hillstrom problems at their standard sizes (see the module docstring)."""
