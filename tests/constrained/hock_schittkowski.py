"""Hock–Schittkowski test problems written out by hand, with their published optimal values.

Hock & Schittkowski, "Test Examples for Nonlinear Programming Codes" (1981). Each entry:
(f, constraints in the torchnewton/scipy form, bounds or None, x0, f*).
"""
import math

import torch

S2 = math.sqrt(2.0)


def _eq(*funs):
    return [{"type": "eq", "fun": f} for f in funs]


def _ineq(*funs):
    return [{"type": "ineq", "fun": f} for f in funs]


EQUALITY = {
    "HS6": (lambda x: (1 - x[0]) ** 2, _eq(lambda x: 10 * (x[1] - x[0] ** 2)), None, [-1.2, 1.0], 0.0),
    "HS7": (lambda x: torch.log(1 + x[0] ** 2) - x[1], _eq(lambda x: (1 + x[0] ** 2) ** 2 + x[1] ** 2 - 4), None,
            [2.0, 2.0], -math.sqrt(3)),
    "HS26": (lambda x: (x[0] - x[1]) ** 2 + (x[1] - x[2]) ** 4, _eq(lambda x: (1 + x[1] ** 2) * x[0] + x[2] ** 4 - 3),
             None, [-2.6, 2.0, 2.0], 0.0),
    "HS27": (lambda x: 0.01 * (x[0] - 1) ** 2 + (x[1] - x[0] ** 2) ** 2, _eq(lambda x: x[0] + x[2] ** 2 + 1), None,
             [2.0, 2.0, 2.0], 0.04),
    "HS28": (lambda x: (x[0] + x[1]) ** 2 + (x[1] + x[2]) ** 2, _eq(lambda x: x[0] + 2 * x[1] + 3 * x[2] - 1), None,
             [-4.0, 1.0, 1.0], 0.0),
    "HS39": (lambda x: -x[0], _eq(lambda x: x[1] - x[0] ** 3 - x[2] ** 2, lambda x: x[0] ** 2 - x[1] - x[3] ** 2),
             None, [2.0, 2.0, 2.0, 2.0], -1.0),
    "HS40": (lambda x: -x[0] * x[1] * x[2] * x[3],
             _eq(lambda x: x[0] ** 3 + x[1] ** 2 - 1, lambda x: x[0] ** 2 * x[3] - x[2], lambda x: x[3] ** 2 - x[1]),
             None, [0.8, 0.8, 0.8, 0.8], -0.25),
    "HS42": (lambda x: (x[0] - 1) ** 2 + (x[1] - 2) ** 2 + (x[2] - 3) ** 2 + (x[3] - 4) ** 2,
             _eq(lambda x: x[0] - 2, lambda x: x[2] ** 2 + x[3] ** 2 - 2), None, [1.0, 1.0, 1.0, 1.0], 28 - 10 * S2),
    "HS46": (lambda x: (x[0] - x[1]) ** 2 + (x[2] - 1) ** 2 + (x[3] - 1) ** 4 + (x[4] - 1) ** 6,
             _eq(lambda x: x[0] ** 2 * x[3] + torch.sin(x[3] - x[4]) - 1, lambda x: x[1] + x[2] ** 4 * x[3] ** 2 - 2),
             None, [S2 / 2, 1.75, 0.5, 2.0, 2.0], 0.0),
    "HS47": (lambda x: (x[0] - x[1]) ** 2 + (x[1] - x[2]) ** 3 + (x[2] - x[3]) ** 4 + (x[3] - x[4]) ** 4,
             _eq(lambda x: x[0] + x[1] ** 2 + x[2] ** 3 - 3, lambda x: x[1] - x[2] ** 2 + x[3] - 1,
                 lambda x: x[0] * x[4] - 1), None, [2.0, S2, -1.0, 2 - S2, 0.5], 0.0),
    "HS48": (lambda x: (x[0] - 1) ** 2 + (x[1] - x[2]) ** 2 + (x[3] - x[4]) ** 2,
             _eq(lambda x: x.sum() - 5, lambda x: x[2] - 2 * (x[3] + x[4]) + 3), None, [3.0, 5.0, -3.0, 2.0, -2.0], 0.0),
    "HS49": (lambda x: (x[0] - x[1]) ** 2 + (x[2] - 1) ** 2 + (x[3] - 1) ** 4 + (x[4] - 1) ** 6,
             _eq(lambda x: x[0] + x[1] + x[2] + 4 * x[3] - 7, lambda x: x[2] + 5 * x[4] - 6), None,
             [10.0, 7.0, 2.0, -3.0, 0.8], 0.0),
    "HS50": (lambda x: (x[0] - x[1]) ** 2 + (x[1] - x[2]) ** 2 + (x[2] - x[3]) ** 4 + (x[3] - x[4]) ** 2,
             _eq(lambda x: x[0] + 2 * x[1] + 3 * x[2] - 6, lambda x: x[1] + 2 * x[2] + 3 * x[3] - 6,
                 lambda x: x[2] + 2 * x[3] + 3 * x[4] - 6), None, [35.0, -31.0, 11.0, 5.0, -5.0], 0.0),
    "HS51": (lambda x: (x[0] - x[1]) ** 2 + (x[1] + x[2] - 2) ** 2 + (x[3] - 1) ** 2 + (x[4] - 1) ** 2,
             _eq(lambda x: x[0] + 3 * x[1] - 4, lambda x: x[2] + x[3] - 2 * x[4], lambda x: x[1] - x[4]), None,
             [2.5, 0.5, 2.0, -1.0, 0.5], 0.0),
    "HS52": (lambda x: (4 * x[0] - x[1]) ** 2 + (x[1] + x[2] - 2) ** 2 + (x[3] - 1) ** 2 + (x[4] - 1) ** 2,
             _eq(lambda x: x[0] + 3 * x[1], lambda x: x[2] + x[3] - 2 * x[4], lambda x: x[1] - x[4]), None,
             [2.0, 2.0, 2.0, 2.0, 2.0], 1859 / 349),
    "HS77": (lambda x: (x[0] - 1) ** 2 + (x[0] - x[1]) ** 2 + (x[2] - 1) ** 2 + (x[3] - 1) ** 4 + (x[4] - 1) ** 6,
             _eq(lambda x: x[0] ** 2 * x[3] + torch.sin(x[3] - x[4]) - 2 * S2,
                 lambda x: x[1] + x[2] ** 4 * x[3] ** 2 - 8 - S2), None, [2.0] * 5, 0.24150513),
    "HS78": (lambda x: x.prod(),
             _eq(lambda x: (x ** 2).sum() - 10, lambda x: x[1] * x[2] - 5 * x[3] * x[4], lambda x: x[0] ** 3 + x[1] ** 3 + 1),
             None, [-2.0, 1.5, 2.0, -1.0, -1.0], -2.91970041),
    "HS79": (lambda x: (x[0] - 1) ** 2 + (x[0] - x[1]) ** 2 + (x[1] - x[2]) ** 2 + (x[2] - x[3]) ** 4 + (x[3] - x[4]) ** 4,
             _eq(lambda x: x[0] + x[1] ** 2 + x[2] ** 3 - 2 - 3 * S2, lambda x: x[1] - x[2] ** 2 + x[3] + 2 - 2 * S2,
                 lambda x: x[0] * x[4] - 2), None, [2.0] * 5, 0.0787768209),
}

