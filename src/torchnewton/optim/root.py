"""ROOT: orthogonalization designed per matrix shape, after proximal outlier suppression.

He, Han, Zhou, Chen, Liu, Chen, Wang, "ROOT: Robust Orthogonalized Optimizer for Neural Network
Training" (2025). Two changes to Muon, for the Nesterov momentum M of an m x n weight:

1. Outlier suppression. The proximal step min_O ||M - O||_F^2 / 2 + eps ||O||_1 separates the
   outliers O = T_eps(M) (soft-thresholding, T_eps(x) = sign(x) max(|x| - eps, 0)) from the
   base B = M - O, which is M clipped entrywise to [-eps, eps]; only B is orthogonalized. eps
   is the ``outlier_quantile`` quantile of |M| over the matrix (0.9 as in the authors' code:
   the largest 10% of the entries are outliers), taken as an order statistic of |M|
   (interpolation "lower"), so it is an entry of |M| and B is exact.
2. Dimension-robust orthogonalization. Fixed Newton–Schulz coefficients are tuned for no shape
   in particular, and square matrices come out worst (their smallest singular values lie near
   0). ROOT fits coefficients for each matrix shape offline; here they are designed per shape by
   the Polar Express minimax designer, for the interval where the Frobenius-normalized singular
   values of a random (noise-dominated) m x n momentum lie: from 1 down to the lower edge

       l(m, n) = (sqrt(n) - sqrt(m - 1)) / sqrt(m n),     m <= n,

   the smallest singular value of an m x n Gaussian matrix (sqrt(n) - sqrt(m - 1), Rudelson &
   Vershynin 2009, Marchenko–Pastur's lower edge when m << n and ~1 / (2 sqrt(n)) when square)
   over its Frobenius norm sqrt(m n). One design per distinct (m, n), cached
   (``shape_coefficients``); the authors' code uses one quintic for all five steps, the
   per-step minimax polynomials are the optimal composition on the same interval.

    W <- (1 - lr wd) W - lr s(m, n) PolarExpress_{l(m, n)}(clip(M, eps)),

s from ``adjust_lr`` ("match_rms_adamw", 0.2 sqrt(max(m, n)), as in the authors' code).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Iterable

import torch

from ..linalg.coefficients import PAPER_CUSHION, polar_express_coefficients
from ..linalg.methods import POLAR_EXPRESS_SAFETY
from .distributed import ProcessGroupOption
from .pipeline import MatrixOptimizer
from .spectral_filters import apply_odd_polynomials, check_dtype, frobenius_normalization
from .validate import check_positive_int


def random_matrix_lower_edge(rows: int, cols: int) -> float:
    """(sqrt(n) - sqrt(m - 1)) / sqrt(m n) with m = min, n = max: the smallest singular value of
    a Gaussian rows x cols matrix over its Frobenius norm.

    Example:
        >>> round(random_matrix_lower_edge(64, 256), 4)
        0.063
    """
    m, n = min(rows, cols), max(rows, cols)
    return (math.sqrt(n) - math.sqrt(m - 1)) / math.sqrt(m * n)


@lru_cache(maxsize=256)
def shape_coefficients(rows: int, cols: int, steps: int) -> tuple[tuple[float, ...], ...]:
    """Polar Express quintics for the normalized singular values of a rows x cols momentum.

    Designed on [l(rows, cols), 1] (``random_matrix_lower_edge``) for the input
    M / (1.01 ||M||_F), with the paper's cushion and safety factor. Cached per shape.

    Example:
        >>> shape_coefficients(64, 256, 5) != shape_coefficients(128, 128, 5)
        True
    """
    lower = random_matrix_lower_edge(rows, cols) / POLAR_EXPRESS_SAFETY
    return polar_express_coefficients(5, steps, lower, POLAR_EXPRESS_SAFETY, PAPER_CUSHION)


def clip_outliers(M: torch.Tensor, quantile: float) -> torch.Tensor:
    """M - T_eps(M) = clip(M, -eps, eps) for each matrix of a stack (..., m, n), eps the
    ``quantile`` order statistic of its |entries| (rank floor(quantile (N - 1)) + 1 of N).

    Example:
        >>> M = torch.tensor([[[1.0, -2.0], [3.0, -10.0]]])
        >>> clip_outliers(M, 0.5)
        tensor([[[ 1., -2.],
                 [ 2., -2.]]])
    """
    flat = M.abs().flatten(-2)
    rank = math.floor(quantile * (flat.shape[-1] - 1)) + 1
    eps = flat.kthvalue(rank, dim=-1, keepdim=True).values.unsqueeze(-1)
    return torch.clamp(M, -eps, eps)


class ROOT(MatrixOptimizer):
    """ROOT: Muon on the outlier-clipped momentum, with coefficients designed for each shape.

    Args:
        params, lr, momentum, nesterov, weight_decay, adjust_lr, per_head, adamw_*: as for
            :class:`torchnewton.optim.Muon` (defaults lr 1e-3 and "match_rms_adamw" as in the paper).
        outlier_quantile: entries of |M| above this quantile of the matrix are outliers and are
            clipped to it, in (0, 1]; 1 clips nothing.
        steps: Polar Express steps. dtype: precision of the iteration (default bfloat16 on CUDA,
            float32 elsewhere).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> opt = ROOT(model.parameters(), lr=1e-3, adamw_lr=1e-3)
        >>> model(torch.randn(4, 8)).square().mean().backward(); opt.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, *, outlier_quantile: float = 0.9,
                 steps: int = 5, dtype: torch.dtype | None = None, adjust_lr: str = "match_rms_adamw",
                 per_head: int = 1, adamw_lr: float = 3e-4, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_wd: float = 0.0,
                 process_group: ProcessGroupOption = None) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         adjust_lr=adjust_lr, per_head=per_head, adamw_lr=adamw_lr,
                         adamw_betas=adamw_betas, adamw_eps=adamw_eps, adamw_wd=adamw_wd,
                         process_group=process_group, outlier_quantile=outlier_quantile, steps=steps,
                         dtype=dtype)

    def _check_family(self, h: dict[str, Any]) -> None:
        q = h["outlier_quantile"]
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q <= 1.0:
            raise ValueError(f"outlier_quantile must be a number in (0, 1], got {q!r}")
        check_positive_int("steps", h["steps"])
        check_dtype(h["dtype"])

    def _prepare(self, M: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        return clip_outliers(M, group["outlier_quantile"])

    def _transform(self, M: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        schedule = shape_coefficients(M.shape[-2], M.shape[-1], group["steps"])
        return apply_odd_polynomials(M, schedule, frobenius_normalization(POLAR_EXPRESS_SAFETY), group["dtype"])
