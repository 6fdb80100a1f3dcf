"""The concave dual of entropic OT and its Sinkhorn (block coordinate ascent) steps.

With potentials f (B, n), g (B, m) and ε = reg, the plan is P_ij = exp((f_i + g_j − C_ij)/ε) and
the dual objective

    ψ(f, g) = ⟨f, a⟩ + ⟨g, b⟩ − ε Σ_ij P_ij

is concave, with gradient (a − P1, b − Pᵀ1) and Hessian −(1/ε)[[diag(P1), P], [Pᵀ, diag(Pᵀ1)]].
Maximizing ψ over f for fixed g (and vice versa) is one half of a Sinkhorn iteration, done here in
the log domain (log-sum-exp), which stays finite for any ε > 0. Every function takes ε as a (B,)
tensor so that ε-scaling can run a different ε per member of the batch.
"""
from __future__ import annotations

import torch

from .problem import TransportProblem


def _eps3(eps: torch.Tensor) -> torch.Tensor:
    return eps.view(-1, 1, 1)


def log_plan(problem: TransportProblem, f: torch.Tensor, g: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log P_ij = (f_i + g_j − C_ij)/ε, shape (B, n, m); −inf on zero-mass rows and columns."""
    return (f.unsqueeze(-1) + g.unsqueeze(-2) - problem.C) / _eps3(eps)


def row_logsumexp(problem: TransportProblem, g: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log Σ_j exp((g_j − C_ij)/ε), shape (B, n): the row sums of P are exp(f/ε + this)."""
    return torch.logsumexp((g.unsqueeze(-2) - problem.C) / _eps3(eps), dim=-1)


def col_logsumexp(problem: TransportProblem, f: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log Σ_i exp((f_i − C_ij)/ε), shape (B, m): the column sums of P are exp(g/ε + this)."""
    return torch.logsumexp((f.unsqueeze(-1) - problem.C) / _eps3(eps), dim=-2)


def update_f(problem: TransportProblem, row_lse: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The f maximizing ψ for fixed g: f = ε(log a − log Σ_j exp((g_j − C_ij)/ε)), so P1 = a."""
    return eps.unsqueeze(-1) * (problem.log_a - row_lse)


def update_g(problem: TransportProblem, col_lse: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The g maximizing ψ for fixed f, so that Pᵀ1 = b."""
    return eps.unsqueeze(-1) * (problem.log_b - col_lse)


def row_error(problem: TransportProblem, f: torch.Tensor, row_lse: torch.Tensor,
              eps: torch.Tensor) -> torch.Tensor:
    """‖P1 − a‖₁ (B,) from f and the row log-sum-exp of the current g (zero-mass rows give 0)."""
    rows = torch.exp(f / eps.unsqueeze(-1) + row_lse)
    return (rows - problem.a).abs().sum(-1)


def sinkhorn_sweep(problem: TransportProblem, g: torch.Tensor,
                   eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One full Sinkhorn iteration from g: (f, g, ‖P1 − a‖₁) with Pᵀ1 = b exact after it.

    Three log-sum-exp passes: two for the updates, one for the row marginal error.
    """
    f = update_f(problem, row_logsumexp(problem, g, eps), eps)
    g = update_g(problem, col_logsumexp(problem, f, eps), eps)
    return f, g, row_error(problem, f, row_logsumexp(problem, g, eps), eps)


def marginal_error(problem: TransportProblem, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ per member, the stopping quantity of every method (absolute)."""
    return (rows - problem.a).abs().sum(-1) + (cols - problem.b).abs().sum(-1)


def weighted_sum(potential: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """⟨potential, mass⟩ with zero-mass entries contributing 0 even where the potential is −inf."""
    return torch.where(mass > 0, potential * mass, torch.zeros_like(mass)).sum(-1)
