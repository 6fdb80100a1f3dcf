"""The cubic-regularization subproblem of adaptive cubic regularization (ARC).

    min_s  m(s) = gᵀs + ½sᵀHs + (σ/3)‖s‖³

Its global minimizer satisfies (H + λI)s = −g with λ = σ‖s‖ and H + λI ⪰ 0 (Nesterov & Polyak
2006, "Cubic regularization of Newton method and its global performance"; Cartis, Gould &
Toint 2011, Thm 3.1), so it is the secular equation with target r(λ) = λ/σ, solved in an
eigenbasis of H (``secular``). With lazy Hessians the eigenbasis is reused for many steps
(Doikov, Chayti & Jaggi 2023, "Second-order optimization with lazy Hessians", §5): a step then
locates λ in O(n²) and solves for s with one Cholesky factorization of H + λI (n³/3 flops, for
accuracy on ill-conditioned H), against about 9n³ for a fresh eigendecomposition.

Example:
    >>> eig = EigenHessian.of(torch.eye(2).unsqueeze(0)); g = torch.tensor([[2.0, 0.0]])
    >>> s = cubic_step(eig, g, torch.tensor([1.0]))  # (1 + ‖s‖)s = −g: ‖s‖ = 1
    >>> torch.allclose(s, torch.tensor([[-1.0, 0.0]]))
    True
"""
from __future__ import annotations

import math
import operator

import torch
from torch.linalg import vector_norm

from .members import FLOAT_MATRIX_MAX_N, ops_for
from .secular import EigenHessian, solve_secular


def cubic_step(eig: EigenHessian, g: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """The global minimizer of the cubic model, per member (B, n); σ (B,) > 0 (one member's may
    be given as its float)."""
    o = ops_for(g)
    sigma = sigma if isinstance(sigma, float) else o.value(sigma)
    tiny = torch.finfo(g.dtype).tiny

    def target(lam):
        safe = o.clamp(lam, min=tiny)
        return o.divide(sigma, safe), o.divide(-sigma, safe * safe)

    # ‖s(λ)‖ ≤ ‖g‖/(λ + λ₁): λ(λ + λ₁) ≥ σ‖g‖ guarantees σ‖s(λ)‖ ≤ λ
    lowest, g_norm = o.value(eig.values[:, 0]), o.value(vector_norm(g, dim=-1))
    upper = 0.5 * (-lowest + o.sqrt(lowest * lowest + 4 * sigma * g_norm))
    # σ > 0 rules the unregularized Newton step out for every member: a plain False says so
    return solve_secular(eig, g, target, upper * (1 + 1e-6) + tiny, interior_allowed=False, g_norm=g_norm).step


def cubic_model_decrease(eig: EigenHessian, g: torch.Tensor, sigma: torch.Tensor | float,
                         s: torch.Tensor) -> torch.Tensor | float:
    """−m(s) = −(gᵀs + ½sᵀHs + (σ/3)‖s‖³), the decrease the model predicts, per member (B,).

    For one small problem on the CPU (σ a Python float) the sums run on the entries read back as
    floats and the decrease is a float: about a dozen torch calls fewer per step (equal to the
    tensor value to round-off; the order of summation may differ).
    """
    if isinstance(sigma, float) and eig.matrix is not None and s.shape[-1] <= FLOAT_MATRIX_MAX_N:
        return _decrease_of_member(eig.matrix.tolist()[0], g.tolist()[0], sigma, s.tolist()[0])
    if isinstance(sigma, float):
        sigma = g.new_full((1,), sigma)
    return -((g * s).sum(-1) + 0.5 * eig.quadratic(s) + sigma / 3 * vector_norm(s, dim=-1) ** 3)


def _decrease_of_member(H: list[list[float]], g: list[float], sigma: float, s: list[float]) -> float:
    gs = sum(map(operator.mul, g, s))
    sHs = sum(si * sum(map(operator.mul, row, s)) for si, row in zip(s, H))
    norm = math.sqrt(sum(si * si for si in s))
    return -(gs + 0.5 * sHs + sigma / 3 * (norm * norm * norm))
