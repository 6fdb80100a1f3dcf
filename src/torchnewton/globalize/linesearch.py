"""Batched backtracking line search: each member of the batch finds its own step length.

A trial evaluates the whole batch once (one call of ``phi``) at every member's current α;
members that have accepted their step keep it. Non-finite trial values count as failures and
shrink α, which is how a NaN or Inf during the iteration is rejected instead of accepted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

MeritFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class LineSearchResult:
    alpha: torch.Tensor  # (B,) accepted step lengths (0 where the search failed)
    value: torch.Tensor  # (B,) merit value at the accepted step (phi0 where it failed)
    aux: torch.Tensor | None  # whatever phi returned beside the value, at the accepted step
    success: torch.Tensor  # (B,) bool
    nonfinite: torch.Tensor  # (B,) bool: some trial value of this member was NaN or Inf
    evaluations: int  # calls of phi (each on the whole batch)


def armijo(phi: MeritFunction, phi0: torch.Tensor, slope: torch.Tensor, *,
           alpha0: torch.Tensor | float = 1.0, c1: float = 1e-4, max_steps: int = 40,
           active: torch.Tensor | None = None, aux0: torch.Tensor | None = None) -> LineSearchResult:
    """Backtracking to the sufficient-decrease (Armijo) condition φ(α) ≤ φ(0) + c₁ α φ'(0).

    ``phi(alpha)`` takes a (B,) tensor of step lengths and returns ``(values (B,), aux)``; ``slope``
    is φ'(0) (negative for a descent direction). The next trial α minimizes the quadratic through
    φ(0), φ'(0), φ(α), safeguarded to [0.1α, 0.5α] (Nocedal & Wright, §3.5). Members not in
    ``active`` are left at α = 0 and do not count as failures. ``aux0`` (what ``phi`` would
    return beside φ(0)) is the ``aux`` of members that take no step; zeros if not given.

    Example:
        >>> phi = lambda a: ((1 - a) ** 2, None)
        >>> armijo(phi, torch.ones(1), -2 * torch.ones(1)).alpha
        tensor([1.])
    """
    batch = phi0.shape[0]
    active = torch.ones(batch, dtype=torch.bool, device=phi0.device) if active is None else active.clone()
    alpha = torch.as_tensor(alpha0, dtype=phi0.dtype, device=phi0.device).expand(batch).clone()
    accepted_alpha = torch.zeros_like(alpha)
    accepted_value = phi0.clone()
    accepted_aux = aux0
    success = ~active
    saw_nonfinite = torch.zeros_like(active)
    evaluations = 0
    for _ in range(max_steps):
        searching = active & ~success
        if not bool(searching.any()):
            break
        value, aux = phi(torch.where(searching, alpha, torch.zeros_like(alpha)))
        evaluations += 1
        finite = torch.isfinite(value)
        saw_nonfinite = saw_nonfinite | (searching & ~finite)
        ok = searching & finite & (value <= phi0 + c1 * alpha * slope)
        accepted_alpha = torch.where(ok, alpha, accepted_alpha)
        accepted_value = torch.where(ok, value, accepted_value)
        if aux is not None:
            if accepted_aux is None:
                accepted_aux = torch.zeros_like(aux)
            mask = ok.view((batch,) + (1,) * (aux.dim() - 1))
            accepted_aux = torch.where(mask, aux, accepted_aux)
        success = success | ok
        if bool((ok == searching).all()):  # every member still searching accepted: no next trial
            break
        curvature = 2 * (value - phi0 - slope * alpha)
        quadratic = -slope * alpha**2 / torch.where(curvature > 0, curvature, torch.ones_like(curvature))
        quadratic = torch.where(finite & (curvature > 0), quadratic, 0.1 * alpha)
        alpha = torch.where(searching & ~ok, torch.clamp(quadratic, min=0.1 * alpha, max=0.5 * alpha), alpha)
    success = success & active
    return LineSearchResult(alpha=accepted_alpha, value=accepted_value, aux=accepted_aux, success=success,
                            nonfinite=saw_nonfinite, evaluations=evaluations)
