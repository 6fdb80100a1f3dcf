"""The sync-free arithmetic of one SQP iteration, as pure functions of tensors.

:class:`~.sqp.SQP` splits an iteration at its KKT solve, its function calls and its host
decisions (a gradient fallback, a trial that needs derivatives, a second-order correction, a
backtracking search). Between them the arithmetic is pure; each piece here is one such stretch,
called through the problem's :class:`~torchnewton.core.fusion.Fusion`: eager by default (exactly
these operations), one fused kernel with ``options={"compile": True}``. The formulas are those of
:mod:`.sqp` and :mod:`.merit` (Hong, Na, Mahoney & Kolar, ICML 2023; Nocedal & Wright §15.6):

* :func:`prepare`: ‖(∇ₓL, c)‖, the inexact-solve accuracy θ, the KKT right-hand side −(∇ₓL, c)
  and ∇²ₓL∇ₓL (the ν-term of the augmented Lagrangian);
* :func:`penalty`: the slope parts (a, b, q) along (Δx, Δλ), the penalties (μ, ν) that make the
  step a sufficient-descent direction, the slope a + νb − μq and where the merit's gradient must
  replace the step;
* :func:`line_start`: L_μ,ν at α = 0, the Armijo threshold of the full step and the full step;
* :func:`trial_bound` and :func:`trial_exact`: a trial's merit from f and c (a lower bound of
  L_μ,ν, or the ℓ₁ merit itself) and, where that does not reject it, with ∇f and J;
* :func:`accept`: the full step's verdict;
* :func:`finish`: the next state's values and KKT measures.

Example:
    >>> import torch
    >>> gl, c, H = torch.tensor([[3.0, 4.0]]), torch.zeros(1, 0), torch.eye(2).unsqueeze(0)
    >>> prepare(gl, c, H, 1.0, 0.1, True)[1]   # θ = min(‖(∇ₓL, c)‖, 0.1)
    tensor([0.1000])
"""
from __future__ import annotations

import torch

from ...core.status import Status
from .l1_merit import l1_merit
from ...linear.batched import matvec, rmatvec
from .lean import constant, finite
from .merit import merit_weights, slope_parts, update_penalty, weighted_merit
from .termination import infeasibility_measure, multiplier_scale, track_progress


def prepare(gl: torch.Tensor, c: torch.Tensor, H: torch.Tensor, sharpen: float, accuracy: float,
            hess_grad: bool):
    """(‖(∇ₓL, c)‖, θ, −∇ₓL, −c, ∇²ₓL∇ₓL or None) for a dense H = ∇²ₓL (or its model)."""
    kkt_norm = torch.cat([gl, c], -1).norm(dim=-1)
    theta = torch.clamp(kkt_norm ** sharpen, max=accuracy) if sharpen > 0 else torch.full_like(kkt_norm, accuracy)
    return kkt_norm, theta, -gl, -c, matvec(H, gl) if hess_grad else None


def penalty(gl: torch.Tensor, c: torch.Tensor, J: torch.Tensor, hess_grad: torch.Tensor, dx: torch.Tensor,
            dlam: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor):
    """(μ⁺, ν⁺, descent, slope a + ν⁺b − μ⁺q, fallback): :func:`.merit.update_penalty` along the step;
    ``fallback`` marks the members whose step is no sufficient-descent direction of L_μ,ν."""
    grad_sq = (gl * gl).sum(-1)
    a, b, q = slope_parts(gl, c, J, hess_grad, dx, dlam)
    mu, nu, descent = update_penalty(mu, nu, a, b, q, grad_sq)
    slope = a + nu * b - mu * q
    fallback = ~(descent & (slope < 0) & finite(slope))
    return mu, nu, descent, slope, fallback


def _merit(kind: str, weights: tuple, f: torch.Tensor, c: torch.Tensor, gl: torch.Tensor | None,
           lam: torch.Tensor) -> torch.Tensor:
    """L_μ,ν (without its ν-term where ``gl`` is None) from ``weights`` (μ/2, ν/2), or the ℓ₁ merit
    f + μ‖c‖₁ from ``weights`` (μ,)."""
    return l1_merit(f, c, weights[0]) if kind == "l1" else weighted_merit(*weights, f, c, gl, lam)


def line_start(kind: str, f: torch.Tensor, c: torch.Tensor, gl: torch.Tensor, lam: torch.Tensor, x: torch.Tensor,
               dx: torch.Tensor, dlam: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor, slope: torch.Tensor,
               running: torch.Tensor, c1: float):
    """(φ(0), active, the full step's Armijo threshold, x + Δx, λ + Δλ, the merit's weights for the
    trial pieces); φ(0) carries a few ulps of slack so that a step that changes nothing is accepted."""
    weights = (mu,) if kind == "l1" else merit_weights(mu, nu)
    phi0 = _merit(kind, weights, f, c, gl, lam)
    phi0 = phi0 + 10 * torch.finfo(x.dtype).eps * phi0.abs().clamp(min=1.0)
    active = running & (slope < 0)
    return phi0, active, phi0 + c1 * slope, x + dx, lam + dlam, weights


