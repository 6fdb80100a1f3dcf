"""Muon: momentum orthogonalized by a matrix Newton iteration.

Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024); Liu et al.,
"Muon is Scalable for LLM Training" (2025). For a weight matrix W with gradient G:

    B <- beta B + (1 - beta) G,      M = (1 - beta) G + beta B  (Nesterov) or B,
    O = polar(M) ≈ U V^T             (M = U S V^T; a fixed number of odd-polynomial steps),
    W <- (1 - lr wd) W - lr s(rows, cols) O,

the steepest-descent step under the spectral norm. The polar factor comes from
``torchnewton.linalg.orthogonalize``: Polar Express (minimax-optimal quintics, Amsel et al. 2025)
by default, Muon's fixed quintic, classical Newton–Schulz or AOL-preconditioned Polar Express.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from ..linalg import orthogonalize
from ..linalg.polar import POLAR_METHODS
from .pipeline import MatrixOptimizer
from .validate import check_choice, check_positive_int


class Muon(MatrixOptimizer):
    """Muon for the hidden matrices of a model, AdamW for the rest, in one optimizer.

    Args:
        params: parameters or param groups. Groups without ``use_muon`` are split by ndim (see
            :func:`torchnewton.optim.param_groups` for a split that also sends embeddings and
            output heads to AdamW).
        lr: learning rate of the matrix groups. momentum: EMA coefficient. nesterov: look-ahead.
        weight_decay: decoupled, applied as W <- (1 - lr wd) W.
        method, steps: the polar iteration (``torchnewton.linalg.POLAR_METHODS``) and its step
            count (default: the method's fixed-cost default, 5 for Polar Express).
        dtype: precision of the iteration; default bfloat16 on CUDA, float32 on CPU.
        adjust_lr: "original", "match_rms_adamw" or "spectral" (see ``optim.scaling``).
        per_head: orthogonalize each of k row blocks separately (attention heads).
        adamw_lr, adamw_betas, adamw_eps, adamw_wd: the AdamW groups' hyperparameters.
        process_group: None (one process), "auto" (the default group when torch.distributed is
            initialized) or a ProcessGroup: ranks share the transforms (``optim.distributed``).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> opt = Muon(model.parameters(), lr=0.02, adamw_lr=1e-3)
        >>> model(torch.randn(4, 8)).square().mean().backward(); opt.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.02, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, *, method: str = "polar-express",
                 steps: int | None = None, dtype: torch.dtype | None = None,
                 adjust_lr: str = "original", per_head: int = 1, adamw_lr: float = 3e-4,
                 adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_wd: float = 0.0, process_group: Any = None) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         adjust_lr=adjust_lr, per_head=per_head, adamw_lr=adamw_lr,
                         adamw_betas=adamw_betas, adamw_eps=adamw_eps, adamw_wd=adamw_wd,
                         process_group=process_group, method=method, steps=steps, dtype=dtype)

    def _check_family(self, h: dict[str, Any]) -> None:
        check_choice("method", h["method"], POLAR_METHODS)
        if h["steps"] is not None:
            check_positive_int("steps", h["steps"])
        if h["dtype"] is not None and not (isinstance(h["dtype"], torch.dtype) and h["dtype"].is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype or None, got {h['dtype']!r}")

    def _transform(self, M: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        return orthogonalize(M, method=group["method"], steps=group["steps"], dtype=group["dtype"],
                             check_finite=False)
