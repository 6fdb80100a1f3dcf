"""The iterate of a residual method (root finding or least squares), shared by its termination rules."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ResidualState:
    """All tensor fields are batched along dim 0.

    ``grad`` is Jᵀ F at x (zeros for methods that never form it), ``step_norm`` and ``reduction``
    (relative decrease of ½‖F‖² by the last accepted step) feed the scipy-style tests, ``failure``
    holds a Status code (0 while the method can go on), ``regularized`` marks members whose last
    Newton system was singular and solved with regularization. ``scale`` (B, n) is the variable
    scaling D of the step test ‖D Δx‖ ≤ xtol (xtol + ‖D x‖) (ones unless the method scales, as
    Levenberg–Marquardt does), so a parameter of size 1e-11 beside one of size 1e5 still counts.
    """

    x: torch.Tensor
    F: torch.Tensor
    cost: torch.Tensor
    grad: torch.Tensor
    step_norm: torch.Tensor
    reduction: torch.Tensor
    failure: torch.Tensor
    regularized: torch.Tensor
    scale: torch.Tensor


def initial_state(x: torch.Tensor, F: torch.Tensor, grad: torch.Tensor | None = None) -> dict:
    """Field values of a fresh ResidualState (as a dict, so subclasses add their own fields)."""
    batch = x.shape[0]
    inf = torch.full((batch,), float("inf"), dtype=x.dtype, device=x.device)
    return dict(x=x, F=F, cost=0.5 * (F * F).sum(-1), grad=torch.zeros_like(x) if grad is None else grad,
                step_norm=inf, reduction=inf.clone(),
                failure=torch.zeros(batch, dtype=torch.long, device=x.device),
                regularized=torch.zeros(batch, dtype=torch.bool, device=x.device), scale=torch.ones_like(x))


def record(state: ResidualState) -> dict:
    """History entry: per-member residual norm and cost (detached copies)."""
    return {"residual_norm": state.F.norm(dim=-1).detach().clone(), "cost": state.cost.detach().clone(),
            "step_norm": state.step_norm.detach().clone()}
