"""The trainable parameters of a module, and the map between their list and one flat vector.

A curvature matrix of a network acts on the space of its trainable parameters θ = (θ₁, …, θ_p),
each shaped like its ``nn.Parameter``. Linear algebra wants one flat vector in ℝⁿ,
n = Σ numel(θᵢ); the user wants tensors shaped like the parameters. ``flatten`` and
``unflatten`` convert between the two in the order of ``model.named_parameters()``; parameters
with ``requires_grad=False`` are not part of the space.

Example:
    >>> model = torch.nn.Linear(3, 2)
    >>> names, params = trainable_parameters(model)
    >>> v = flatten([torch.ones_like(p) for p in params])   # shape (8,)
    >>> [t.shape for t in unflatten(v, params)]
    [torch.Size([2, 3]), torch.Size([2])]
"""
from __future__ import annotations

from typing import Sequence

import torch


def trainable_parameters(model: torch.nn.Module) -> tuple[list[str], list[torch.nn.Parameter]]:
    """Names and tensors of the parameters of ``model`` with ``requires_grad=True``.

    Raises ``ValueError`` if there are none, or if they mix dtypes or devices (one flat vector
    must hold them all).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"model ({type(model).__name__}) has no parameters with requires_grad=True; "
                         "a curvature matrix needs at least one trainable parameter")
    names, params = [n for n, _ in named], [p for _, p in named]
    if not all(p.is_floating_point() and not p.is_complex() for p in params):
        raise TypeError("the trainable parameters of model must have a real floating dtype")
    dtypes, devices = {p.dtype for p in params}, {p.device for p in params}
    if len(dtypes) > 1:
        raise ValueError(f"the trainable parameters of model mix dtypes {sorted(map(str, dtypes))}; "
                         "convert the model to one dtype")
    if len(devices) > 1:
        raise ValueError(f"the trainable parameters of model lie on several devices {sorted(map(str, devices))}")
    return names, params


def flatten(tensors: Sequence[torch.Tensor], *, batch_dims: int = 0) -> torch.Tensor:
    """Concatenate tensors into one vector (n,), or (B, n) with ``batch_dims=1``."""
    if batch_dims == 0:
        return torch.cat([t.reshape(-1) for t in tensors])
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a vector (n,) into views shaped like ``like``; a (B, n) block gives (B, *shape) views."""
    sizes = [t.numel() for t in like]
    n = sum(sizes)
    if vector.shape[-1] != n or vector.dim() not in (1, 2):
        raise ValueError(f"vector must have shape ({n},) or (B, {n}) to match the parameters, "
                         f"got {tuple(vector.shape)}")
    lead = tuple(vector.shape[:-1])
    return [chunk.reshape(*lead, *t.shape) for chunk, t in zip(vector.split(sizes, dim=-1), like)]
