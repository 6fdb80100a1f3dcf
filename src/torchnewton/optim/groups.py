"""Which parameters of a model a matrix optimizer should orthogonalize.

Muon is for the hidden weight matrices. Embeddings (a lookup table: each row is updated by the
tokens that use it, there is no input space to be orthogonal in), the output head (its rows are
class logits, better scaled per row) and every parameter with ndim < 2 (norm gains, biases) are
left to AdamW; Jordan et al. and Liu et al. (2025) both recommend this split.
"""
from __future__ import annotations

from typing import Any

import torch


def param_groups(model: torch.nn.Module, *, output_head: torch.nn.Module | str | None = "auto",
                 **matrix_options: Any) -> list[dict[str, Any]]:
    """Two param groups for a matrix optimizer: hidden matrices (``use_muon=True``) and the rest.

    ``output_head``: the module (or its qualified name) whose weight goes to AdamW; "auto" takes
    the last ``nn.Linear`` registered in ``model`` (the usual position of a classifier or
    language-model head) when some other matrix (a hidden Linear, a convolution kernel) is left
    for the matrix optimizer — a model whose only matrix is that Linear keeps it there — None
    sends no Linear to AdamW. Parameters tied to an embedding (weight
    sharing) are placed once, in the AdamW group. ``matrix_options`` are added to the matrix
    group (for example ``per_head=8``). Parameters with ``requires_grad=False`` are left out.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 10))
        >>> groups = param_groups(model)
        >>> [len(g["params"]) for g in groups]
        [1, 4]
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    head = _output_head(model, output_head)
    to_adamw: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) or module is head:
            to_adamw.update(id(p) for p in module.parameters(recurse=False))
    matrices, others, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (matrices if p.ndim >= 2 and id(p) not in to_adamw else others).append(p)
    if not matrices and not others:
        raise ValueError("model has no trainable parameters")
    groups = []
    if matrices:
        groups.append({"params": matrices, "use_muon": True, **matrix_options})
    if others:
        groups.append({"params": others, "use_muon": False})
    return groups


def _output_head(model: torch.nn.Module, output_head: torch.nn.Module | str | None) -> torch.nn.Module | None:
    if output_head is None or isinstance(output_head, torch.nn.Module):
        return output_head
    if output_head == "auto":
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            return None
        head = {id(p) for p in linears[-1].parameters(recurse=False)}
        embedded = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
        hidden = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2 and id(p) not in head | embedded]
        return linears[-1] if hidden else None
    if isinstance(output_head, str):
        return model.get_submodule(output_head)
    raise TypeError(f"output_head must be a module, a submodule name, 'auto' or None, got {output_head!r}")
