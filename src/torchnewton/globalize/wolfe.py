"""Batched strong-Wolfe line search (bracketing, then zoom by safeguarded cubic interpolation).

Each member of the batch searches for its own α with

    φ(α) ≤ φ(0) + c₁ α φ'(0)      (sufficient decrease)
    |φ'(α)| ≤ c₂ |φ'(0)|          (strong curvature)

following Nocedal & Wright, Numerical Optimization, Alg. 3.5 (bracketing) and 3.6 (zoom). All
members advance together: every trial is one call of ``phi`` on the whole batch, members in
the bracketing phase and members in the zoom phase each using their own trial α. A non-finite
trial is treated like a failed sufficient-decrease test, so it shrinks the bracket instead of
being accepted. When the trial budget runs out or the bracket collapses, a member that already
holds a point with sufficient decrease returns it (``curvature`` is then False for it), which
keeps Newton-type methods moving; only members without such a point fail.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# phi(alpha (B,)) -> (values (B,), derivatives (B,), aux (B, ...) e.g. the gradient at the trial)
WolfeFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

_BRACKETING, _ZOOMING, _DONE = 0, 1, 2


@dataclass
class WolfeResult:
    alpha: torch.Tensor  # (B,) accepted step (0 where the search failed)
    value: torch.Tensor  # (B,) φ(α)
    derivative: torch.Tensor  # (B,) φ'(α)
    aux: torch.Tensor  # aux at the accepted step (aux at α = 0 where it failed)
    success: torch.Tensor  # (B,) sufficient decrease holds at α > 0
    curvature: torch.Tensor  # (B,) the strong curvature condition holds as well
    evaluations: int


def _cubic_minimizer(a: torch.Tensor, fa: torch.Tensor, da: torch.Tensor,
                     b: torch.Tensor, fb: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """Minimizer of the cubic through (a, fa, da), (b, fb, db); bisection where it is unsafe."""
    width = b - a
    d1 = da + db - 3 * (fa - fb) / torch.where(width == 0, torch.ones_like(width), -width)
    radicand = d1 * d1 - da * db
    d2 = torch.sign(width) * torch.sqrt(torch.clamp(radicand, min=0))
    denominator = db - da + 2 * d2
    t = b - width * (db + d2 - d1) / torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    margin = 0.1 * (hi - lo)
    # stay inside the bracket and away from its ends, else fall back to bisection
    safe = torch.isfinite(t) & (radicand >= 0) & (denominator != 0) & (t > lo + margin) & (t < hi - margin)
    return torch.where(safe, t, 0.5 * (a + b))


def strong_wolfe(phi: WolfeFunction, phi0: torch.Tensor, slope: torch.Tensor, aux0: torch.Tensor, *,
                 alpha0: torch.Tensor | float = 1.0, c1: float = 1e-4, c2: float = 0.9,
                 max_steps: int = 25, alpha_max: float = 1e10,
                 active: torch.Tensor | None = None) -> WolfeResult:
    """Find α > 0 meeting the strong Wolfe conditions for φ(α) = f(x + αd), batched.

    ``slope`` is φ'(0) < 0; ``aux0`` is whatever ``phi`` returns beside value and derivative, at
    α = 0 (it fills the failed members). Members not in ``active`` are left at α = 0.

    Example:
        >>> phi = lambda a: ((a - 2) ** 2, 2 * (a - 2), a.unsqueeze(-1))
        >>> r = strong_wolfe(phi, torch.tensor([4.0]), torch.tensor([-4.0]), torch.zeros(1, 1))
        >>> bool(r.curvature), float(r.alpha) > 0
        (True, True)
    """
    batch = phi0.shape[0]
    like = dict(dtype=phi0.dtype, device=phi0.device)
    active = torch.ones(batch, dtype=torch.bool, device=phi0.device) if active is None else active.clone()
    stage = torch.where(active, torch.full((batch,), _BRACKETING, device=phi0.device),
                        torch.full((batch,), _DONE, device=phi0.device))
    trial = torch.as_tensor(alpha0, **like).expand(batch).clone()
    prev_a, prev_f, prev_d = torch.zeros(batch, **like), phi0.clone(), slope.clone()
    # zoom bracket: lo always satisfies sufficient decrease with the lowest value seen
    lo_a, lo_f, lo_d, lo_aux = torch.zeros(batch, **like), phi0.clone(), slope.clone(), aux0.clone()
    hi_a, hi_f, hi_d = torch.zeros(batch, **like), phi0.clone(), slope.clone()
    curvature = torch.zeros(batch, dtype=torch.bool, device=phi0.device)
    first = torch.ones(batch, dtype=torch.bool, device=phi0.device)
    evaluations = 0
    col = lambda m, t: m.view((batch,) + (1,) * (t.dim() - 1))
    eps = torch.finfo(phi0.dtype).eps
    for _ in range(max_steps):
        searching = stage != _DONE
        if not bool(searching.any()):
            break
        zooming = stage == _ZOOMING
        trial = torch.where(zooming, _cubic_minimizer(lo_a, lo_f, lo_d, hi_a, hi_f, hi_d), trial)
        value, deriv, aux = phi(torch.where(searching, trial, torch.zeros_like(trial)))
        evaluations += 1
        finite = torch.isfinite(value) & torch.isfinite(deriv)
        armijo_fails = ~finite | (value > phi0 + c1 * trial * slope)
        wolfe = finite & ~armijo_fails & (deriv.abs() <= -c2 * slope)

        # bracketing phase (Alg. 3.5)
        bracketing = stage == _BRACKETING
        to_zoom_high = bracketing & (armijo_fails | (~first & (value >= prev_f)))
        accept_b = bracketing & ~to_zoom_high & wolfe
        to_zoom_swap = bracketing & ~to_zoom_high & ~accept_b & (deriv >= 0)
        extend = bracketing & ~to_zoom_high & ~accept_b & ~to_zoom_swap

        # zoom phase (Alg. 3.6)
        shrink_hi = zooming & (armijo_fails | (value >= lo_f))
        accept_z = zooming & ~shrink_hi & wolfe
        move_lo = zooming & ~shrink_hi & ~accept_z
        flip = move_lo & (deriv * (hi_a - lo_a) >= 0)

        accept = accept_b | accept_z
        curvature = curvature | accept
        # new high end: the trial (armijo failed), the previous point (swap) or the old lo (flip)
        new_hi_a = torch.where(to_zoom_high | shrink_hi, trial, torch.where(to_zoom_swap, prev_a, lo_a))
        new_hi_f = torch.where(to_zoom_high | shrink_hi, torch.where(finite, value, torch.full_like(value, float("inf"))),
                               torch.where(to_zoom_swap, prev_f, lo_f))
        new_hi_d = torch.where(to_zoom_high | shrink_hi, torch.where(finite, deriv, torch.zeros_like(deriv)),
                               torch.where(to_zoom_swap, prev_d, lo_d))
        set_hi = to_zoom_high | shrink_hi | to_zoom_swap | flip
        hi_a, hi_f, hi_d = (torch.where(set_hi, new_hi_a, hi_a), torch.where(set_hi, new_hi_f, hi_f),
                            torch.where(set_hi, new_hi_d, hi_d))
        # new low end: the trial whenever it has sufficient decrease and the lowest value so far
        # (while bracketing, lo is the previous point, so zooming on a failed trial keeps it)
        set_lo = accept | to_zoom_swap | move_lo | extend
        lo_a, lo_f, lo_d = torch.where(set_lo, trial, lo_a), torch.where(set_lo, value, lo_f), torch.where(set_lo, deriv, lo_d)
        lo_aux = torch.where(col(set_lo, aux), aux, lo_aux)

        prev_a, prev_f, prev_d = (torch.where(extend, trial, prev_a), torch.where(extend, value, prev_f),
                                  torch.where(extend, deriv, prev_d))
        trial = torch.where(extend, torch.clamp(2 * trial, max=alpha_max), trial)
        first = first & ~bracketing
        stage = torch.where(to_zoom_high | to_zoom_swap, torch.full_like(stage, _ZOOMING), stage)
        collapsed = (stage == _ZOOMING) & ((hi_a - lo_a).abs() <= eps * torch.clamp(lo_a.abs(), min=eps))
        stage = torch.where(accept | collapsed | (extend & (trial >= alpha_max)), torch.full_like(stage, _DONE), stage)
    success = active & (lo_a > 0)
    return WolfeResult(alpha=torch.where(success, lo_a, torch.zeros_like(lo_a)),
                       value=torch.where(success, lo_f, phi0), derivative=torch.where(success, lo_d, slope),
                       aux=torch.where(col(success, lo_aux), lo_aux, aux0), success=success,
                       curvature=curvature & success, evaluations=evaluations)
