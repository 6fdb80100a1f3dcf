"""``method="auto"``: Jacobi while it converges fast, Newton once Jacobi is too slow.

For a cell whose Jacobian is cheap (a structured cell of :mod:`.cells`, or a declared diagonal or
block-diagonal structure) Newton's method costs about as much per iteration as a Jacobi sweep
and converges in a handful of iterations: ``auto`` is ``newton``. For a dense cell a Newton
iteration costs d reverse-mode products (about ``d / 2`` cell evaluations or more) while a Jacobi
iteration ``h_t <- f(h_{t-1}, x_t)`` costs one evaluation, and on a contractive cell (``|J| < 1``)
Jacobi's error shrinks by about ``|J|`` per iteration (Song et al., ICML 2021): often the cheaper
route. ``auto`` starts with Jacobi and estimates, after every iteration, how many more it needs:

    n_left = log(tol / residual) / log(q),

``q`` the mean residual ratio per iteration over the last few (the rate :mod:`.newton` also uses
for its stopping rule). When ``n_left`` exceeds what ``_NEWTON_ITERATIONS`` Newton iterations
cost in Jacobi iterations, or Jacobi stops making progress (``q >= 1``: an expansive or slowly
mixing cell), it switches to Newton from the current states for the rest of the solve (all
members of a batch together: a Newton step costs the same for one member as for all).

Both phases keep the T-iteration guarantee (every step makes one more state exact) and the
success contract of :mod:`.newton`: SUCCESS only when the residual and the estimated state
error are at most ``tol``. The result says which method produced the answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .newton import LinearizedNewton, NewtonState, _converged, _terminate_on_residual
from .problem import RecurrenceProblem

# Newton iterations assumed to finish from where Jacobi stalls (quadratic convergence from a
# nearly converged prefix; the bench's dense cell takes 4 from zeros).
_NEWTON_ITERATIONS = 3
# Jacobi iterations observed before its rate is trusted (the first ones carry the initial guess's
# transient).
_MIN_JACOBI = 3


@dataclass
class AutoState(NewtonState):
    """:class:`.newton.NewtonState` and ``newton`` (B,) bool: whether Newton steps are taken."""

    newton: torch.Tensor


def newton_cost(problem: RecurrenceProblem) -> float:
    """A dense Newton iteration's cost in Jacobi iterations (cell evaluations): d reverse
    products of about half an evaluation each, plus the scan."""
    return max(2.0, problem.shape[2] / 2)


class AutoMethod:
    """Jacobi steps until they are predicted slower than Newton's, then Newton (see module doc)."""

    def __init__(self) -> None:
        self.jacobi = LinearizedNewton("none")
        self.newton = LinearizedNewton("full")
        self.jacobi_steps = 0

    def init(self, problem: RecurrenceProblem, h: torch.Tensor) -> AutoState:
        if problem.dense is None:
            raise ValueError("AutoMethod is for dense Jacobians; use LinearizedNewton('full') otherwise")
        state = self.jacobi.init(problem, h)
        return AutoState(**vars(state), newton=torch.zeros_like(state.residual, dtype=torch.bool))

    def step(self, problem: RecurrenceProblem, state: AutoState, running: torch.Tensor) -> AutoState:
        if bool(state.newton.any()):
            new = self.newton.step(problem, state, running)
            return AutoState(**vars(new) | {"newton": state.newton})
        new = self.jacobi.step(problem, state, running)
        self.jacobi_steps += 1
        switch = self._jacobi_too_slow(problem, new) & running
        return AutoState(**vars(new) | {"newton": switch.any().expand_as(switch).clone()})

    def _jacobi_too_slow(self, problem: RecurrenceProblem, state: NewtonState) -> torch.Tensor:
        if self.jacobi_steps < _MIN_JACOBI:
            return torch.zeros_like(state.residual, dtype=torch.bool)
        recent = state.recent
        known = torch.isfinite(recent)
        oldest = known.to(torch.int8).argmax(1)
        age = (recent.shape[1] - oldest).to(state.residual.dtype)
        ratio = state.residual / recent.gather(1, oldest[:, None])[:, 0]
        rate = ratio.nan_to_num(0.0) ** (1 / age)
        # log(tol / residual) / log(rate): nan/inf where the rate is >= 1 (no progress)
        left = torch.log(problem.tol / state.residual).clamp_max(0) / torch.log(rate.clamp_max(1.0))
        budget = _NEWTON_ITERATIONS * newton_cost(problem)
        return (state.residual > problem.tol) & ~(left.nan_to_num(math.inf) <= budget)

    def terminate(self, problem: RecurrenceProblem, state: AutoState) -> tuple[torch.Tensor, torch.Tensor]:
        linear = _converged(problem, state.residual, state.recent, state.gain, quadratic=False)
        quadratic = _converged(problem, state.residual, state.recent, state.gain, quadratic=True)
        return _terminate_on_residual(problem, state.residual, torch.where(state.newton, quadratic, linear))

    def record(self, problem: RecurrenceProblem, state: AutoState) -> dict:
        return {"residual": state.residual.clone(), "gain": state.gain.clone(), "newton": state.newton.clone()}

    def description(self, state: AutoState) -> str:
        """Which method produced the answer."""
        if not bool(state.newton.any()):
            return "jacobi"
        return f"jacobi ({self.jacobi_steps} iterations), then newton"
