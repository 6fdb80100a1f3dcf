"""The skeleton of every line-search minimizer: a direction plug-in plus a shared line search.

A method subclasses :class:`LineSearchMinimizer` and supplies ``direction`` (and, if it keeps a
memory such as a quasi-Newton matrix, ``make_state``/``update``). The step is then always:
d = direction(x); if d is not a descent direction (∇fᵀd ≥ 0) use −∇f; search along d with
Armijo backtracking or the strong-Wolfe search; accept per member. A member whose search fails
keeps its x and is marked ``Status.LINESEARCH_FAILED``.

The sufficient-decrease test is relaxed by δ = 10ε·max(1, |f|): near a solution the decrease a
correct step achieves is below the rounding error of f, and an exact test would fail the search
there instead of letting the gradient test finish (the same reason Hager & Zhang 2005 use
approximate Wolfe conditions). Accepted values may thus exceed f by at most δ.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch.linalg import vector_norm

from ...core.status import Status
from ...globalize.members import lean
from ...globalize.linesearch import armijo
from ...globalize.wolfe import strong_wolfe
from .problem import ObjectiveProblem
from ..evolve import evolve
from .state import ObjectiveState, initial_fields, record
from .termination import Termination

SEARCHES = ("armijo", "wolfe")
_TRUE, _FALSE = torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)


@dataclass
class SearchOutcome:
    x: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    step: torch.Tensor  # accepted x_new − x (zeros where the search failed)
    ok: torch.Tensor  # (B,) the search found an acceptable step


@dataclass
class LineSearch:
    """``kind`` "armijo" (backtracking, gradient only at the accepted point) or "wolfe"."""

    kind: str = "armijo"
    c1: float = 1e-4
    c2: float = 0.9
    max_steps: int = 30

    def __call__(self, problem: ObjectiveProblem, state: ObjectiveState, d: torch.Tensor,
                 alpha0: torch.Tensor | float = 1.0) -> SearchOutcome:
        if lean(state.x):
            return self._search_one(problem, state, d, alpha0)
        x, g = state.x, state.g
        slope = (g * d).sum(-1)
        descent = (slope < 0) & torch.isfinite(slope)
        d = torch.where(descent.unsqueeze(-1), d, -g)
        slope = torch.where(descent, slope, -(g * g).sum(-1))
        active = slope < 0
        phi0 = state.f + 10 * torch.finfo(x.dtype).eps * torch.clamp(state.f.abs(), min=1.0)
        if self.kind == "wolfe":
            def phi(alpha: torch.Tensor):
                f, grad = problem.value_and_grad(x + alpha.unsqueeze(-1) * d)
                return f, (grad * d).sum(-1), grad

            found = strong_wolfe(phi, phi0, slope, g, alpha0=alpha0, c1=self.c1, c2=self.c2,
                                 max_steps=self.max_steps, active=active)
            alpha, f_new, g_new = found.alpha, found.value, found.aux
        else:
            found = armijo(lambda alpha: (problem.value(x + alpha.unsqueeze(-1) * d), None), phi0, slope,
                           alpha0=alpha0, c1=self.c1, max_steps=self.max_steps, active=active)
            alpha, f_new = found.alpha, found.value
            g_new = problem.gradient(x + alpha.unsqueeze(-1) * d)  # unasked: "any success?" is a host read
        ok = found.success
        step = torch.where(ok.unsqueeze(-1), alpha.unsqueeze(-1) * d, torch.zeros_like(d))
        return SearchOutcome(x=x + step, f=torch.where(ok, f_new, state.f),
                             g=torch.where(ok.unsqueeze(-1), g_new, g), step=step, ok=ok)

    def _search_one(self, problem: ObjectiveProblem, state: ObjectiveState, d: torch.Tensor,
                    alpha0: torch.Tensor | float) -> SearchOutcome:
        """The same search for one problem: the rules run on Python floats (``globalize.members``)
        and the tensors are touched only to evaluate f and ∇f along x + αd."""
        x, g = state.x, state.g
        # scalars reduced along the last dimension as the batch reduces them, read one by one (a
        # read costs less than the tensor a ``cat`` would allocate to read them at once)
        slope, f0 = (g * d).sum(-1).item(), state.f.item()
        if not (slope < 0 and math.isfinite(slope)):
            d, slope = -g, -(g * g).sum(-1).item()
        phi0 = f0 + 10 * torch.finfo(x.dtype).eps * max(abs(f0), 1.0)
        # the unit step, most trials of a Newton method, is x + d itself: 1·d is d exactly
        along = lambda alpha: x + d if alpha == 1.0 else x + alpha * d
        if self.kind == "wolfe":
            def phi(alpha: float):
                trial = along(alpha)
                f, grad = problem.value_and_grad(trial)
                return f.item(), (grad * d).sum(-1).item(), (f, grad, trial)

            found = strong_wolfe(phi, phi0, slope, (state.f, g, x), alpha0=float(alpha0), c1=self.c1, c2=self.c2,
                                 max_steps=self.max_steps, active=slope < 0, dtype=x.dtype)
            f_new, g_new, x_new = found.aux
        else:
            def phi(alpha: float):
                trial = along(alpha)
                f, gradient = problem.value_then_gradient(trial)
                return float(f), (f, gradient, trial)

            found = armijo(phi, phi0, slope, alpha0=float(alpha0), c1=self.c1, max_steps=self.max_steps,
                           active=slope < 0, aux0=(state.f, None, x))
            f_new, gradient, x_new = found.aux
            g_new = gradient() if found.success else g
        if not found.success:
            return SearchOutcome(x=x, f=state.f, g=g, step=torch.zeros_like(d), ok=_FALSE)
        # the accepted trial x + αd itself (the same values as x + step, not computed again): its
        # gradient's graph, kept by the problem, then gives the next Newton step's curvature
        # without evaluating f
        return SearchOutcome(x=x_new, f=f_new, g=g_new, step=d if found.alpha == 1.0 else found.alpha * d, ok=_TRUE)


@dataclass
class LineSearchMinimizer(ABC):
    termination: Termination
    search: LineSearch = field(default_factory=LineSearch)

    def init(self, problem: ObjectiveProblem, x0: torch.Tensor) -> ObjectiveState:
        f, g = problem.value_and_grad(x0)
        return self.make_state(problem, initial_fields(x0, f, g))

    def make_state(self, problem: ObjectiveProblem, fields: dict) -> ObjectiveState:
        return ObjectiveState(**fields)

    @abstractmethod
    def direction(self, problem: ObjectiveProblem, state: ObjectiveState) -> torch.Tensor:
        """The search direction at the current iterate."""

    def initial_step(self, state: ObjectiveState) -> torch.Tensor | float:
        """α₀ of the search: 1 for Newton-type directions, whose natural step is 1."""
        return 1.0

    def step(self, problem: ObjectiveProblem, state: ObjectiveState, running: torch.Tensor) -> ObjectiveState:
        d = self.direction(problem, state)
        outcome = self.search(problem, state, d, alpha0=self.initial_step(state))
        if lean(state.x):
            failure = state.failure if outcome.ok is _TRUE else torch.full_like(state.failure, int(Status.LINESEARCH_FAILED))
        else:
            failure = torch.where(outcome.ok, state.failure, torch.full_like(state.failure, int(Status.LINESEARCH_FAILED)))
        moved = evolve(state, x=outcome.x, f=outcome.f, g=outcome.g, step_norm=vector_norm(outcome.step, dim=-1),
                       failure=failure)
        return self.update(problem, state, moved, outcome)

    def update(self, problem: ObjectiveProblem, old: ObjectiveState, new: ObjectiveState,
               outcome: SearchOutcome) -> ObjectiveState:
        """Hook for methods with a memory (quasi-Newton pairs); the default keeps ``new``."""
        return new

    def terminate(self, problem: ObjectiveProblem, state: ObjectiveState):
        return self.termination(state)

    def record(self, problem: ObjectiveProblem, state: ObjectiveState) -> dict:
        return record(state)

