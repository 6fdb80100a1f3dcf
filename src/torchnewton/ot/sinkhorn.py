"""Log-domain Sinkhorn and its ε-scaling variant, as iteration methods for the shared loop.

Sinkhorn alternately maximizes the dual ψ(f, g) = ⟨f, a⟩ + ⟨g, b⟩ − ε Σ exp((f_i + g_j − C_ij)/ε)
over f and over g (see :mod:`torchnewton.ot.dual`). In the log domain each half step is a
log-sum-exp, so it stays finite at any ε (Schmitzer 2019, "Stabilized sparse scaling algorithms
for entropy regularized transport problems", SIAM J. Sci. Comput.). Its convergence is linear with
a rate that degrades like exp(−c/ε) as ε → 0, which is what ε-scaling (start with a large ε and
shrink it geometrically, warm starting each stage) and the sparse Newton method address.

Example:
    >>> from torchnewton.ot import sinkhorn
    >>> a = b = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    >>> C = torch.rand(1, 3, 3, dtype=torch.float64)
    >>> sinkhorn(a, b, C, 0.1, method="sinkhorn").success  # doctest: +SKIP
    tensor([True])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.status import Status
from . import dual
from .problem import TransportProblem


@dataclass
class SinkhornState:
    """f (B, n), g (B, m); ``row_lse`` = row log-sum-exp of g at the current ε (cached so an
    iteration costs two passes over C); ``error`` = ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ at (f, g, ε);
    ``eps`` (B,) the current regularization; ``stage_iters`` iterations spent at this ε."""

    f: torch.Tensor
    g: torch.Tensor
    row_lse: torch.Tensor
    error: torch.Tensor
    eps: torch.Tensor
    stage_iters: torch.Tensor


def _finished(problem: TransportProblem, state: SinkhornState, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    nonfinite = ~torch.isfinite(state.error)
    converged = (state.error <= tol) & (state.eps <= problem.reg)
    status = torch.where(nonfinite, torch.full_like(state.stage_iters, int(Status.NONFINITE)),
                         torch.full_like(state.stage_iters, int(Status.SUCCESS)))
    return converged | nonfinite, status


class LogSinkhorn:
    """Log-domain Sinkhorn at fixed ε = reg; stops when the marginal error is at most ``tol``.

    One iteration updates f then g (two log-sum-exp passes over C, like POT's ``sinkhorn_log``);
    afterwards Pᵀ1 = b holds exactly and the error is the row marginal's.
    """

    def __init__(self, tol: float):
        self.tol = tol

    def initial_eps(self, problem: TransportProblem) -> torch.Tensor:
        return problem.reg

    def init(self, problem: TransportProblem, x0: torch.Tensor) -> SinkhornState:
        """``x0`` is the initial g (B, m); f starts at 0."""
        eps = self.initial_eps(problem)
        f = torch.zeros_like(problem.a)
        return self._restart(problem, f, x0, eps, torch.zeros_like(eps, dtype=torch.long))

    @staticmethod
    def _restart(problem: TransportProblem, f: torch.Tensor, g: torch.Tensor, eps: torch.Tensor,
                 stage_iters: torch.Tensor) -> SinkhornState:
        """State at (f, g, eps) with a freshly computed row cache and full marginal error."""
        row_lse = dual.row_logsumexp(problem, g, eps)
        rows = torch.exp(f / eps.unsqueeze(-1) + row_lse)
        cols = torch.exp(g / eps.unsqueeze(-1) + dual.col_logsumexp(problem, f, eps))
        return SinkhornState(f=f, g=g, row_lse=row_lse, error=dual.marginal_error(problem, rows, cols),
                             eps=eps, stage_iters=stage_iters)

    def step(self, problem: TransportProblem, state: SinkhornState, running: torch.Tensor) -> SinkhornState:
        eps = state.eps
        f = dual.update_f(problem, state.row_lse, eps)
        g = dual.update_g(problem, dual.col_logsumexp(problem, f, eps), eps)
        row_lse = dual.row_logsumexp(problem, g, eps)
        return SinkhornState(f=f, g=g, row_lse=row_lse, error=dual.row_error(problem, f, row_lse, eps),
                             eps=eps, stage_iters=state.stage_iters + 1)

    def terminate(self, problem: TransportProblem, state: SinkhornState) -> tuple[torch.Tensor, torch.Tensor]:
        return _finished(problem, state, self.tol)

    def record(self, problem: TransportProblem, state: SinkhornState) -> dict[str, torch.Tensor]:
        return {"marginal_error": state.error.clone(), "reg": state.eps.clone(),
                "newton": torch.zeros_like(state.error, dtype=torch.bool)}


class EpsilonScalingSinkhorn(LogSinkhorn):
    """Log-domain Sinkhorn on a decreasing schedule ε_k = max(reg, ε₀ q^k).

    ε₀ defaults to the range of C (max − min) per member, where Sinkhorn converges in a few
    iterations. A stage ends when the marginal error is below ``stage_tol``·mass or after
    ``stage_max_iter`` iterations; the potentials (in cost units) carry over to the next ε.
    The method stops only at ε = reg with the error at most ``tol``.
    """

    def __init__(self, tol: float, *, decay: float = 0.5, stage_tol: float = 1e-3, stage_max_iter: int = 50,
                 eps0: float | None = None):
        super().__init__(tol)
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay, self.stage_tol, self.stage_max_iter, self.eps0 = decay, stage_tol, stage_max_iter, eps0

    def initial_eps(self, problem: TransportProblem) -> torch.Tensor:
        if self.eps0 is not None:
            start = torch.full_like(problem.reg, self.eps0)
        else:
            start = problem.C.amax(dim=(-1, -2)) - problem.C.amin(dim=(-1, -2))
        return torch.maximum(start, problem.reg)

    def step(self, problem: TransportProblem, state: SinkhornState, running: torch.Tensor) -> SinkhornState:
        state = super().step(problem, state, running)
        advance = (state.eps > problem.reg) & ((state.error <= self.stage_tol * problem.mass)
                                               | (state.stage_iters >= self.stage_max_iter))
        if not bool(advance.any()):
            return state
        eps = torch.where(advance, torch.maximum(state.eps * self.decay, problem.reg), state.eps)
        restarted = self._restart(problem, state.f, state.g, eps, torch.zeros_like(state.stage_iters))
        keep = ~advance
        return SinkhornState(
            f=state.f, g=state.g, eps=eps,
            row_lse=torch.where(keep.unsqueeze(-1), state.row_lse, restarted.row_lse),
            error=torch.where(keep, state.error, restarted.error),
            stage_iters=torch.where(keep, state.stage_iters, restarted.stage_iters))
