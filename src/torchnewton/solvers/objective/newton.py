"""Newton's method for minimization with a line search, dense or matrix-free.

* :class:`NewtonMinimizer` ("newton"): solve (∇²f + τI) d = −∇f with the smallest shift τ ≥ 0
  that makes the Cholesky factorization succeed (Nocedal & Wright Alg. 3.3), so d is a descent
  direction even where ∇²f is indefinite; τ = 0 near a strict minimizer keeps the quadratic rate.
* :class:`NewtonCG` ("newton-cg"): truncated Newton — CG on Hessian-vector products, stopped at
  ‖r‖ ≤ min(½, √‖∇f‖)‖∇f‖ (superlinear forcing, Dembo & Steihaug 1983) or at the first direction
  of non-positive curvature, where the last CG iterate (or −∇f if CG made no step) is used.

Both search along d with Armijo backtracking or the strong-Wolfe search (``LineSearch``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...globalize.hessian_modification import shifted_cholesky
from ...linear.krylov import cg
from .line_search import LineSearchMinimizer
from .problem import ObjectiveProblem
from .state import ObjectiveState


@dataclass
class NewtonMinimizer(LineSearchMinimizer):
    def direction(self, problem: ObjectiveProblem, state: ObjectiveState) -> torch.Tensor:
        factor, _ = shifted_cholesky(problem.hessian(state.x))
        problem.counters.nlinsolve += 1
        return factor.solve(-state.g)


@dataclass
class NewtonCG(LineSearchMinimizer):
    cg_max_iter: int | None = None

    def direction(self, problem: ObjectiveProblem, state: ObjectiveState) -> torch.Tensor:
        g = state.g
        g_norm = g.norm(dim=-1)
        forcing = torch.clamp(g_norm.sqrt(), max=0.5)
        solution = cg(problem.operator(state.x), -g, rtol=forcing, max_iter=self.cg_max_iter)
        problem.counters.nlinsolve += 1
        made_progress = solution.x.abs().amax(-1) > 0
        return torch.where(made_progress.unsqueeze(-1), solution.x, -g)
