"""Batched backtracking line search: each member of the batch finds its own step length.

A trial evaluates the whole batch once (one call of ``phi``) at every member's current α;
members that have accepted their step keep it. Non-finite trial values count as failures and
shrink α, which is how a NaN or Inf during the iteration is rejected instead of accepted.
Given Python floats instead of (B,) tensors, the same rules run for one problem as scalar control
flow (``globalize.members``: the lean path of a single small solve).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .members import ops_of

MeritFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class LineSearchResult:
    alpha: torch.Tensor | float  # (B,) accepted step lengths (0 where the search failed)
    value: torch.Tensor | float  # (B,) merit value at the accepted step (phi0 where it failed)
    aux: Any  # whatever phi returned beside the value, at the accepted step
    success: torch.Tensor | bool  # (B,) bool
    nonfinite: torch.Tensor | bool  # (B,) bool: some trial value of this member was NaN or Inf
    evaluations: int  # calls of phi (each on the whole batch)


def armijo(phi: MeritFunction, phi0: torch.Tensor | float, slope: torch.Tensor | float, *,
           alpha0: torch.Tensor | float = 1.0, c1: float = 1e-4, max_steps: int = 40,
           active: torch.Tensor | bool | None = None, aux0: Any = None) -> LineSearchResult:
    """Backtracking to the sufficient-decrease (Armijo) condition φ(α) ≤ φ(0) + c₁ α φ'(0).

    ``phi(alpha)`` takes a (B,) tensor of step lengths and returns ``(values (B,), aux)``; ``slope``
    is φ'(0) (negative for a descent direction). The next trial α minimizes the quadratic through
    φ(0), φ'(0), φ(α), safeguarded to [0.1α, 0.5α] (Nocedal & Wright, §3.5). Members not in
    ``active`` are left at α = 0 and do not count as failures. ``aux0`` (what ``phi`` would
    return beside φ(0)) is the ``aux`` of members that take no step; zeros if not given. With
    ``phi0`` and ``slope`` Python floats, ``phi`` takes and returns a float value for one problem.

    Example:
        >>> phi = lambda a: ((1 - a) ** 2, None)
        >>> armijo(phi, torch.ones(1), -2 * torch.ones(1)).alpha
        tensor([1.])
        >>> armijo(phi, 1.0, -2.0).alpha
        1.0
    """
    o = ops_of(phi0)
    if o.batched:
        batch = phi0.shape[0]
        active = torch.ones(batch, dtype=torch.bool, device=phi0.device) if active is None else active.clone()
        alpha = torch.as_tensor(alpha0, dtype=phi0.dtype, device=phi0.device).expand(batch).clone()
        zero, saw_nonfinite = torch.zeros_like(alpha), torch.zeros_like(active)
    else:
        active = True if active is None else bool(active)
        alpha, zero, saw_nonfinite = float(alpha0), 0.0, False
    accepted_alpha = o.copy(zero)
    accepted_value = o.copy(phi0)
    accepted_aux = aux0
    success = o.not_(active)
    evaluations = 0
    for _ in range(max_steps):
        searching = active & o.not_(success)
        if not o.any(searching):
            break
        value, aux = phi(o.where(searching, alpha, zero))
        evaluations += 1
        finite = o.isfinite(value)
        saw_nonfinite = saw_nonfinite | (searching & o.not_(finite))
        ok = searching & finite & (value <= phi0 + c1 * alpha * slope)
        accepted_alpha = o.where(ok, alpha, accepted_alpha)
        accepted_value = o.where(ok, value, accepted_value)
        if aux is not None:
            if accepted_aux is None and isinstance(aux, torch.Tensor):
                accepted_aux = torch.zeros_like(aux)
            accepted_aux = o.where(ok, aux, accepted_aux)
        success = success | ok
        if o.all(ok == searching):  # every member still searching accepted: no next trial
            break
        curvature = 2 * (value - phi0 - slope * alpha)
        quadratic = -slope * (alpha * alpha) / o.where(curvature > 0, curvature, 1.0)
        quadratic = o.where(finite & (curvature > 0), quadratic, 0.1 * alpha)
        alpha = o.where(searching & o.not_(ok), o.clamp(quadratic, min=0.1 * alpha, max=0.5 * alpha), alpha)
    success = success & active
    return LineSearchResult(alpha=accepted_alpha, value=accepted_value, aux=accepted_aux, success=success,
                            nonfinite=saw_nonfinite, evaluations=evaluations)
