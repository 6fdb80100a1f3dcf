"""The iterate of a minimization method, shared by its termination rule and history."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

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


S = TypeVar("S")


def evolve(state: S, **changes) -> S:
    """``dataclasses.replace(state, **changes)`` for the iterate dataclasses (plain fields, no
    ``__post_init__``): a shallow copy with the changed fields set, without running ``__init__``
    over every field again, which on a small solve costs as much as a torch call per iteration.

    Example:
        >>> t = torch.zeros(1)
        >>> evolve(ObjectiveState(t, t, t, t, t, t), f=torch.ones(1)).f
        tensor([1.])
    """
    fields = state.__dict__
    if not changes.keys() <= fields.keys():
        raise TypeError(f"{type(state).__name__} has no field {sorted(changes.keys() - fields.keys())}")
    new = object.__new__(type(state))
    new.__dict__.update(fields)
    new.__dict__.update(changes)
    return new
