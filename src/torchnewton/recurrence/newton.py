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

:class:`DampedNewton` is quasi-ELK (Gonzalez et al., 2024): the Levenberg-Marquardt-damped step
as a Kalman filter with diagonal Jacobians and an adaptive damping per batch member; its scans
stay stable on unstable dynamics, and an undamped frontier keeps the T-iteration guarantee
(see :mod:`.damped`).

The states carry the batch as dim 0 so that the loop's ``freeze`` applies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..core.status import Status
from .damped import elk_filter_step
from .problem import RecurrenceProblem, max_abs
from .scan import scan_batched

_DAMPING_DECREASE = 1.0 / 3.0
_DAMPING_INCREASE = 4.0
# A Newton step cutting the residual less than this factor has hit the rounding floor.
_STAGNATION = 4.0
_ERROR_MARGIN = 4.0
# Residuals below tol * _PREFIX_FRACTION count as converged in the damped step, which then
# never moves them: they must be small enough not to matter for the states' error.
_PREFIX_FRACTION = 1.0 / 64.0
# the linear methods' estimate already sums the geometric series of their future steps
_LINEAR_ERROR_MARGIN = 2.0
# iterations over which a linear method's rate is measured
_WINDOW = 4


@dataclass
class NewtonState:
    """Current states ``h`` (B, T, d), ``rhs = f(h_{t-1}, x_t) - h_t``, the Jacobians there (or
    None), the residual ``max_t |rhs_t|`` (B,), ``recent`` (B, _WINDOW), the residuals before it
    (oldest first, inf before the first iterations), and ``gain`` (B,),
    the amplification ``max|delta| / max|rhs|`` (at least 1) measured by the last step.

    The buffers are reused: a step overwrites ``rhs`` and ``jac`` and updates ``h`` in place
    (fresh memory the size of the sequence costs more than the arithmetic on it: every page is
    zeroed by the kernel on first touch). What the loop keeps of a frozen member, its rows of
    ``h`` and the per-member scalars, is never overwritten."""

    h: torch.Tensor
    rhs: torch.Tensor
    jac: torch.Tensor | None
    residual: torch.Tensor
    recent: torch.Tensor
    gain: torch.Tensor


@dataclass
class DampedState:
    """States, ``rhs``, diagonal Jacobians, residual, recent residuals and gain as in
    :class:`NewtonState`."""

    h: torch.Tensor
    rhs: torch.Tensor
    jac: torch.Tensor
    residual: torch.Tensor
    merit: torch.Tensor  # sum of squared residuals (B,)
    damping: torch.Tensor  # (B,)
    recent: torch.Tensor
    gain: torch.Tensor


