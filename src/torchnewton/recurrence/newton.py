"""Newton-type methods on the recurrence system, as init/step/terminate objects for ``iterate``.

Every method here updates all states at once from the current guess ``H = (h_1..h_T)``:

    delta_t = D_t delta_{t-1} + (f(h_{t-1}, x_t) - h_t),   delta_0 = 0,   h_t <- h_t + delta_t,

a linear recurrence solved by one parallel scan. The choice of ``D_t`` is the method:

* ``D_t = J_t = df/dh`` exactly: Newton's method (DEER; Lim et al., ICLR 2024), quadratic
  convergence, dense Jacobians unless the cell provides a structured one;
* ``D_t = diag(J_t)``: quasi-DEER (Gonzalez et al., 2024), O(d) per step for any cell;
* ``D_t = 0``: the Jacobi fixed-point iteration ``h_t <- f(h_{t-1}, x_t)`` (Song et al., ICML 2021).

For *any* choice of D_t, if the first i states and h_i's predecessor are exact before a step,
``delta`` vanishes there and ``h_{i+1} <- f(h_i, x_{i+1})`` becomes exact after it: the first i
states are exact after i iterations, so every method converges in at most T iterations.
That also makes a per-member fallback to the Jacobi step (``D_t = 0``) safe when a scan with an
unstable Jacobian overflows.

:class:`DampedNewton` is quasi-ELK (Gonzalez et al., 2024): a Levenberg-Marquardt step on
``||r(H)||^2`` with diagonal Jacobians and an adaptive damping per batch member (see
:mod:`.damped`); it gives up the T-iteration guarantee for robustness on unstable dynamics.

The states carry the batch as dim 0 so that the loop's ``freeze`` applies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.status import Status
from .damped import levenberg_marquardt_step
from .problem import RecurrenceProblem
from .scan import scan_batched

# Damping beyond this means no step reduces the residual any more (rounding floor).
_MAX_DAMPING = 1e16
_DAMPING_DECREASE = 1.0 / 3.0
_DAMPING_INCREASE = 4.0


@dataclass
class NewtonState:
    """Current states ``h`` (B, T, d), ``fh = f(h_{t-1}, x_t)``, the Jacobians there (or None)
    and the residual ``max_t |h_t - fh_t|`` (B,)."""

    h: torch.Tensor
    fh: torch.Tensor
    jac: torch.Tensor | None
    residual: torch.Tensor


@dataclass
class DampedState(NewtonState):
    merit: torch.Tensor  # sum of squared residuals (B,)
    damping: torch.Tensor  # (B,)


def _residual(h: torch.Tensor, fh: torch.Tensor) -> torch.Tensor:
    return (h - fh).abs().flatten(1).amax(1)


def _terminate_on_residual(problem: RecurrenceProblem, state: NewtonState) -> tuple[torch.Tensor, torch.Tensor]:
    finite = torch.isfinite(state.residual)
    done = (state.residual <= problem.tol) | ~finite
    code = torch.where(finite, int(Status.SUCCESS), int(Status.NONFINITE))
    return done, code


class LinearizedNewton:
    """Newton (``jacobian="full"``), quasi-Newton (``"diagonal"``) or Jacobi (``"none"``)."""

    def __init__(self, jacobian: str):
        self.jacobian = jacobian

    def _evaluate(self, problem: RecurrenceProblem, h: torch.Tensor) -> NewtonState:
        fh, jac = problem.evaluate_linearized(h, self.jacobian)
        return NewtonState(h, fh, jac, _residual(h, fh))

    def init(self, problem: RecurrenceProblem, h: torch.Tensor) -> NewtonState:
        return self._evaluate(problem, h)

    def step(self, problem: RecurrenceProblem, state: NewtonState) -> NewtonState:
        rhs = state.fh - state.h
        if state.jac is None:
            delta = rhs
        else:
            structure = problem.structure if self.jacobian == "full" else "diagonal"
            delta = scan_batched(state.jac, rhs, torch.zeros_like(state.h[:, 0]), structure)
            problem.counters.nlinsolve += 1
            finite = torch.isfinite(delta).flatten(1).all(1).view(-1, 1, 1)
            delta = torch.where(finite, delta, rhs)
        return self._evaluate(problem, state.h + delta)

    def terminate(self, problem: RecurrenceProblem, state: NewtonState) -> tuple[torch.Tensor, torch.Tensor]:
        return _terminate_on_residual(problem, state)

    def record(self, problem: RecurrenceProblem, state: NewtonState) -> dict[str, Any]:
        return {"residual": state.residual.clone()}


class DampedNewton:
    """Quasi-ELK: Levenberg-Marquardt steps with diagonal Jacobians and adaptive damping.

    A step is accepted when it lowers ``sum_t ||r_t||^2``; the damping then shrinks by 3,
    otherwise it grows by 4 and the states stay. Members whose damping exceeds 1e16 have stalled.
    """

    def __init__(self, damping: float):
        self.initial_damping = damping

    def init(self, problem: RecurrenceProblem, h: torch.Tensor) -> DampedState:
        fh, jac = problem.evaluate_linearized(h, "diagonal")
        r = h - fh
        damping = torch.full((h.shape[0],), float(self.initial_damping), dtype=h.dtype, device=h.device)
        return DampedState(h, fh, jac, _residual(h, fh), r.square().flatten(1).sum(1), damping)

    def step(self, problem: RecurrenceProblem, state: DampedState) -> DampedState:
        delta = levenberg_marquardt_step(state.jac, state.h - state.fh, state.damping)
        problem.counters.nlinsolve += 1
        h = state.h + delta
        fh, jac = problem.evaluate_linearized(h, "diagonal")
        merit = (h - fh).square().flatten(1).sum(1)
        accept = torch.isfinite(merit) & (merit < state.merit)
        keep = accept.view(-1, 1, 1)
        return DampedState(
            h=torch.where(keep, h, state.h),
            fh=torch.where(keep, fh, state.fh),
            jac=torch.where(keep, jac, state.jac),
            residual=torch.where(accept, _residual(h, fh), state.residual),
            merit=torch.where(accept, merit, state.merit),
            damping=torch.where(accept, state.damping * _DAMPING_DECREASE, state.damping * _DAMPING_INCREASE),
        )

    def terminate(self, problem: RecurrenceProblem, state: DampedState) -> tuple[torch.Tensor, torch.Tensor]:
        done, code = _terminate_on_residual(problem, state)
        stalled = ~done & (state.damping > _MAX_DAMPING)
        return done | stalled, torch.where(stalled, int(Status.STALLED), code)

    def record(self, problem: RecurrenceProblem, state: DampedState) -> dict[str, Any]:
        return {"residual": state.residual.clone(), "damping": state.damping.clone()}
