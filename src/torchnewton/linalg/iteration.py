"""The stopping rule shared by the matrix iterations that run to a tolerance.

Each iteration is a map ``state -> (state, residual)`` where ``residual`` holds one number per
matrix of the batch. The loop stops when the largest residual is at most ``tol``, when it has
stopped decreasing near the rounding floor (``tol`` can be below what the dtype can reach), or
after ``max_steps``. A step whose residual is not finite is discarded and the last finite
iterate is returned, so rounding blow-up on a singular input never turns into NaN output.
Reading the residual is one host-device synchronization per step; fixed-step callers (an
optimizer) do not use this loop.
"""
from __future__ import annotations

import math
from typing import Callable, TypeVar

import torch

State = TypeVar("State")


def iterate_to_tolerance(
    step: Callable[[State, int], tuple[State, torch.Tensor]],
    state: State,
    *,
    tol: float,
    max_steps: int,
) -> tuple[State, int]:
    """Run ``state, residual = step(state, k)`` for k = 0, 1, ... until converged.

    Returns the final state and the number of accepted steps.

    Example:
        >>> halve = lambda x, k: (x / 2, x.abs().reshape(1) / 2)
        >>> iterate_to_tolerance(halve, torch.tensor(1.0), tol=0.1, max_steps=50)[1]
        4
    """
    previous = math.inf
    stalled = 0
    for k in range(max_steps):
        candidate, residual = step(state, k)
        r = float(residual.max())
        if not math.isfinite(r):
            return state, k
        state = candidate
        if r <= tol:
            return state, k + 1
        # A residual that no longer decreases near the rounding level is the floor, not slow
        # progress. (Above it a growing residual is normal: a tiny singular value grows by about
        # 1.5 per step in the linear phase, and the step size grows with it.)
        floor = 1e3 * torch.finfo(residual.dtype).eps
        stalled = stalled + 1 if (r >= previous and r <= max(floor, tol)) else 0
        if stalled >= 2:
            return state, k + 1
        previous = r
    return state, max_steps
