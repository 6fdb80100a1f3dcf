"""The iterate every monotone-inclusion method shares, and when such a solve stops.

Tensors carry a batch dimension of one (the shared loop's convention); ``calls`` counts the
single-component oracle calls spent so far, so the oracle budget is a stopping rule.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...core.status import Status
from .operator import OracleCounter


@dataclass
class MonotoneState:
    """``x`` (1, d) the point whose residual is measured, ``fun`` = F(x), ``residual`` (1,) the
    norm of the natural residual x − J_G(x − F(x)); the best point so far and F there; ``calls`` (1,)."""

    x: torch.Tensor
    fun: torch.Tensor
    residual: torch.Tensor
    best_x: torch.Tensor
    best_fun: torch.Tensor
    best_residual: torch.Tensor
    calls: torch.Tensor


def measured(oracle: OracleCounter, x: torch.Tensor, Fx: torch.Tensor) -> dict:
    """The fields of a fresh state at x with F(x) = Fx."""
    size = oracle.residual(x, Fx).norm(dim=-1)
    return dict(x=x, fun=Fx, residual=size, best_x=x, best_fun=Fx, best_residual=size, calls=_calls(oracle, x))


def moved(oracle: OracleCounter, state: MonotoneState, x: torch.Tensor, Fx: torch.Tensor, **fields) -> MonotoneState:
    """``state`` after reaching x with F(x) = Fx: its residual, the best point, the call count."""
    size = oracle.residual(x, Fx).norm(dim=-1)
    better = size < state.best_residual  # False for NaN
    column = better.unsqueeze(-1)
    return replace(state, x=x, fun=Fx, residual=size,
                   best_x=torch.where(column, x, state.best_x), best_fun=torch.where(column, Fx, state.best_fun),
                   best_residual=torch.where(better, size, state.best_residual),
                   calls=_calls(oracle, x), **fields)


def _calls(oracle: OracleCounter, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), oracle.calls, dtype=torch.long, device=x.device)


@dataclass
class MonotoneTermination:
    """Success when the best residual ≤ ``tol``; ``NONFINITE`` on NaN/Inf; ``MAX_ITER`` once the
    oracle budget ``max_oracle_calls`` is spent (the loop's own ``MAX_ITER`` covers ``max_iter``)."""

    tol: float
    max_oracle_calls: int

    def __call__(self, state: MonotoneState) -> tuple[torch.Tensor, torch.Tensor]:
        success = state.best_residual <= self.tol
        nonfinite = ~torch.isfinite(state.residual) & ~success
        spent = (state.calls >= self.max_oracle_calls) & ~success & ~nonfinite
        status = torch.where(nonfinite, int(Status.NONFINITE),
                             torch.where(spent, int(Status.MAX_ITER), int(Status.SUCCESS)))
        return success | nonfinite | spent, status


def record(state: MonotoneState) -> dict:
    return {"residual_norm": state.residual.clone(), "best_residual": state.best_residual.clone(),
            "oracle_calls": state.calls.clone()}
