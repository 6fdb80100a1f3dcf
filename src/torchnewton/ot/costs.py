"""Cost matrices for optimal transport: point clouds and regular grids (images, histograms).

All functions are batched over leading dimensions and differentiable in the point positions,
including at coincident points (the gradient of a distance there is taken as 0).
"""
from __future__ import annotations

import torch


def squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """C_ij = ‖x_i − y_j‖₂² for x (..., n, d), y (..., m, d), via ‖x‖² + ‖y‖² − 2⟨x, y⟩ (a matmul,
    no (n, m, d) temporary), clamped at 0 against rounding.

    Example:
        >>> squared_euclidean(torch.zeros(1, 2), torch.ones(1, 2))
        tensor([[2.]])
    """
    _check_points(x, y)
    inner = x @ y.transpose(-1, -2)
    sq = (x * x).sum(-1).unsqueeze(-1) + (y * y).sum(-1).unsqueeze(-2) - 2 * inner
    return sq.clamp(min=0)


def pnorm_cost(x: torch.Tensor, y: torch.Tensor, p: float = 1.0, q: float = 2.0) -> torch.Tensor:
    """C_ij = ‖x_i − y_j‖_q^p, the cost of the Wasserstein-p distance for the ℓ_q ground metric.

    ``p = 2, q = 2`` is :func:`squared_euclidean`; ``p = 1`` gives the W1 (earth mover's) cost.
    For q = 2 the distance is the square root of :func:`squared_euclidean` (no (n, m, d)
    temporary); other q form the differences explicitly.

    Example:
        >>> pnorm_cost(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), p=1)
        tensor([[5.]])
    """
    _check_points(x, y)
    if p <= 0 or q < 1:
        raise ValueError(f"pnorm_cost needs p > 0 and q >= 1, got p={p}, q={q}")
    if q == 2:
        sq = squared_euclidean(x, y)
        if p == 2:
            return sq
        positive = sq > 0
        # The where on both sides keeps the gradient finite (0) at coincident points.
        safe = torch.where(positive, sq, torch.ones_like(sq))
        return torch.where(positive, safe ** (p / 2), torch.zeros_like(sq))
    diff = (x.unsqueeze(-2) - y.unsqueeze(-3)).abs()
    positive = diff.amax(-1) > 0
    safe = torch.where(positive.unsqueeze(-1), diff, torch.ones_like(diff))
    dist = (safe ** q).sum(-1) ** (1 / q)
    return torch.where(positive, dist ** p, torch.zeros_like(dist))


def grid_points(shape: tuple[int, ...], *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Centers of a regular grid of ``shape`` (e.g. an image's (H, W)) as (prod(shape), len(shape))
    points, in row-major (``reshape(-1)``) order, scaled so the longest side spans [0, 1]."""
    if len(shape) == 0 or any(int(s) < 1 for s in shape):
        raise ValueError(f"grid shape must be a non-empty tuple of positive sizes, got {shape}")
    spacing = 1.0 / max(max(shape) - 1, 1)
    axes = [torch.arange(int(s), dtype=dtype, device=device) * spacing for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))


def grid_cost(shape: tuple[int, ...], p: float = 2.0, *, dtype: torch.dtype = torch.float64,
              device: torch.device | str | None = None) -> torch.Tensor:
    """C_ij = ‖z_i − z_j‖₂^p between the cells of a grid (:func:`grid_points`): the cost between two
    histograms or images of that shape flattened with ``reshape(-1)``.

    Example:
        >>> grid_cost((8, 8)).shape
        torch.Size([64, 64])
    """
    points = grid_points(shape, dtype=dtype, device=device)
    return pnorm_cost(points, points, p=p)


def _check_points(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch.Tensors")
    if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must be point clouds (..., n, d) and (..., m, d) with one d, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
