"""The plain fixed-point iterations as step objects of the shared loop: Picard,
Krasnoselskii–Mann and Halpern's anchored iteration. Each costs one evaluation of T per step.

* Picard: z_{k+1} = T(z_k); converges linearly for a contraction, may cycle otherwise.
* Krasnoselskii–Mann: z_{k+1} = (1 − α) z_k + α T(z_k), 0 < α < 1; converges (weakly) for any
  nonexpansive T with a fixed point, residual o(1/√k) (Krasnosel'skii 1955, Mann 1953).
* Halpern: z_{k+1} = λ_k z₀ + (1 − λ_k) T(z_k) with λ_k = 1/(k + 2). For every nonexpansive T
  with a fixed point z*, ‖T(z_k) − z_k‖₂ ≤ 2‖z₀ − z*‖₂ / (k + 1), and the constant is tight
  (Lieder 2021, "On the convergence rate of the Halpern-iteration", Optim. Lett. 15).

Example:
    >>> import torch
    >>> from torchnewton import fixed_point
    >>> rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    >>> res = fixed_point(lambda z: rotation @ z, torch.ones(2, dtype=torch.float64), method="halpern", tol=1e-3)
    >>> bool(res.success), float(res.certificate) * 2 ** 0.5 >= float(res.fun.abs().max())
    (True, True)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .problem import FixedPointProblem, FixedPointState, advance, initial_fields
from .termination import FixedPointTermination


@dataclass
class _PlainIteration:
    """init / terminate / record shared by the one-evaluation-per-step iterations."""

    termination: FixedPointTermination

    def init(self, problem: FixedPointProblem, x0: torch.Tensor) -> FixedPointState:
        return FixedPointState(**initial_fields(problem, x0, problem.initial_value(x0)))

    def next_point(self, state: FixedPointState) -> torch.Tensor:
        raise NotImplementedError

    def step(self, problem: FixedPointProblem, state: FixedPointState, running: torch.Tensor) -> FixedPointState:
        x = self.next_point(state)
        return advance(problem, state, x, problem.evaluate(x) - x)

    def terminate(self, problem: FixedPointProblem, state: FixedPointState):
        return self.termination(state)

    def record(self, problem: FixedPointProblem, state: FixedPointState) -> dict:
        return record(state)


def record(state: FixedPointState) -> dict:
    """History entry: the residual of the current iterate and of the best one (detached copies)."""
    return {"residual_norm": state.residual.detach().clone(), "best_residual": state.best_residual.detach().clone()}


@dataclass
class Picard(_PlainIteration):
    def next_point(self, state: FixedPointState) -> torch.Tensor:
        return state.x + state.fun


@dataclass
class KrasnoselskiiMann(_PlainIteration):
    alpha: float = 0.5

    def next_point(self, state: FixedPointState) -> torch.Tensor:
        return torch.add(state.x, state.fun, alpha=self.alpha)


@dataclass
class HalpernState(FixedPointState):
    anchor: torch.Tensor  # (B, n) z₀


@dataclass
class Halpern(_PlainIteration):
    def init(self, problem: FixedPointProblem, x0: torch.Tensor) -> HalpernState:
        return HalpernState(**initial_fields(problem, x0, problem.initial_value(x0)), anchor=x0)

    def next_point(self, state: FixedPointState) -> torch.Tensor:
        weight = (1.0 / (state.k + 2).to(state.x.dtype)).unsqueeze(-1)  # λ_k
        return torch.lerp(state.x + state.fun, state.anchor, weight)


def halpern_certificate(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2/(k + 1): after k Halpern steps ‖T(z_k) − z_k‖₂ ≤ certificate · ‖z₀ − z*‖₂ (nonexpansive T).

    The best iterate a solve returns has a residual no larger than z_k's in the chosen norm, and
    ‖·‖∞ ≤ ‖·‖₂, so the bound holds for it in either norm.
    """
    return 2.0 / (k.to(dtype) + 1)
