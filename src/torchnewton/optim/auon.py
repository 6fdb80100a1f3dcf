"""AuON and Hybrid-AuON: a cosh-RMS "brake" in place of (most of) the orthogonalization.

Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates" (2025). For the
Nesterov momentum M (m x n, N = m n entries) of a weight matrix:

    X = M / ||M||_F,      r = sqrt( (1/N) sum_ij cosh(gamma Y_ij / ||Y||_F)^2 ),      U = Y / r,
    W <- (1 - lr wd) W - lr s(m, n) U,

with Y = X for AuON (linear time: no matrix product at all) and, for Hybrid-AuON, Y the result
of ``steps`` (default one) Newton–Schulz steps with Muon's quintic (3.4445, -4.7750, 2.0315)
applied to X. Since cosh >= 1, r >= 1: the update keeps the direction of Y and its sign pattern
and is only shrunk, more when Y has heavy entries (cosh grows exponentially in them). For AuON
||U||_2 <= ||U||_F = 1 / r <= 1: a step inside the unit spectral-norm ball without an SVD.

How much the brake can act: cosh^2(gamma sqrt(t)) is convex in t = x^2, so over unit-norm
matrices the sum of cosh^2 is largest with all the mass on one entry, and

    1 <= r <= sqrt(1 + sinh(gamma)^2 / N)       (sinh(1.5)^2 = 4.53).

The brake is strong for small matrices and vanishes for large ones: for N >= 10^4 entries AuON
is Frobenius-normalized Nesterov momentum to within 2.3e-4 (relative), whatever the gradient.

Conventions, against the paper and its code (github.com/ryyzn9/AuON):
- the paper's equations normalize M and use cosh(X) (gamma = 1); its code multiplies by
  gamma = 1.5 inside the cosh (the default here) but then divides the raw momentum M, not X, by
  r, which makes the step proportional to the gradient size and contradicts the paper's stated
  scale invariance. Here the normalized X is divided, as in the paper's equations. For
  Hybrid-AuON the code's cosh argument gamma Y / ||Y||_F (Y renormalized) is kept.
- the paper adds 1e-7 to ||M||_F and 1e-8 to r; r >= 1 needs no guard, and the norm is clamped
  at the smallest normal number instead, so tiny gradients are normalized exactly (scale
  invariance) and a zero momentum gives a zero update.
- the shape factor s(m, n) is the pipeline's ``adjust_lr`` ("original": sqrt(max(1, m / n)),
  as in the paper's Muon-style setup).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from ..linalg.coefficients import MUON_QUINTIC
from ..linalg.norms import frobenius_norm
from .distributed import ProcessGroupOption
from .pipeline import MatrixOptimizer
from .spectral_filters import apply_odd_polynomials, check_dtype, frobenius_normalization
from .validate import check_positive, check_positive_int


def cosh_brake(Y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Y / r with r = sqrt(mean(cosh(gamma Y / ||Y||_F)^2)) over each matrix of a stack (..., m, n).

    Example:
        >>> Y = torch.tensor([[[0.6, 0.0], [0.0, 0.8]]])
        >>> r = ((torch.cosh(torch.tensor([0.6, 0.0, 0.0, 0.8])) ** 2).mean()).sqrt()
        >>> torch.allclose(cosh_brake(Y, 1.0), Y / r)
        True
    """
    norm = frobenius_norm(Y).clamp_min(torch.finfo(Y.dtype).tiny)
    r = torch.cosh(Y * (gamma / norm)).square().mean(dim=(-2, -1), keepdim=True).sqrt()
    return Y / r


class AuON(MatrixOptimizer):
    """AuON: Frobenius-normalized Nesterov momentum, shrunk by the cosh-RMS brake; linear time.

    Args:
        params, lr, momentum, nesterov, weight_decay, adjust_lr, per_head, adamw_*: as for
            :class:`torchnewton.optim.Muon` (``per_head`` takes the brake over each head).
        gamma: the temperature inside the cosh (1.5, as in the paper's code; 1 is its equations).

    The update has Frobenius norm 1 / r <= 1 before the shape factor, against sqrt(min(m, n))
    for Muon's orthogonal one: the same ``lr`` makes a smaller step, most so for wide layers.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> opt = AuON(model.parameters(), lr=0.08, adamw_lr=1e-3)
        >>> model(torch.randn(4, 8)).square().mean().backward(); opt.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.08, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, *, gamma: float = 1.5,
                 adjust_lr: str = "original", per_head: int = 1, adamw_lr: float = 3e-4,
                 adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_wd: float = 0.0, process_group: ProcessGroupOption = None) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         adjust_lr=adjust_lr, per_head=per_head, adamw_lr=adamw_lr,
                         adamw_betas=adamw_betas, adamw_eps=adamw_eps, adamw_wd=adamw_wd,
                         process_group=process_group, gamma=gamma)

    def _check_family(self, h: dict[str, Any]) -> None:
        check_positive("gamma", h["gamma"])

    def _transform(self, M: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        X = M / frobenius_norm(M).clamp_min(torch.finfo(M.dtype).tiny)
        return cosh_brake(X, group["gamma"])


class HybridAuON(AuON):
    """Hybrid-AuON: ``steps`` Newton–Schulz steps (Muon's quintic) on X = M / ||M||_F, then the brake.

    The paper uses one step (the default): a partial decorrelation of the update's rows for
    one Gram product, where Muon spends five. ``dtype`` is the precision of the step (default
    bfloat16 on CUDA, float32 elsewhere). Other arguments as for :class:`AuON`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> opt = HybridAuON(model.parameters(), lr=0.02, adamw_lr=1e-3)
        >>> model(torch.randn(4, 8)).square().mean().backward(); opt.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.02, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, *, gamma: float = 1.5,
                 steps: int = 1, dtype: torch.dtype | None = None, adjust_lr: str = "original",
                 per_head: int = 1, adamw_lr: float = 3e-4, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_wd: float = 0.0,
                 process_group: ProcessGroupOption = None) -> None:
        MatrixOptimizer.__init__(self, params, lr=lr, momentum=momentum, nesterov=nesterov,
                                 weight_decay=weight_decay, adjust_lr=adjust_lr, per_head=per_head,
                                 adamw_lr=adamw_lr, adamw_betas=adamw_betas, adamw_eps=adamw_eps,
                                 adamw_wd=adamw_wd, process_group=process_group, gamma=gamma,
                                 steps=steps, dtype=dtype)

    def _check_family(self, h: dict[str, Any]) -> None:
        super()._check_family(h)
        check_positive_int("steps", h["steps"])
        check_dtype(h["dtype"])

    def _transform(self, M: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        Y = apply_odd_polynomials(M, (MUON_QUINTIC,) * group["steps"], frobenius_normalization(1.0),
                                  group["dtype"])
        return cosh_brake(Y, group["gamma"])

