"""How a parameter becomes the matrices a transform acts on, and how same-shaped ones are batched.

A parameter with ndim > 2 (a conv kernel (out, in, kh, kw)) is viewed as the (out, in·kh·kw)
matrix that maps a flattened receptive field to an output channel. With ``per_head = k`` its k
row blocks (attention heads stacked along the rows of a projection) are separate matrices: the
view is (k, rows / k, cols). Transforms run on (batch, m, n) stacks, so matrices of one shape
share one batched call of the linalg iteration (one kernel launch per product, not per matrix).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch

BatchedTransform = Callable[[torch.Tensor], torch.Tensor]


def matrix_view(tensor: torch.Tensor, per_head: int) -> torch.Tensor:
    """``tensor`` as a (per_head, rows / per_head, cols) stack of matrices (a view when possible)."""
    rows = tensor.shape[0]
    return tensor.reshape(per_head, rows // per_head, -1)


def check_matrix_parameter(param: torch.Tensor, per_head: int) -> None:
    if param.ndim < 2:
        raise ValueError(f"a matrix-optimizer group holds parameters with ndim >= 2, got shape "
                         f"{tuple(param.shape)}; put it in a group with use_muon=False")
    if param.shape[0] % per_head:
        raise ValueError(f"per_head={per_head} must divide the rows of every matrix; a parameter "
                         f"has shape {tuple(param.shape)}")


def transform_by_shape(matrices: list[torch.Tensor], transform: BatchedTransform) -> list[torch.Tensor]:
    """Apply ``transform`` to every (k, m, n) stack in ``matrices``, one call per distinct (m, n).

    Example:
        >>> out = transform_by_shape([torch.ones(1, 2, 3), torch.ones(2, 2, 3)], lambda X: 2 * X)
        >>> [tuple(o.shape) for o in out]
        [(1, 2, 3), (2, 2, 3)]
    """
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, M in enumerate(matrices):
        buckets[tuple(M.shape[-2:])].append(i)
    out: list[torch.Tensor | None] = [None] * len(matrices)
    for indices in buckets.values():
        stack = torch.cat([matrices[i] for i in indices]) if len(indices) > 1 else matrices[indices[0]]
        result = transform(stack)
        sizes = [matrices[i].shape[0] for i in indices]
        for i, part in zip(indices, result.split(sizes)):
            out[i] = part
    return out  # type: ignore[return-value]