def _terminate_on_residual(problem: RecurrenceProblem, residual: torch.Tensor,
                           done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    finite = torch.isfinite(residual)
    code = torch.where(finite, int(Status.SUCCESS), int(Status.NONFINITE))
    return done | ~finite, code


def _converged(problem: RecurrenceProblem, residual: torch.Tensor, recent: torch.Tensor,
               gain: torch.Tensor, quadratic: bool) -> torch.Tensor:
    """Residual and estimated state error at most ``tol``, or the rounding floor reached.

    Newton (``quadratic``): the error is about ``gain * residual``, and a step that cut the
    residual less than ``_STAGNATION`` times has hit the floor. A linearly convergent method
    (quasi-Newton, damped, Jacobi) with rate ``q`` per iteration still moves the states by about
    ``gain * residual`` next step and by a geometric series of such steps after it: the error is
    about ``gain * residual / (1 - q)``. ``q`` is the mean rate over the last ``_WINDOW``
    iterations: the largest residual can sit on the same time step, or on the same rounded
    value, for an iteration or two while the error still decays (Jacobi moves its error one step
    forward per iteration). ``_WINDOW`` iterations without a decrease mark the floor.
    """
    if quadratic:
        floor = residual * _STAGNATION > recent[:, -1]
        error = _ERROR_MARGIN * gain * residual
    else:
        known = torch.isfinite(recent)
        oldest = known.to(torch.int8).argmax(1)  # first finite column (0 if none)
        age = (recent.shape[1] - oldest).to(residual.dtype)
        ratio = (residual / recent.gather(1, oldest[:, None])[:, 0]).nan_to_num(0.0)  # 0/0: exact
        rate = torch.where(known.any(1), ratio ** (1 / age), 0.0)
        floor = known.all(1) & (rate >= 1)
        error = _LINEAR_ERROR_MARGIN * gain * residual / (1 - rate).clamp_min(torch.finfo(residual.dtype).eps)
    return (residual <= problem.tol) & ((error <= problem.tol) | floor)


def _shifted(recent: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``recent`` with ``residual`` appended and the oldest entry dropped."""
    return torch.cat([recent[:, 1:], residual[:, None]], 1)


def _gain(step_size: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``max|delta| / max|rhs|`` of a step, at least 1 (1 where undefined)."""
    return (step_size / residual).nan_to_num(1.0).clamp_min(1.0)


class LinearizedNewton:
    """Newton (``jacobian="full"``), quasi-Newton (``"diagonal"``) or Jacobi (``"none"``).

    Stopping rule: the residual is at most ``tol`` and so is the estimated state error. Near the
    solution the error left in the states is ``R^{-1} r`` (R the unit lower bidiagonal Jacobian of
    the system), the residual amplified by up to ``1 / (1 - |J|)`` where the dynamics are slow:
    a residual of ``tol`` can leave errors several times ``tol``. With exact Jacobians the last
    Newton step measured that amplification for the previous residual, ``gain = max|delta| /
    max|r|``, so ``newton`` also requires ``_ERROR_MARGIN * gain * residual <= tol`` (the margin
    because the new residual may sit where the dynamics are slower than average); one more step
    costs one iteration and, converging quadratically, lands at the rounding floor. A step that
    reduces the residual less than ``_STAGNATION`` times shows that floor has been reached, and
    then ``residual <= tol`` suffices. quasi-Newton and Jacobi converge linearly, and their
    estimate also sums the steps still to come (see :func:`_converged`).
    """

    def __init__(self, jacobian: str):
        self.jacobian = jacobian

    def blocked(self, problem: RecurrenceProblem) -> bool:
        """Whether steps use the blocked dense Newton step of :mod:`.dense`, which computes the
        Jacobians itself (the evaluations between steps then compute the residual only, and
        no Jacobian is formed at the final iterate)."""
        return self.jacobian == "full" and problem.dense is not None

    def _evaluate(self, problem: RecurrenceProblem, h: torch.Tensor, recent: torch.Tensor,
                  gain: torch.Tensor, reuse: NewtonState | None = None) -> NewtonState:
        out = None if reuse is None else (reuse.rhs, reuse.jac)
        rhs, jac, residual = problem.residual_and_jacobian(h, "none" if self.blocked(problem) else self.jacobian, out)
        return NewtonState(h, rhs, jac, residual, recent, gain)

    def init(self, problem: RecurrenceProblem, h: torch.Tensor) -> NewtonState:
        recent = h.new_full((h.shape[0], _WINDOW), math.inf)
        return self._evaluate(problem, h, recent, h.new_ones(h.shape[0]))

    def step(self, problem: RecurrenceProblem, state: NewtonState, running: torch.Tensor) -> NewtonState:
        if self.jacobian == "none":
            return self._evaluate(problem, state.h + state.rhs, _shifted(state.recent, state.residual), state.gain,
                                  state)
        # delta overwrites rhs, and h is updated in place where members are running: no
        # sequence-sized allocation per step
        if self.blocked(problem):
            delta = problem.dense_newton_step(state.h, state.rhs)
        else:
            structure = problem.structure if self.jacobian == "full" else "diagonal"
            delta = scan_batched(state.jac, state.rhs, torch.zeros_like(state.h[:, 0]), structure, out=state.rhs)
        problem.counters.nlinsolve += 1
        step_size = max_abs(delta)  # nan/inf if the scan overflowed
        finite = torch.isfinite(step_size)
        if not bool(finite.all()):
            # the Jacobi step for those members: f(h_{t-1}, x_t) - h_t again, as rhs is overwritten
            jacobi = problem.residual_and_jacobian(state.h, "none")[0]
            delta = torch.where(finite.view(-1, 1, 1), delta, jacobi)
        gain = _gain(step_size, state.residual)
        h = state.h
        if bool(running.all()):
            h.add_(delta)
        else:  # a frozen member's states must not change
            h.add_(torch.where(running.view(-1, 1, 1), delta, 0.0))
        return self._evaluate(problem, h, _shifted(state.recent, state.residual), torch.where(finite, gain, 1.0),
                              state)

    def terminate(self, problem: RecurrenceProblem, state: NewtonState) -> tuple[torch.Tensor, torch.Tensor]:
        done = _converged(problem, state.residual, state.recent, state.gain, self.jacobian == "full")
        return _terminate_on_residual(problem, state.residual, done)

    def record(self, problem: RecurrenceProblem, state: NewtonState) -> dict[str, Any]:
        return {"residual": state.residual.clone(), "gain": state.gain.clone()}


class DampedNewton:
    """Quasi-ELK: Kalman-filter (damped) steps with diagonal Jacobians, adaptive damping and an
    undamped frontier (see :mod:`.damped`).

    Every step is taken (the undamped frontier guarantees progress); the damping of a member
    shrinks by 3 after a step that lowers ``sum_t ||r_t||^2`` and grows by 4 otherwise, within
    ``[0, 1/eps]``.
    """

    def __init__(self, damping: float):
        self.initial_damping = damping

    def init(self, problem: RecurrenceProblem, h: torch.Tensor) -> DampedState:
        rhs, jac, residual = problem.residual_and_jacobian(h, "diagonal")
        damping = torch.full((h.shape[0],), float(self.initial_damping), dtype=h.dtype, device=h.device)
        return DampedState(h, rhs, jac, residual, rhs.square().flatten(1).sum(1), damping,
                           h.new_full((h.shape[0], _WINDOW), math.inf), torch.ones_like(residual))

    def step(self, problem: RecurrenceProblem, state: DampedState, running: torch.Tensor) -> DampedState:
        delta = elk_filter_step(state.jac, state.rhs, state.damping, problem.tol * _PREFIX_FRACTION)
        problem.counters.nlinsolve += 1
        h = state.h + delta
        rhs, jac, residual = problem.residual_and_jacobian(h, "diagonal")
        merit = rhs.square().flatten(1).sum(1)
        factor = torch.where(merit < state.merit, _DAMPING_DECREASE, _DAMPING_INCREASE)
        damping = (state.damping * factor).clamp(max=1.0 / torch.finfo(h.dtype).eps)
        return DampedState(h, rhs, jac, residual, merit, damping, _shifted(state.recent, state.residual),
                           _gain(max_abs(delta), state.residual))

    def terminate(self, problem: RecurrenceProblem, state: DampedState) -> tuple[torch.Tensor, torch.Tensor]:
        done = _converged(problem, state.residual, state.recent, state.gain, quadratic=False)
        return _terminate_on_residual(problem, state.residual, done)

    def record(self, problem: RecurrenceProblem, state: DampedState) -> dict[str, Any]:
        return {"residual": state.residual.clone(), "damping": state.damping.clone()}
