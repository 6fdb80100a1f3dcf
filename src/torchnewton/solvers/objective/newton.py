"""Newton's method for minimization with a line search, dense or matrix-free.

* :class:`NewtonMinimizer` ("newton"): solve (∇²f + τI) d = −∇f with the smallest shift τ ≥ 0
  that makes the Cholesky factorization succeed (Nocedal & Wright Alg. 3.3), so d is a descent
  direction even where ∇²f is indefinite; τ = 0 near a strict minimizer keeps the quadratic rate.
* :class:`NewtonCG` ("newton-cg"): truncated Newton — CG on Hessian-vector products, stopped at
  ‖r‖ ≤ min(½, √‖∇f‖)‖∇f‖ (superlinear forcing, Dembo & Steihaug 1983) or at the first direction
  of non-positive curvature, where the last CG iterate (or −∇f if CG made no step) is used.
  With ``recycle=k`` > 0 (a batch of one) every Newton system is solved by one deflated CG kept
  across the iterations (``linear.RecyclingSolver("cg")``, Saad et al. 2000): the k Ritz vectors
  of smallest Ritz value of the previous Hessians are projected out, which removes the slow part
  of each new solve when consecutive Hessians are close. Deflation assumes ∇²f SPD along the
  path (it is meant for convex or locally convex problems): where the recycled block WᵀHW is
  not positive definite the solve goes on without the space, and non-positive curvature met by
  CG ends the solve with its last iterate, as without recycling. A batch of several problems
  keeps the batched CG. Each solve costs k extra products to re-project the space, which the
  short solves of truncated Newton (forcing ½ far from the minimizer) may not win back;
  ``nhev`` counts all products.

Both search along d with Armijo backtracking or the strong-Wolfe search (``LineSearch``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.linalg import vector_norm

from ...core.status import Status
from ...globalize.hessian_modification import shifted_cholesky
from ...globalize.members import FloatOps, lean
from ...linear.krylov import cg
from ...linear.matrix import CallableOperator
from ...linear.recycling import RecyclingSolver
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
    recycle: int = 0
    # the deflated CG of the current solve (made by ``init``), None without recycling
    recycler: RecyclingSolver | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.recycle, bool) or not isinstance(self.recycle, int) or self.recycle < 0:
            raise ValueError(f"options['recycle'] must be an int >= 0 (the recycled subspace dimension), "
                             f"got {self.recycle!r}")

    def init(self, problem: ObjectiveProblem, x0: torch.Tensor) -> ObjectiveState:
        batch, n = x0.shape
        self.recycler = None if self.recycle == 0 or batch != 1 else RecyclingSolver(
            "cg", recycle=self.recycle, restart=self.recycle + 1, warm_start=False,
            maxiter=self.cg_max_iter if self.cg_max_iter is not None else max(2 * n, 10))
        return super().init(problem, x0)

    def direction(self, problem: ObjectiveProblem, state: ObjectiveState) -> torch.Tensor:
        g = state.g
        forcing = forcing_term(g)
        if self.recycler is not None and bool(torch.isfinite(g).all()):
            return self._recycled_direction(problem, state, float(forcing))
        solution = cg(problem.operator(state.x), -g, rtol=forcing, max_iter=self.cg_max_iter)
        problem.counters.nlinsolve += 1
        if lean(g):
            return solution.x if FloatOps.max_abs(solution.x) > 0 else -g
        made_progress = solution.x.abs().amax(-1) > 0
        return torch.where(made_progress.unsqueeze(-1), solution.x, -g)

    def _recycled_direction(self, problem: ObjectiveProblem, state: ObjectiveState, forcing: float) -> torch.Tensor:
        """∇²f d = −∇f for the one member by deflated CG, truncated as the plain solve."""
        g = state.g
        op = problem.operator(state.x)
        # the curvature operator takes one (1, n) vector: the rows of a re-projection go one by one
        rows = lambda V: torch.cat([op.matvec(V[i:i + 1]) for i in range(V.shape[0])])
        self.recycler.rtol = forcing
        solution = self.recycler.solve(CallableOperator(rows, g.shape[-1], dtype=g.dtype, device=g.device), -g[0])
        problem.counters.nlinsolve += 1
        d = solution.x.unsqueeze(0)
        usable = solution.status != Status.NONFINITE and bool(d.abs().amax() > 0)
        return d if usable else -g


def forcing_term(g: torch.Tensor) -> torch.Tensor | float:
    """min(½, √‖∇f‖), the relative tolerance of a truncated Newton solve (Dembo & Steihaug 1983),
    per member (B,); for one problem in float64 a Python float, the same value (both square roots
    are correctly rounded), and in other dtypes the tensor's value read back.

    Example:
        >>> forcing_term(torch.tensor([[3.0, 4.0]], dtype=torch.float64)), forcing_term(torch.tensor([[0.0, 0.0625]]))
        (0.5, 0.25)
    """
    if lean(g) and g.dtype == torch.float64:
        return min(math.sqrt(vector_norm(g, dim=-1).item()), 0.5)
    forcing = torch.clamp(vector_norm(g, dim=-1).sqrt(), max=0.5)
    return forcing.item() if lean(g) else forcing