INEQUALITY = {
    "HS21": (lambda x: 0.01 * x[0] ** 2 + x[1] ** 2 - 100, _ineq(lambda x: 10 * x[0] - x[1] - 10),
             ([2.0, -50.0], [50.0, 50.0]), [-1.0, -1.0], -99.96),
    "HS35": (lambda x: 9 - 8 * x[0] - 6 * x[1] - 4 * x[2] + 2 * x[0] ** 2 + 2 * x[1] ** 2 + x[2] ** 2
             + 2 * x[0] * x[1] + 2 * x[0] * x[2], _ineq(lambda x: 3 - x[0] - x[1] - 2 * x[2]),
             (0.0, float("inf")), [0.5, 0.5, 0.5], 1 / 9),
    "HS43": (lambda x: x[0] ** 2 + x[1] ** 2 + 2 * x[2] ** 2 + x[3] ** 2 - 5 * x[0] - 5 * x[1] - 21 * x[2] + 7 * x[3],
             _ineq(lambda x: 8 - (x ** 2).sum() - x[0] + x[1] - x[2] + x[3],
                   lambda x: 10 - x[0] ** 2 - 2 * x[1] ** 2 - x[2] ** 2 - 2 * x[3] ** 2 + x[0] + x[3],
                   lambda x: 5 - 2 * x[0] ** 2 - x[1] ** 2 - x[2] ** 2 - 2 * x[0] + x[1] + x[3]),
             None, [0.0, 0.0, 0.0, 0.0], -44.0),
    "HS65": (lambda x: (x[0] - x[1]) ** 2 + (x[0] + x[1] - 10) ** 2 / 9 + (x[2] - 5) ** 2,
             _ineq(lambda x: 48 - (x ** 2).sum()), ([-4.5, -4.5, -5.0], [4.5, 4.5, 5.0]), [-5.0, 5.0, 0.0],
             0.9535288567),
    "HS71": (lambda x: x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2],
             _ineq(lambda x: x.prod() - 25) + _eq(lambda x: (x ** 2).sum() - 40), (1.0, 5.0), [1.0, 5.0, 5.0, 1.0],
             17.0140173),
    "HS76": (lambda x: x[0] ** 2 + 0.5 * x[1] ** 2 + x[2] ** 2 + 0.5 * x[3] ** 2 - x[0] * x[2] + x[2] * x[3]
             - x[0] - 3 * x[1] + x[2] - x[3],
             _ineq(lambda x: 5 - x[0] - 2 * x[1] - x[2] - x[3], lambda x: 4 - 3 * x[0] - x[1] - 2 * x[2] + x[3],
                   lambda x: x[1] + 4 * x[2] - 1.5), (0.0, float("inf")), [0.5] * 4, -4.681818181),
}


def solve(name: str, method: str = "sqp", **kwargs):
    """Solve one problem in float64 with torchnewton.minimize; returns (result, f*)."""
    from torchnewton.solvers.objective.minimize import minimize

    f, constraints, bounds, x0, optimum = {**EQUALITY, **INEQUALITY}[name]
    x0 = torch.tensor(x0, dtype=torch.float64)
    if bounds is not None:
        bounds = tuple(torch.as_tensor(b, dtype=torch.float64) for b in bounds)
    return minimize(f, x0, method=method, constraints=constraints, bounds=bounds, **kwargs), optimum
