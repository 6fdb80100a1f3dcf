"""When a minimizer stops: a small gradient, or an honest failure.

Success is ‖∇f(x)‖∞ ≤ tol·max(1, min(|f(x)|, |f(x₀)|)) with f and ∇f finite. The scale makes the
test meaningful for objectives far from 1 (the CUTEst comparison uses ‖∇f‖∞ ≤ tol·max(1, |f|),
which this rule implies); capping it by |f(x₀)| keeps an objective that is unbounded below from
"converging" because |f| grows faster than ‖∇f‖. A non-finite
iterate, value or gradient ends the member with ``Status.NONFINITE``, whatever else holds, so a
NaN objective is never reported as a success; a method's own failure code (line search failed,
trust region collapsed) ends it otherwise.

For one problem on the CPU (the loop's lean path) the same test runs on Python floats and
returns ``(done, status)`` as a bool and an int.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.linalg import vector_norm

from ...core.status import Status
from ...globalize.members import FloatOps, lean
from .state import ObjectiveState

Termination = Callable[[ObjectiveState], tuple[torch.Tensor, torch.Tensor]]
"""A termination test: state ↦ (done (B,) bool, status (B,) int) per member."""


@dataclass
class GradientTermination:
    tol: float

    def __call__(self, state: ObjectiveState) -> tuple[torch.Tensor, torch.Tensor] | tuple[bool, int]:
        if lean(state.x):
            return self._one(state)
        finite = torch.isfinite(state.f) & torch.isfinite(state.g).all(-1) & torch.isfinite(state.x).all(-1)
        scale = torch.clamp(torch.minimum(state.f.abs(), state.f_initial.abs()), min=1.0)
        success = finite & (state.g.abs().amax(-1) <= self.tol * scale)
        failed = state.failure != 0
        code = lambda s: torch.full_like(state.failure, int(s))
        status = torch.where(success, code(Status.SUCCESS), state.failure)
        status = torch.where(finite, status, code(Status.NONFINITE))
        return success | failed | ~finite, status

    def _one(self, state: ObjectiveState) -> tuple[bool, int]:
        # the largest magnitude (‖·‖∞, NaN if any entry is) is NaN or Inf exactly when some entry
        # is; it is exact, so a small vector's is taken on its read-back floats (no torch call)
        f, f_initial = state.f.item(), state.f_initial.item()
        if state.x.shape[-1] <= _FLOAT_MAX_N:
            g_max, x_max = FloatOps.max_abs(state.g), FloatOps.max_abs(state.x)
        else:
            g_max, x_max = torch.cat([vector_norm(state.g, math.inf, dim=-1),
                                      vector_norm(state.x, math.inf, dim=-1)]).tolist()
        if not (math.isfinite(f) and math.isfinite(g_max) and math.isfinite(x_max)):
            return True, int(Status.NONFINITE)
        if g_max <= self.tol * max(min(abs(f), abs(f_initial)), 1.0):
            return True, int(Status.SUCCESS)
        failure = state.failure.item()
        return failure != 0, failure


# the largest n whose ‖·‖∞ the lean test takes on Python floats
_FLOAT_MAX_N = 64