def trial_bound(kind: str, f: torch.Tensor, cv: torch.Tensor, target: torch.Tensor | None, lam: torch.Tensor,
                threshold: torch.Tensor, *weights: torch.Tensor):
    """(c − target, the merit from f and c alone, needed): ``needed`` marks the trials it does not
    reject, the only ones whose ∇f and J are evaluated; ``weights``: :func:`line_start`'s."""
    cv = cv if target is None else cv - target
    bound = _merit(kind, weights, f, cv, None, lam)
    return cv, bound, finite(bound) & (bound <= threshold)


def trial_exact(kind: str, f: torch.Tensor, cv: torch.Tensor, g: torch.Tensor, Jn: torch.Tensor, lam: torch.Tensor,
                bound: torch.Tensor, needed: torch.Tensor, *weights: torch.Tensor):
    """(merit, packed (f, ∇f, c, J)) of a trial whose ∇f and J were evaluated."""
    merit = bound if kind == "l1" else _merit(kind, weights, f, cv, g + rmatvec(Jn, lam), lam)
    return torch.where(needed, merit, bound), torch.cat([f.unsqueeze(-1), g, cv, Jn.flatten(1)], -1)


def accept(phi1: torch.Tensor, threshold: torch.Tensor, active: torch.Tensor, x_full: torch.Tensor,
           lam_full: torch.Tensor, x: torch.Tensor, lam: torch.Tensor, packed: torch.Tensor, c: torch.Tensor,
           fallback: torch.Tensor):
    """(x⁺, λ⁺, moved, pending, corrigible) after the full step's trial: ``corrigible`` marks the
    rejected steps that raised ‖c‖ (the Maratos effect the second-order correction is for)."""
    n, m = x.shape[-1], c.shape[-1]
    accept_full = active & finite(phi1) & (phi1 <= threshold)
    x_new = torch.where(accept_full.unsqueeze(-1), x_full, x)
    lam_new = torch.where(accept_full.unsqueeze(-1), lam_full, lam)
    pending = active & ~accept_full
    c_full = packed[:, 1 + n: 1 + n + m]
    corrigible = pending & ~fallback & ~((c_full * c_full).sum(-1) < (c * c).sum(-1))
    return x_new, lam_new, accept_full, pending, corrigible


def finish(x: torch.Tensor, x_new: torch.Tensor, lam: torch.Tensor, packed: torch.Tensor, moved: torch.Tensor,
           f: torch.Tensor, g: torch.Tensor, c: torch.Tensor, J: torch.Tensor, running: torch.Tensor,
           kkt_status: torch.Tensor, failure: torch.Tensor, count: torch.Tensor, best: torch.Tensor,
           stall: torch.Tensor, tol: float, infeasibility_tol: float):
    """The next state's (f, ∇f, c, J, failure, ‖x⁺ − x‖) — a member that did not move keeps its values —
    and its measures (:func:`measures`)."""
    failure = torch.where(running & (kkt_status == int(Status.SINGULAR)) & ~moved,
                          constant(int(Status.SINGULAR), failure), failure)
    n, m = x.shape[-1], c.shape[-1]
    f_new, g_new, c_new, J_new = packed.split([1, n, m, m * n], -1)
    keep = ~moved
    f = torch.where(keep, f, f_new.squeeze(-1))
    g = torch.where(keep.unsqueeze(-1), g, g_new)
    c = torch.where(keep.unsqueeze(-1), c, c_new)
    J = torch.where(keep.view(-1, 1, 1), J, J_new.reshape(J.shape))
    step_norm = (x_new - x).norm(dim=-1)
    return (f, g, c, J, failure, step_norm) + measures(x_new, g, c, J, lam, step_norm, count, best, stall, tol,
                                                       infeasibility_tol)


def measures(x: torch.Tensor, g: torch.Tensor, c: torch.Tensor, J: torch.Tensor, lam: torch.Tensor,
             step_norm: torch.Tensor, count: torch.Tensor, best: torch.Tensor, stall: torch.Tensor, tol: float,
             infeasibility_tol: float):
    """(∇ₓL, optimality, violation, s_d, infeasible count, best error, stall count) at (x, λ)."""
    grad_lagrangian = g + rmatvec(J, lam)
    violation = c.abs().amax(-1) if c.shape[-1] else x.new_zeros(x.shape[0])
    stationary = (violation > tol) & (infeasibility_measure(J, c) <= infeasibility_tol)
    optimality = grad_lagrangian.abs().amax(-1)
    scale = multiplier_scale(lam)
    best, stall = track_progress(best, stall, torch.maximum(optimality / scale, violation), x, step_norm)
    infeasible_count = torch.where(stationary, count + 1, torch.zeros_like(count))
    return grad_lagrangian, optimality, violation, scale, infeasible_count, best, stall
