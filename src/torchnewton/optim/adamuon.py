"""AdaMuon and NorMuon: an Adam-style second moment of the orthogonalized update.

Muon's update O = polar(M) has all singular values 1 but unequal entries; both methods keep an
exponential average of O ⊙ O and divide by its square root, then rescale the result to the
update size of AdamW:

- AdaMuon (Si, Zhang, Shen, "AdaMuon: Adaptive Muon Optimizer", 2025), elementwise, on the
  orthogonalized sign of the momentum (sign-stabilized: entries +-1 before the iteration):

      O = polar(sign(M)),   V <- beta2 V + (1 - beta2) O ⊙ O,   O_hat = O / (sqrt(V) + eps);

  beta2 defaults to the momentum coefficient and eps to 1e-8, as in the paper's Algorithm 1.
- NorMuon (Li, Liu, Liang, Chen, Zhao, "NorMuon: Making Muon more efficient and scalable", 2025),
  per row (per output neuron; an m-vector instead of an m x n buffer):

      O = polar(M),   v <- beta2 v + (1 - beta2) mean_cols(O ⊙ O),   O_hat = O / (sqrt(v) + eps),

  beta2 = 0.95 and eps = 1e-10 by default, as in the paper.

RMS alignment (both papers): W <- (1 - lr wd) W - lr 0.2 sqrt(m n) O_hat / ||O_hat||_F, an update
of RMS exactly 0.2 like a typical AdamW step, so AdamW's learning rate and weight decay carry
over; this is ``adjust_lr="match_rms_adamw"`` (the default). With "original" or "spectral",
O_hat is rescaled to the Frobenius norm of O (as the NorMuon authors' code does) and multiplied
by that rule's shape factor. With ``per_head=k`` each row block is aligned on its own. Neither
paper bias-corrects V: the rescaling cancels a uniform factor.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from .distributed import ProcessGroupOption
from .muon import Muon
from .pipeline import MatrixOptimizer
from .scaling import adjust_lr_factor
from .validate import check_positive, check_unit_interval

ADAMW_UPDATE_RMS = 0.2


def rms_aligned(O_hat: torch.Tensor, O: torch.Tensor, rule: str) -> torch.Tensor:
    """Rescale each matrix of the stack O_hat (..., m, n) by the ``adjust_lr`` rule (see module).

    Example:
        >>> O_hat = torch.ones(1, 2, 8)
        >>> round(float(rms_aligned(O_hat, O_hat, "match_rms_adamw").square().mean().sqrt()), 6)
        0.2
    """
    rows, cols = O.shape[-2:]
    tiny = torch.finfo(O_hat.dtype).tiny
    unit = O_hat / torch.linalg.matrix_norm(O_hat, keepdim=True).clamp_min(tiny)
    if rule == "match_rms_adamw":
        return unit * (ADAMW_UPDATE_RMS * math.sqrt(rows * cols))
    return unit * torch.linalg.matrix_norm(O, keepdim=True) * adjust_lr_factor(rule, rows, cols)


class _AdaptiveMuon(Muon):
    """Muon with a second moment of the update (``beta2``, ``eps``) and the RMS alignment."""

    def __init__(self, params: Iterable[Any], *, lr: float, momentum: float, nesterov: bool,
                 weight_decay: float, beta2: float | None, eps: float, method: str, steps: int | None,
                 dtype: torch.dtype | None, adjust_lr: str, per_head: int, adamw_lr: float,
                 adamw_betas: tuple[float, float], adamw_eps: float, adamw_wd: float,
                 process_group: ProcessGroupOption) -> None:
        MatrixOptimizer.__init__(self, params, lr=lr, momentum=momentum, nesterov=nesterov,
                                 weight_decay=weight_decay, adjust_lr=adjust_lr, per_head=per_head,
                                 adamw_lr=adamw_lr, adamw_betas=adamw_betas, adamw_eps=adamw_eps,
                                 adamw_wd=adamw_wd, process_group=process_group, method=method,
                                 steps=steps, dtype=dtype, beta2=beta2, eps=eps)

    def _check_family(self, h: dict[str, Any]) -> None:
        super()._check_family(h)
        if h["beta2"] is not None:
            check_unit_interval("beta2", h["beta2"])
        check_positive("eps", h["eps"])


class AdaMuon(_AdaptiveMuon):
    """AdaMuon: Muon on sign(M), divided elementwise by the root mean square of past updates.

    Args:
        params, lr, momentum, nesterov, weight_decay, method, steps, dtype, per_head, adamw_*:
            as for :class:`torchnewton.optim.Muon`.
        beta2: decay of the second moment V; None (default) uses ``momentum``, as the paper does.
        eps: added to sqrt(V).
        adjust_lr: "match_rms_adamw" (default: update RMS 0.2), "original" or "spectral".

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> opt = AdaMuon(model.parameters(), lr=3e-3, adamw_lr=1e-3)
        >>> model(torch.randn(4, 8)).square().mean().backward(); opt.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 3e-3, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, *, beta2: float | None = None,
                 eps: float = 1e-8, method: str = "polar-express", steps: int | None = None,
                 dtype: torch.dtype | None = None, adjust_lr: str = "match_rms_adamw", per_head: int = 1,
                 adamw_lr: float = 3e-4, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_wd: float = 0.0,
                 process_group: ProcessGroupOption = None) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         beta2=beta2, eps=eps, method=method, steps=steps, dtype=dtype, adjust_lr=adjust_lr,
                         per_head=per_head, adamw_lr=adamw_lr, adamw_betas=adamw_betas, adamw_eps=adamw_eps,
                         adamw_wd=adamw_wd, process_group=process_group)

    def _prepare(self, M: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        return torch.sign(M)

    def _init_matrix_state(self, state: dict, param: torch.Tensor, group: dict[str, Any]) -> None:
        super()._init_matrix_state(state, param, group)
        # zeros_like: a sharded (DTensor) parameter gets a buffer sharded the same way.
        state["second_moment"] = torch.zeros_like(param)

    def _scale(self, O: torch.Tensor, param: torch.Tensor, state: dict, group: dict[str, Any]) -> torch.Tensor:
        beta2 = group["momentum"] if group["beta2"] is None else group["beta2"]
        update = O.reshape(param.shape)
        V = state["second_moment"]
        V.mul_(beta2).addcmul_(update, update, value=1.0 - beta2)
        O_hat = (update / (V.sqrt() + group["eps"])).reshape(O.shape)
        return rms_aligned(O_hat, O, group["adjust_lr"]).reshape(param.shape)


class NorMuon(_AdaptiveMuon):
    """NorMuon: Muon with each row (output neuron) divided by the root mean square of its past updates.

    Args:
        params, lr, momentum, nesterov, weight_decay, method, steps, dtype, per_head, adamw_*:
            as for :class:`torchnewton.optim.Muon`.
        beta2: decay of the per-row second moment (0.95). eps: added to its square root.
        adjust_lr: "match_rms_adamw" (default: update RMS 0.2), "original" or "spectral".

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> opt = NorMuon(model.parameters(), lr=3e-3, adamw_lr=1e-3)
        >>> model(torch.randn(4, 8)).square().mean().backward(); opt.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 3e-3, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, *, beta2: float = 0.95,
                 eps: float = 1e-10, method: str = "polar-express", steps: int | None = None,
                 dtype: torch.dtype | None = None, adjust_lr: str = "match_rms_adamw", per_head: int = 1,
                 adamw_lr: float = 3e-4, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_wd: float = 0.0,
                 process_group: ProcessGroupOption = None) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         beta2=beta2, eps=eps, method=method, steps=steps, dtype=dtype, adjust_lr=adjust_lr,
                         per_head=per_head, adamw_lr=adamw_lr, adamw_betas=adamw_betas, adamw_eps=adamw_eps,
                         adamw_wd=adamw_wd, process_group=process_group)

    def _check_family(self, h: dict[str, Any]) -> None:
        if h["beta2"] is None:
            raise ValueError("beta2 must be a number in [0, 1), got None")
        super()._check_family(h)

    def _init_matrix_state(self, state: dict, param: torch.Tensor, group: dict[str, Any]) -> None:
        super()._init_matrix_state(state, param, group)
        # One number per row (output neuron), sharded like the parameter's rows.
        state["row_second_moment"] = torch.zeros_like(param.flatten(1)[:, :1])

    def _scale(self, O: torch.Tensor, param: torch.Tensor, state: dict, group: dict[str, Any]) -> torch.Tensor:
        # Heads split the rows, not the columns: a row's mean is the same per head or per matrix.
        rows = O.reshape(param.shape[0], -1)
        v = state["row_second_moment"]
        v.lerp_(rows.square().mean(dim=1, keepdim=True), 1.0 - group["beta2"])
        O_hat = (rows / (v.sqrt() + group["eps"])).reshape(O.shape)
        return rms_aligned(O_hat, O, group["adjust_lr"]).reshape(param.shape)
