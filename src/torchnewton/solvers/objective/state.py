"""The iterate of a minimization method, shared by its termination rule and history."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ObjectiveState:
    """All tensor fields are batched along dim 0.

    ``f`` and ``g`` are the objective and its gradient at ``x``; ``step_norm`` is the length of
    the last accepted step; ``failure`` holds a Status code (0 while the method can go on);
    ``f_initial`` is f(x₀), which bounds the scale of the relative gradient test.
    Methods subclass this with their own fields (trust radius, quasi-Newton memory, ...).
    """

    x: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    step_norm: torch.Tensor
    failure: torch.Tensor
    f_initial: torch.Tensor


def initial_fields(x: torch.Tensor, f: torch.Tensor, g: torch.Tensor) -> dict:
    """Field values of a fresh ObjectiveState (a dict, so subclasses add their own fields)."""
    batch = x.shape[0]
    return dict(x=x, f=f, g=g, step_norm=torch.full((batch,), float("inf"), dtype=x.dtype, device=x.device),
                failure=torch.zeros(batch, dtype=torch.long, device=x.device), f_initial=f)


def record(state: ObjectiveState) -> dict:
    """History entry: per-member objective, gradient ∞-norm and step length (detached copies)."""
    return {"fun": state.f.detach().clone(), "grad_norm": state.g.abs().amax(-1).detach().clone(),
            "step_norm": state.step_norm.detach().clone()}

