"""Jacobian-free Newton–Krylov for F(x) = 0: GMRES on Jacobian-vector products, globalized.

* Direction: J d = −F by restarted GMRES to the relative tolerance η, never forming J; the
  products come from autodiff (``jvp="autodiff"``: the linearization is recorded once per step,
  each product is one pass through it) or one function evaluation each (``"finite-difference"``,
  accurate to about √eps, as scipy's ``newton_krylov``).
* Forcing terms η: Eisenstat–Walker choice 2 with Kelley's floor (``globalize.forcing``), η₀ = ½;
  with ``scaled_forcing`` (default) GMRES stops at ‖J d + F‖ ≤ η·min(1, ‖F‖)·‖F‖, as scipy's
  ``nonlin_solve``: near a root the directions are nearly exact Newton steps, which is what takes
  MGH's trigonometric function to its root instead of to the local minimum of ‖F‖ at 4e-3 where
  EW's forcing alone led (and stalled).
* Line search: Armijo backtracking on ½‖F‖² (safeguarded quadratic interpolation, slope FᵀJd
  from one more product), the first trial bounded by ``max_step``: α₀ = min(1, max_step/‖d‖)
  (default 10³·max(‖x₀‖, 1)); a step below ``min_step``·α₀ (default 0.01, scipy's ``amin``)
  counts as a failed search.
* When the search fails: the step is retried from the same point with a tight forcing term
  (η = 10⁻⁴: an inexact direction may just be a poor descent direction); if it fails again the
  iterate takes the bounded full step anyway, as scipy's ``nonlin_solve`` does, which is how it
  gets past local minima of ‖F‖ (MGH's trigonometric function). Such non-monotone steps are
  limited to ``max_escapes`` in a row without a new best point.
* Krylov subspace recycling (``recycle=k`` > 0, a batch of one): every Newton system is solved
  by one GCRO-DR solver kept across the Newton iterations (``linear.RecyclingSolver``, Parks et
  al. 2006), which deflates the k harmonic Ritz vectors of smallest magnitude of the previous
  Jacobians (times M⁻¹): consecutive Jacobians are close, so the slow part of each new GMRES solve
  is already spanned. Each cycle runs ``inner_restart`` Arnoldi steps beside the k recycled
  vectors (GCRO-DR(m = inner_restart + k, k); the first cycle, with nothing recycled yet, is
  GMRES(inner_restart + k)); each new Jacobian costs k products to re-project
  the subspace (the ``preconditioner`` then also sees (k, n) blocks, rows independent as for
  a batch). Same forcing terms (the relative tolerance of each solve), same line search.
  A batch of several problems falls back to the batched GMRES (one shared subspace would mix
  the members' Jacobians, and a solver per member would pay a full batched product per member
  product). ``krylov_iterations`` (B,) counts the Krylov iterations of every inner solve.
* What is reported is the best point: ``x``, ``F``, ``cost`` hold the iterate with the least
  ‖F‖ so far, and the exploring iterate ``z`` (equal to x until a non-monotone step) goes on from
  where it is. A member ends LINESEARCH_FAILED when its search fails with no escape left,
  NONFINITE when only NaN/Inf lay along the direction.

Knoll & Keyes, "Jacobian-free Newton–Krylov methods: a survey" (J. Comput. Phys. 193, 2004);
Pernice & Walker, "NITSOL" (SIAM J. Sci. Comput. 19, 1998); Parks, de Sturler, Mackey, Johnson &
Maiti, "Recycling Krylov subspaces for sequences of linear systems" (SIAM J. Sci. Comput. 28, 2006).

Example:
    >>> from torchnewton.solvers.loop import iterate
    >>> from torchnewton.solvers.residual.termination import RootTermination
    >>> problem = ResidualProblem(lambda x: x**3 - 8)
    >>> method = NewtonKrylov(RootTermination(1e-12))
    >>> iterate(method, problem, torch.ones(1, 1, dtype=torch.float64), max_iter=50).state.x
    tensor([[2.]], dtype=torch.float64)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ...core.status import Status
from ...globalize.forcing import eisenstat_walker
from ...globalize.linesearch import armijo
from ...linear import MatrixFreeOperator
from ...linear.krylov import gmres
from ...linear.matrix import CallableOperator
from ...linear.recycling import RecyclingSolver
from .problem import ResidualProblem
from .state import ResidualState, initial_state, record
from .termination import Termination

TIGHT_FORCING = 1e-4


@dataclass
class NewtonKrylovState(ResidualState):
    z: torch.Tensor  # (B, n) the exploring iterate (x, the best point, is where z was best)
    Fz: torch.Tensor  # F(z)
    cost_z: torch.Tensor  # ½‖F(z)‖²
    forcing: torch.Tensor  # η of the next inner solve
    escapes: torch.Tensor  # non-monotone steps since the last new best point
    max_step: torch.Tensor  # bound on ‖α₀ d‖
    J: torch.Tensor  # (B, 0, 0): no Jacobian is ever formed
    krylov_iterations: torch.Tensor  # (B,) Krylov iterations of all inner solves so far
    recycler: RecyclingSolver | None = None  # the GCRO-DR solver kept across iterations (recycle > 0, B = 1)


@dataclass
class NewtonKrylov:
    termination: Termination
    c1: float = 1e-4
    max_backtracks: int = 40
    inner_restart: int = 30
    inner_max_iter: int = 200
    max_forcing: float = 0.9
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None
    jvp: str = "autodiff"
    max_step: float | None = None
    max_escapes: int = 20
    min_step: float = 0.01
    scaled_forcing: bool = True
    recycle: int = 0

    def __post_init__(self):
        if isinstance(self.recycle, bool) or not isinstance(self.recycle, int) or self.recycle < 0:
            raise ValueError(f"options['recycle'] must be an int >= 0 (the recycled subspace dimension), "
                             f"got {self.recycle!r}")
        if self.recycle > 0 and (isinstance(self.inner_restart, bool) or not isinstance(self.inner_restart, int)
                                 or self.inner_restart < 1):
            raise ValueError(f"options['inner_restart'] must be an int >= 1, got {self.inner_restart!r}")
        if self.jvp not in ("autodiff", "finite-difference"):
            raise ValueError(f"options['jvp'] must be 'autodiff' or 'finite-difference', got {self.jvp!r}")
        if not 0 < self.max_forcing < 1:
            raise ValueError(f"options['max_forcing'] must be in (0, 1), got {self.max_forcing}")
        if self.max_step is not None and not self.max_step > 0:
            raise ValueError(f"options['max_step'] must be > 0, got {self.max_step}")
        if isinstance(self.max_escapes, bool) or not isinstance(self.max_escapes, int) or self.max_escapes < 0:
            raise ValueError(f"options['max_escapes'] must be an int >= 0, got {self.max_escapes!r}")

    def init(self, problem: ResidualProblem, x0: torch.Tensor) -> NewtonKrylovState:
        F = problem.residual(x0)
        fields = initial_state(x0, F)
        batch = x0.shape[0]
        # Dennis & Schnabel's default bound on a step: 10³·max(‖x₀‖, 1)
        bound = 1e3 * torch.clamp(x0.norm(dim=-1), min=1.0) if self.max_step is None else \
            torch.full((batch,), float(self.max_step), dtype=x0.dtype, device=x0.device)
        return NewtonKrylovState(**fields, z=x0, Fz=F, cost_z=fields["cost"],
                                 forcing=torch.full((batch,), 0.5, dtype=x0.dtype, device=x0.device),
                                 escapes=torch.zeros(batch, dtype=torch.long, device=x0.device), max_step=bound,
                                 J=x0.new_zeros(batch, 0, 0),
                                 krylov_iterations=torch.zeros(batch, dtype=torch.long, device=x0.device),
                                 recycler=self._recycler(batch))

    def _recycler(self, batch: int) -> RecyclingSolver | None:
        """A fresh GCRO-DR solver for this solve, or None (no recycling, or a batch of several)."""
        if self.recycle == 0 or batch != 1:
            return None
        # no warm start: the previous Newton step is no guess for the next one, and checking it costs a product
        return RecyclingSolver("gcrodr", recycle=self.recycle, restart=self.inner_restart + self.recycle,
                               maxiter=self.inner_max_iter, warm_start=False)

    def _direction(self, problem: ResidualProblem, state: NewtonKrylovState):
        """(d, slope = ∇(½‖F‖²)(z)ᵀd, GMRES broke down, Krylov iterations (B,)) at the exploring
        iterate z."""
        z, Fz = state.z, state.Fz
        if self.jvp == "finite-difference":
            product = lambda v: problem.jvp_finite_difference(z, Fz, v)
        else:
            product = problem.jvp_at(z)
        rtol = state.forcing * torch.clamp(Fz.norm(dim=-1), max=1.0) if self.scaled_forcing else state.forcing
        problem.counters.nlinsolve += 1
        if state.recycler is not None:
            d, breakdown, iterations = self._recycled_solve(state.recycler, product, Fz, float(rtol[0]))
            return d, (Fz * product(d)).sum(-1), breakdown, iterations
        operator = MatrixFreeOperator(product, (z.shape[0], Fz.shape[-1], z.shape[-1]), dtype=z.dtype, device=z.device)
        solution = gmres(operator, -Fz, rtol=rtol, restart=self.inner_restart,
                         max_iter=self.inner_max_iter, preconditioner=self.preconditioner)
        d = solution.x
        return d, (Fz * product(d)).sum(-1), solution.status == int(Status.BREAKDOWN), solution.iterations

    def _recycled_solve(self, recycler: RecyclingSolver, product: Callable[[torch.Tensor], torch.Tensor],
                        Fz: torch.Tensor, rtol: float):
        """J d = −F for the one member by GCRO-DR, the forcing term as its relative tolerance."""
        n = Fz.shape[-1]
        # the linearization takes one (1, n) vector: the k rows of a subspace re-projection go one by one
        rows = lambda V: torch.cat([product(V[i:i + 1]) for i in range(V.shape[0])])
        operator = CallableOperator(rows, n, dtype=Fz.dtype, device=Fz.device)
        recycler.rtol = rtol
        solution = recycler.solve(operator, -Fz[0], M=self.preconditioner)
        breakdown = solution.status in (Status.BREAKDOWN, Status.NONFINITE)
        long = dict(dtype=torch.long, device=Fz.device)
        return (solution.x.unsqueeze(0), torch.tensor([breakdown], device=Fz.device),
                torch.tensor([solution.nit], **long))

    def step(self, problem: ResidualProblem, state: NewtonKrylovState, running: torch.Tensor) -> NewtonKrylovState:
        d, slope, breakdown, iterations = self._direction(problem, state)
        z = state.z
        d_norm = d.norm(dim=-1)
        alpha0 = torch.clamp(state.max_step / d_norm.clamp(min=torch.finfo(z.dtype).tiny), max=1.0)

        def merit(alpha: torch.Tensor):
            F = problem.residual(z + alpha.unsqueeze(-1) * d)
            return 0.5 * (F * F).sum(-1), F

        descent = (slope < 0) & running & (d_norm > 0)
        search = armijo(merit, state.cost_z, slope, alpha0=alpha0, c1=self.c1, max_steps=self.max_backtracks,
                        active=descent, aux0=state.Fz)
        # an accepted step below the resolution of z is no progress: a failure like any other
        ok = search.success & descent & (search.alpha.unsqueeze(-1) * d + z != z).any(-1)
        ok = ok & (search.alpha >= self.min_step * alpha0)
        failed = ~ok & running
        # a failed search with a loose η is retried from z with a tight one before anything else
        retry = failed & (state.forcing > TIGHT_FORCING)
        escape = failed & ~retry & (state.escapes < self.max_escapes) & (d_norm > 0)
        alpha = search.alpha
        Fz, cost_z = search.aux, search.value
        if bool(escape.any()):
            full = torch.where(escape, alpha0, 0.0)
            cost_full, F_full = merit(full)
            escape = escape & torch.isfinite(cost_full)
            alpha = torch.where(escape, full, alpha)
            Fz = torch.where(escape.unsqueeze(-1), F_full, Fz)
            cost_z = torch.where(escape, cost_full, cost_z)
        z_new = z + alpha.unsqueeze(-1) * d
        moved = ok | escape

        improved = moved & (cost_z < state.cost)
        col = improved.unsqueeze(-1)
        x_new, F_new = torch.where(col, z_new, state.x), torch.where(col, Fz, state.F)
        cost_new = torch.where(improved, cost_z, state.cost)
        escapes = torch.where(improved, 0, state.escapes + escape.long())

        stuck = failed & ~retry & ~escape
        # stuck after a search that succeeded (at a step below resolution) is a stall
        code = torch.where(search.success, int(Status.STALLED), int(Status.LINESEARCH_FAILED))
        failure = torch.where(stuck, code, state.failure)
        failure = torch.where(stuck & search.nonfinite, int(Status.NONFINITE), failure)

        target = float(getattr(self.termination, "tol", 0.0))
        forcing = eisenstat_walker(state.forcing, Fz.norm(dim=-1), state.Fz.norm(dim=-1), maximum=self.max_forcing,
                                   target=target)
        forcing = torch.where(retry, torch.minimum(state.forcing, torch.full_like(forcing, TIGHT_FORCING)),
                              torch.where(moved, forcing, state.forcing))
        tiny = torch.finfo(z.dtype).tiny
        return replace(state, x=x_new, F=F_new, cost=cost_new, z=z_new, Fz=Fz, cost_z=cost_z,
                       step_norm=torch.where(moved, alpha * d_norm, float("inf")),
                       reduction=torch.where(improved, (state.cost - cost_new) / state.cost.clamp(min=tiny),
                                             float("inf")),
                       failure=failure, regularized=breakdown & stuck, forcing=forcing, escapes=escapes,
                       krylov_iterations=state.krylov_iterations + torch.where(running, iterations, 0))

    def terminate(self, problem: ResidualProblem, state: NewtonKrylovState):
        return self.termination(state)

    def record(self, problem: ResidualProblem, state: NewtonKrylovState) -> dict:
        return {**record(state), "krylov_iterations": state.krylov_iterations.clone()}
