"""A fixed-point problem z = T(z) in batched form, and the iterate every fixed-point method shares.

The residual of an iterate z is r(z) = T(z) − z; its size is measured in the norm the caller
chose (∞ by default, the sense of ``success`` in :func:`torchnewton.fixed_point`). Every method
keeps the best iterate seen so far (smallest residual), because accelerated and anchored
iterations are not monotone: what a solve returns is the best point, with its residual.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch

from ...core.counters import Counters

BatchMap = Callable[[torch.Tensor], torch.Tensor]
NORMS = ("inf", "2")


def residual_norm(r: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-member ‖r‖ of a (B, n) batch: the max norm or the Euclidean norm."""
    return torch.linalg.vector_norm(r, math.inf if norm == "inf" else 2, dim=-1)


class FixedPointProblem:
    """T: (B, n) → (B, n), row i depending only on row i; ``nfev`` counts batched calls.

    ``first`` = (z₀, T(z₀)) from the validation call of the entry point, counted here, so the
    method's ``init`` reuses it instead of evaluating T twice at the same point.
    """

    def __init__(self, T: BatchMap, norm: str = "inf", first: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.T, self.norm, self.first = T, norm, first
        self.counters = Counters(nfev=0 if first is None else 1)

    def evaluate(self, z: torch.Tensor) -> torch.Tensor:
        self.counters.nfev += 1
        return self.T(z)

    def initial_value(self, z0: torch.Tensor) -> torch.Tensor:
        if self.first is not None and self.first[0] is z0:
            return self.first[1]
        return self.evaluate(z0)

    def size(self, r: torch.Tensor) -> torch.Tensor:
        return residual_norm(r, self.norm)


@dataclass
class FixedPointState:
    """All tensor fields are batched along dim 0.

    ``x`` is the current iterate z_k and ``fun`` its residual T(z_k) − z_k (so T(z_k) = x + fun);
    ``residual`` = ‖T(z_k) − z_k‖.
    ``best_x``, ``best_fun`` (its T(z) − z) and ``best_residual`` hold the best iterate so far.
    ``reference`` and ``since_progress`` drive the stall test: ``since_progress`` counts the
    steps since the residual last fell below (1 − 10⁻³)·``reference``. ``k`` counts the member's
    steps (Halpern's anchor weights need it).
    """

    x: torch.Tensor
    fun: torch.Tensor
    residual: torch.Tensor
    best_x: torch.Tensor
    best_fun: torch.Tensor
    best_residual: torch.Tensor
    reference: torch.Tensor
    since_progress: torch.Tensor
    k: torch.Tensor


PROGRESS = 1e-3  # relative decrease of the residual that counts as progress for the stall test


def initial_fields(problem: FixedPointProblem, x0: torch.Tensor, Tx0: torch.Tensor) -> dict:
    """Field values of a fresh FixedPointState (a dict, so methods add their own fields)."""
    fun = Tx0 - x0
    size = problem.size(fun)
    batch = x0.shape[0]
    zeros = torch.zeros(batch, dtype=torch.long, device=x0.device)
    return dict(x=x0, fun=fun, residual=size, best_x=x0, best_fun=fun, best_residual=size,
                reference=size, since_progress=zeros, k=zeros)


def advance(problem: FixedPointProblem, state: FixedPointState, x: torch.Tensor, fun: torch.Tensor,
            **fields) -> FixedPointState:
    """The state after a step to ``x`` with T(x) − x = ``fun``: best iterate, stall counter, step count."""
    size = problem.size(fun)
    better = size < state.best_residual  # False for NaN: a non-finite point never becomes the best
    if bool(better.all()):  # the common case of a converging iteration: no masking needed
        best_x, best_fun = x, fun
    elif bool(better.any()):
        column = better.unsqueeze(-1)
        best_x, best_fun = torch.where(column, x, state.best_x), torch.where(column, fun, state.best_fun)
    else:
        best_x, best_fun = state.best_x, state.best_fun
    progress = size < (1 - PROGRESS) * state.reference
    return replace(state, x=x, fun=fun, residual=size, best_x=best_x, best_fun=best_fun,
                   best_residual=torch.where(better, size, state.best_residual),
                   reference=torch.where(progress, size, state.reference),
                   since_progress=(state.since_progress + 1).masked_fill_(progress, 0),
                   k=state.k + 1, **fields)
