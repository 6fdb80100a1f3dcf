"""The named odd-polynomial iterations: per-step coefficients, normalization, and the loops.

Each method is a list of odd polynomials together with the normalization that list assumes
(a coefficient list is only valid with its own normalization):

| method          | polynomial per step                              | X_0                         |
|-----------------|--------------------------------------------------|-----------------------------|
| "newton-schulz" | (3x - x^3)/2 (classical cubic)                   | A / ||A||_F                 |
| "quintic"       | 3.4445x - 4.7750x^3 + 2.0315x^5 (Muon, fixed)    | A / ||A||_F                 |
| "polar-express" | minimax-optimal quintic of step t, safety 1.01   | A / (1.01 ||A||_F)          |
| "aol"           | Polar Express quintics designed from p_1(lower)  | D A, D = AOL row rescaling  |

"aol" takes the place of the first Polar Express step: its polynomials are designed for
[p_1(lower), 1] (p_1 the first Polar Express polynomial, p_1(1e-3) = 8.2e-3; AOL guarantees
||D A||_2 <= 1), so k AOL steps have the worst-case guarantee of k + 1 Polar Express steps
whenever the rescaling lifts the smallest singular value at least as much as p_1 would.

All maps keep singular vectors (or eigenvectors, for the sign) and act on singular values in
(0, 1]; the Frobenius norm bounds the spectral norm, so every X_0 has ||X_0||_2 <= 1.
"""
from __future__ import annotations

import torch

from .aol import aol_rescale
from .coefficients import (
    MUON_QUINTIC,
    PAPER_CUSHION,
    composite_map,
    newton_schulz_limit,
    polar_express_coefficients,
)
from .gram import gram_space_steps
from .iteration import iterate_to_tolerance
from .norms import frobenius_norm
from .polynomial import odd_polynomial_step

POLAR_EXPRESS_SAFETY = 1.01
NEWTON_SCHULZ_CUBIC = newton_schulz_limit(3)

# Steps when the caller gives none to a fixed-cost run: 5 quintic steps (15 products) as in Muon
# and the Polar Express paper, one fewer after AOL as in Turbo-Muon, and 7 cubic steps (14
# products) so that Newton–Schulz gets about the same budget.
DEFAULT_STEPS = {"polar-express": 5, "quintic": 5, "newton-schulz": 7, "aol": 4}
MATMULS_PER_STEP = {"polar-express": 3, "quintic": 3, "newton-schulz": 2, "aol": 3}


def schedule(method: str, steps: int, lower: float) -> tuple[tuple[float, ...], ...]:
    """The ``steps`` per-step coefficient tuples of ``method`` (see the module table)."""
    if method == "aol":
        first = polar_express_coefficients(5, 1, lower, 1.0, PAPER_CUSHION)
        lower = composite_map(lower, first)
    if method in ("polar-express", "aol"):
        return polar_express_coefficients(5, steps, lower, POLAR_EXPRESS_SAFETY, PAPER_CUSHION)
    if method == "quintic":
        return (MUON_QUINTIC,) * steps
    return (NEWTON_SCHULZ_CUBIC,) * steps


def normalize(X: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """X_0 of ``method`` for a batch X (b, m, n), and its Gram matrix when it came for free (AOL).

    A zero matrix stays zero (its norm is clamped to the smallest normal number, not shifted by
    an epsilon, so tiny but non-zero inputs are still normalized exactly).
    """
    if method == "aol":
        return aol_rescale(X)
    scale = POLAR_EXPRESS_SAFETY if method == "polar-express" else 1.0
    norm = frobenius_norm(X) * scale
    return X / norm.clamp_min(torch.finfo(X.dtype).tiny), None


def run_fixed(X: torch.Tensor, method: str, steps: int, lower: float, *, square: bool = False,
              gram: bool = False) -> torch.Tensor:
    """Normalize X (b, m, n) and apply ``steps`` polynomial steps; no synchronization.

    ``square=True`` uses G = X X (matrix sign) instead of G = X X^T (polar factor).
    ``gram=True`` (polar, wide X only) runs the same steps on m x m matrices (``gram``).
    """
    X, G = normalize(X, method)
    coeffs = schedule(method, steps, lower)
    if gram:
        return gram_space_steps(X, X @ X.mT if G is None else G, coeffs)
    for c in coeffs:
        if G is None:
            G = X @ X if square else X @ X.mT
        X = odd_polynomial_step(X, G, c)
        G = None
    return X


def run_to_tolerance(
    X: torch.Tensor, method: str, lower: float, *, tol: float, max_steps: int, square: bool = False
) -> torch.Tensor:
    """Normalize X and iterate until ||X_{k+1} - X_k||_F <= tol ||X_{k+1}||_F for every matrix.

    Only for methods that converge (Newton–Schulz, Polar Express): their last polynomials fix 1.
    """
    X, _ = normalize(X, method)
    coeffs = schedule(method, max_steps, lower)
    tiny = torch.finfo(X.dtype).tiny

    def step(X: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        new = odd_polynomial_step(X, X @ X if square else X @ X.mT, coeffs[k])
        change = torch.linalg.matrix_norm(new - X) / torch.linalg.matrix_norm(new).clamp_min(tiny)
        return new, change

    X, _ = iterate_to_tolerance(step, X, tol=tol, max_steps=max_steps)
    return X
