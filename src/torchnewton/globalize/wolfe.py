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

The search is written once against ``globalize.members``: given (B,) tensors it runs batched;
given Python floats (one problem on the CPU, the loop's lean path) the same rules run as scalar
control flow, a few microseconds per trial instead of some fifty masked tensor operations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .members import ops_of

# phi(alpha (B,)) -> (values (B,), derivatives (B,), aux (B, ...) e.g. the gradient at the trial)
WolfeFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

_BRACKETING, _ZOOMING, _DONE = 0, 1, 2


@dataclass
class WolfeResult:
    alpha: torch.Tensor | float  # (B,) accepted step (0 where the search failed)
    value: torch.Tensor | float  # (B,) φ(α)
    derivative: torch.Tensor | float  # (B,) φ'(α)
    aux: Any  # aux at the accepted step (aux at α = 0 where it failed)
    success: torch.Tensor | bool  # (B,) sufficient decrease holds at α > 0
    curvature: torch.Tensor | bool  # (B,) the strong curvature condition holds as well
    evaluations: int


def _cubic_minimizer(o, a, fa, da, b, fb, db):
    """Minimizer of the cubic through (a, fa, da), (b, fb, db); bisection where it is unsafe."""
    width = b - a
    d1 = da + db - 3 * (fa - fb) / o.where(width == 0, 1.0, -width)
    radicand = d1 * d1 - da * db
    d2 = o.sign(width) * o.sqrt(o.clamp(radicand, min=0))
    denominator = db - da + 2 * d2
    t = b - width * (db + d2 - d1) / o.where(denominator == 0, 1.0, denominator)
    lo, hi = o.minimum(a, b), o.maximum(a, b)
    margin = 0.1 * (hi - lo)
    # stay inside the bracket and away from its ends, else fall back to bisection
    safe = o.isfinite(t) & (radicand >= 0) & (denominator != 0) & (t > lo + margin) & (t < hi - margin)
    return o.where(safe, t, 0.5 * (a + b))


def strong_wolfe(phi: WolfeFunction, phi0: torch.Tensor | float, slope: torch.Tensor | float, aux0: Any, *,
                 alpha0: torch.Tensor | float = 1.0, c1: float = 1e-4, c2: float = 0.9,
                 max_steps: int = 25, alpha_max: float = 1e10,
                 active: torch.Tensor | bool | None = None, dtype: torch.dtype = torch.float64) -> WolfeResult:
    """Find α > 0 meeting the strong Wolfe conditions for φ(α) = f(x + αd), batched.

    ``slope`` is φ'(0) < 0; ``aux0`` is whatever ``phi`` returns beside value and derivative, at
    α = 0 (it fills the failed members). Members not in ``active`` are left at α = 0. With
    ``phi0`` and ``slope`` Python floats the search is for one problem: ``phi`` then takes and
    returns floats (its ``aux`` may be anything) and so does the result; ``dtype`` is then the
    problem's, whose resolution ends a collapsed bracket.

    Example:
        >>> phi = lambda a: ((a - 2) ** 2, 2 * (a - 2), a.unsqueeze(-1))
        >>> r = strong_wolfe(phi, torch.tensor([4.0]), torch.tensor([-4.0]), torch.zeros(1, 1))
        >>> bool(r.curvature), float(r.alpha) > 0
        (True, True)
        >>> strong_wolfe(lambda a: ((a - 2) ** 2, 2 * (a - 2), None), 4.0, -4.0, None).curvature
        True
    """
    o = ops_of(phi0)
    if o.batched:
        batch = phi0.shape[0]
        like = dict(dtype=phi0.dtype, device=phi0.device)
        active = torch.ones(batch, dtype=torch.bool, device=phi0.device) if active is None else active.clone()
        trial = torch.as_tensor(alpha0, **like).expand(batch).clone()
        zero, false = torch.zeros(batch, **like), torch.zeros(batch, dtype=torch.bool, device=phi0.device)
        eps = torch.finfo(phi0.dtype).eps
    else:
        active = True if active is None else bool(active)
        trial, zero, false = float(alpha0), 0.0, False
        eps = torch.finfo(dtype).eps
    stage = o.where(active, _BRACKETING, _DONE)
    prev_a, prev_f, prev_d = o.copy(zero), o.copy(phi0), o.copy(slope)
    # zoom bracket: lo always satisfies sufficient decrease with the lowest value seen
    lo_a, lo_f, lo_d, lo_aux = o.copy(zero), o.copy(phi0), o.copy(slope), o.copy(aux0) if o.batched else aux0
    hi_a, hi_f, hi_d = o.copy(zero), o.copy(phi0), o.copy(slope)
    curvature, first = o.copy(false), o.not_(false)
    evaluations = 0
    for step in range(max_steps):
        searching = stage != _DONE
        # a batch evaluates its first trial unasked: "is any member active?" is a host read, and
        # a member not searching is evaluated at α = 0 and left as it is
        if (step > 0 or not o.batched) and not o.any(searching):
            break
        zooming = stage == _ZOOMING
        if o.batched or zooming:
            trial = o.where(zooming, _cubic_minimizer(o, lo_a, lo_f, lo_d, hi_a, hi_f, hi_d), trial)
        value, deriv, aux = phi(o.where(searching, trial, zero))
        evaluations += 1
        finite = o.isfinite(value) & o.isfinite(deriv)
        armijo_fails = o.not_(finite) | (value > phi0 + c1 * trial * slope)
        wolfe = finite & o.not_(armijo_fails) & (abs(deriv) <= -c2 * slope)

        # bracketing phase (Alg. 3.5)
        bracketing = stage == _BRACKETING
        to_zoom_high = bracketing & (armijo_fails | (o.not_(first) & (value >= prev_f)))
        accept_b = bracketing & o.not_(to_zoom_high) & wolfe
        to_zoom_swap = bracketing & o.not_(to_zoom_high) & o.not_(accept_b) & (deriv >= 0)
        extend = bracketing & o.not_(to_zoom_high) & o.not_(accept_b) & o.not_(to_zoom_swap)

        # zoom phase (Alg. 3.6)
        shrink_hi = zooming & (armijo_fails | (value >= lo_f))
        accept_z = zooming & o.not_(shrink_hi) & wolfe
        move_lo = zooming & o.not_(shrink_hi) & o.not_(accept_z)
        flip = move_lo & (deriv * (hi_a - lo_a) >= 0)

        accept = accept_b | accept_z
        curvature = curvature | accept
        # new high end: the trial (armijo failed), the previous point (swap) or the old lo (flip)
        failed_trial = to_zoom_high | shrink_hi
        set_hi = failed_trial | to_zoom_swap | flip
        if o.batched or set_hi:
            new_hi_a = o.where(failed_trial, trial, o.where(to_zoom_swap, prev_a, lo_a))
            new_hi_f = o.where(failed_trial, o.where(finite, value, float("inf")), o.where(to_zoom_swap, prev_f, lo_f))
            new_hi_d = o.where(failed_trial, o.where(finite, deriv, 0.0), o.where(to_zoom_swap, prev_d, lo_d))
            hi_a, hi_f, hi_d = o.where(set_hi, new_hi_a, hi_a), o.where(set_hi, new_hi_f, hi_f), o.where(set_hi, new_hi_d, hi_d)
        # new low end: the trial whenever it has sufficient decrease and the lowest value so far
        # (while bracketing, lo is the previous point, so zooming on a failed trial keeps it)
        set_lo = accept | to_zoom_swap | move_lo | extend
        lo_a, lo_f, lo_d = o.where(set_lo, trial, lo_a), o.where(set_lo, value, lo_f), o.where(set_lo, deriv, lo_d)
        lo_aux = o.where(set_lo, aux, lo_aux)

        prev_a, prev_f, prev_d = o.where(extend, trial, prev_a), o.where(extend, value, prev_f), o.where(extend, deriv, prev_d)
        trial = o.where(extend, o.clamp(2 * trial, max=alpha_max), trial)
        first = first & o.not_(bracketing)
        stage = o.where(to_zoom_high | to_zoom_swap, _ZOOMING, stage)
        collapsed = (stage == _ZOOMING) & (abs(hi_a - lo_a) <= eps * o.clamp(abs(lo_a), min=eps))
        stage = o.where(accept | collapsed | (extend & (trial >= alpha_max)), _DONE, stage)
    success = active & (lo_a > 0)
    return WolfeResult(alpha=o.where(success, lo_a, zero), value=o.where(success, lo_f, phi0),
                       derivative=o.where(success, lo_d, slope), aux=o.where(success, lo_aux, aux0),
                       success=success, curvature=curvature & success, evaluations=evaluations)
