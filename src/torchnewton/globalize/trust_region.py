"""Powell's dogleg step (the radius update and the gain ratio are in :mod:`.radius`).

The Steihaug truncated-CG subproblem solver lives with CG in ``linear.krylov.cg(radius=...)``
so there is one CG in the library.
"""
from __future__ import annotations

import math

import torch

from .members import lean


def dogleg(newton: torch.Tensor, gradient: torch.Tensor, curvature_gradient: torch.Tensor,
           radius: torch.Tensor) -> torch.Tensor:
    """Powell's dogleg step for min gᵀs + ½sᵀBs, ‖s‖ ≤ Δ, batched.

    ``newton`` is −B⁻¹g, ``curvature_gradient`` is gᵀBg (for Gauss–Newton B = JᵀJ: ‖Jg‖²). The
    step is the Newton step if inside, else the Cauchy point scaled to the boundary if that is
    outside, else the point where the segment Cauchy→Newton crosses the boundary. One problem on
    the CPU reads its inputs back once and takes the legs on floats (:func:`dogleg_floats`).

    Example:
        >>> dogleg(torch.tensor([[3.0, 4.0]]), torch.tensor([[-1.0, 0.0]]), torch.tensor([1.0]), torch.tensor([10.0]))
        tensor([[3., 4.]])
    """
    tiny = torch.finfo(gradient.dtype).tiny
    if lean(newton):
        n = newton.shape[-1]
        flat = torch.cat([newton, gradient, curvature_gradient.reshape(1, 1), radius.reshape(1, 1)], -1).tolist()[0]
        return newton.new_tensor([dogleg_floats(flat[:n], flat[n:2 * n], flat[2 * n], flat[2 * n + 1], tiny)])
    g_norm2 = (gradient * gradient).sum(-1)
    cauchy = -(g_norm2 / curvature_gradient.clamp(min=tiny)).unsqueeze(-1) * gradient
    newton_norm, cauchy_norm = newton.norm(dim=-1), cauchy.norm(dim=-1)
    scaled_gradient = -(radius / g_norm2.sqrt().clamp(min=tiny)).unsqueeze(-1) * gradient
    d = newton - cauchy
    a, b = (d * d).sum(-1), 2 * (cauchy * d).sum(-1)
    c = cauchy_norm**2 - radius**2
    tau = (-b + torch.sqrt(torch.clamp(b * b - 4 * a * c, min=0))) / (2 * a).clamp(min=tiny)
    blended = cauchy + tau.unsqueeze(-1) * d
    col = lambda m: m.unsqueeze(-1)
    return torch.where(col(newton_norm <= radius), newton,
                       torch.where(col(cauchy_norm >= radius), scaled_gradient, blended))


def _at_least(v: float, bound: float) -> float:
    """``clamp(v, min=bound)`` with the tensor's NaN rule (NaN stays NaN)."""
    return bound if v < bound else v


def dogleg_floats(newton: list[float], gradient: list[float], curvature_gradient: float, radius: float,
                  tiny: float) -> list[float]:
    """:func:`dogleg` of one problem on Python floats: the same legs and τ, only the leg taken is
    computed (``tiny`` is the dtype's smallest normal number, the guard of the divisions).

    Example:
        >>> dogleg_floats([3.0, 4.0], [-1.0, -1.0], 1.0, 2 ** 0.5, 1e-308)
        [1.0, 1.0]
    """
    if math.sqrt(sum(v * v for v in newton)) <= radius:
        return list(newton)
    g_norm2 = sum(v * v for v in gradient)
    factor = -(g_norm2 / _at_least(curvature_gradient, tiny))
    cauchy = [factor * v for v in gradient]
    cauchy_norm = math.sqrt(sum(v * v for v in cauchy))
    if cauchy_norm >= radius:
        factor = -(radius / _at_least(math.sqrt(g_norm2), tiny))
        return [factor * v for v in gradient]
    d = [a - b for a, b in zip(newton, cauchy)]
    a, b = sum(v * v for v in d), 2 * sum(u * v for u, v in zip(cauchy, d))
    c = cauchy_norm * cauchy_norm - radius * radius
    discriminant = b * b - 4 * a * c
    tau = (-b + math.sqrt(0.0 if discriminant < 0 else discriminant)) / _at_least(2 * a, tiny)
    return [u + tau * v for u, v in zip(cauchy, d)]
