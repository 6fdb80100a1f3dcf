"""SKR ordering: solve similar systems one after another so that a recycled subspace stays useful.

Wang et al., "Accelerating Data Generation for Neural Operators via Krylov Subspace Recycling"
(ICLR 2024) sort the systems greedily: start from one system and repeatedly append the unsorted
system nearest (in a feature or parameter distance) to the last one appended — a nearest-
neighbour path through feature space.

Example:
    >>> skr_order(torch.tensor([[0.0], [5.0], [1.0], [4.0]]))
    [0, 2, 3, 1]
"""
from __future__ import annotations

import torch


def skr_order(features: torch.Tensor, *, start: int = 0) -> list[int]:
    """Greedy nearest-neighbour order of the rows of ``features`` (N, d) (Euclidean distance),
    starting at row ``start``. O(N²d) time for the distance matrix, O(N²) for the path."""
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a tensor (N, d) with N >= 1, got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}")
    count = features.shape[0]
    if not 0 <= start < count:
        raise ValueError(f"start must be in [0, {count}), got {start}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features must be finite")
    distance = torch.cdist(features.double(), features.double())
    visited = torch.zeros(count, dtype=torch.bool)
    order = [start]
    visited[start] = True
    for _ in range(count - 1):
        row = distance[order[-1]].masked_fill(visited, float("inf"))
        nearest = int(torch.argmin(row))
        order.append(nearest)
        visited[nearest] = True
    return order
