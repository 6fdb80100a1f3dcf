"""Shampoo: a Kronecker-factored full-matrix AdaGrad, with blocking and grafting.

Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization" (ICML 2018);
Anil, Gupta, Koren, Regan & Singer, "Scalable Second Order Optimization for Deep Learning"
(arXiv:2002.09018, 2020) for blocking, grafting and the delayed start.

For a matrix parameter W (m x n; a conv kernel (out, in, kh, kw) is the (out, in·kh·kw) matrix)
with gradient G_t, Shampoo keeps one factor per side,

    L_t = β_s L_{t-1} + (1 - β_s) G_t G_tᵀ        (m x m),
    R_t = β_s R_{t-1} + (1 - β_s) G_tᵀ G_t        (n x n),

where ``shampoo_beta`` β_s = 1 means the plain sums L_t = L_{t-1} + G_t G_tᵀ of the paper. With
the bias-corrected first moment M_t (an EMA of G with ``betas[0]``; β1 = 0 gives M_t = G_t) the
Shampoo direction is

    P_t = (L_t + ε I)^{-1/4} M_t (R_t + ε I)^{-1/4},

the inverse 4th roots computed every ``precondition_frequency`` steps by the coupled Newton
iteration ``torchnewton.linalg.inv_root(A, 4)`` (or by ``eigh``) and reused in between.

Grafting (Anil et al. §2.3; Agarwal et al. 2020): Shampoo picks the direction, a diagonal
optimizer the step length, per parameter. With the grafting direction D_t (Adam's bias-corrected
M_t / (sqrt(V_t) + eps), AdaGrad's M_t / (sqrt(ΣG²) + eps), or plain M_t for "none") the update
is U_t = P_t ||D_t||_F / ||P_t||_F ("none": U_t = P_t). Parameters with ndim < 2 (biases, norm
gains), and every parameter before ``start_preconditioning_step``, take U_t = D_t: the grafting
optimizer alone. Weight decay is decoupled: W <- (1 - lr λ) W - lr U_t.

Blocking (Anil et al. §3.1): a dimension longer than ``block_size`` is cut into blocks of at most
``block_size``; every block of W has its own factors and roots, so memory and root cost grow
linearly, not cubically, with the layer width. Blocks of one shape share one batched root call.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> opt = Shampoo(model.parameters(), lr=1e-2, precondition_frequency=1)
    >>> model(torch.randn(16, 4)).square().mean().backward(); opt.step(); opt.zero_grad()
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import torch

from ..linalg import inv_root
from .finite import GuardedOptimizer
from .validate import (
    check_betas,
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_unit_interval,
)

ROOT_METHODS = ("newton", "eigh")
GRAFTING = ("adam", "adagrad", "none")


class Shampoo(GuardedOptimizer):
    """Shampoo with per-block Kronecker factors, inverse 4th roots and grafting.

    Args:
        params: parameters or parameter groups, as for any torch.optim optimizer.
        lr: learning rate.
        betas: (β1, β2): EMA of the gradient (the first moment both Shampoo and the grafting
            optimizer precondition) and Adam grafting's second-moment decay.
        shampoo_beta: factor EMA; 1.0 accumulates plain sums (Gupta et al.).
        epsilon: ε I added to every factor before its inverse root (> 0).
        weight_decay: decoupled weight decay λ.
        block_size: the longest side of a preconditioned block.
        precondition_frequency: steps between recomputations of the inverse roots.
        start_preconditioning_step: the first step that uses Shampoo's direction (and computes
            the roots); None: ``precondition_frequency``, so that the first roots already rest on
            that many gradients (as in Meta's Distributed Shampoo), not on one rank-deficient outer
            product that would then be reused for ``precondition_frequency`` steps.
        grafting: "adam", "adagrad" or "none" (see the module docstring).
        grafting_eps: the grafting optimizer's eps.
        root_method: "newton" (``torchnewton.linalg.inv_root``) or "eigh".
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), *,
                 shampoo_beta: float = 1.0, epsilon: float = 1e-6, weight_decay: float = 0.0,
                 block_size: int = 1024, precondition_frequency: int = 10,
                 start_preconditioning_step: int | None = None,
                 grafting: str = "adam", grafting_eps: float = 1e-8, root_method: str = "newton") -> None:
        if start_preconditioning_step is None:
            start_preconditioning_step = precondition_frequency
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        shampoo_beta=shampoo_beta, epsilon=epsilon, weight_decay=weight_decay,
                        block_size=block_size, precondition_frequency=precondition_frequency,
                        start_preconditioning_step=start_preconditioning_step, grafting=grafting,
                        grafting_eps=grafting_eps, root_method=root_method)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, h: dict[str, Any]) -> None:
        _check_hyperparameters(h)

    def _update(self, p: torch.Tensor, state: dict, group: dict[str, Any]) -> None:
        grad = p.grad
        beta1, beta2 = group["betas"]
        if not state:
            _init_state(state, p, group)
        state["step"] += 1
        t = state["step"]
        state["exp_avg"].lerp_(grad, 1.0 - beta1)
        moment = state["exp_avg"] / (1.0 - beta1**t)
        direction = _graft_direction(moment, grad, state, group, t)
        if p.ndim >= 2:
            matrix = grad.reshape(p.shape[0], -1)
            _accumulate_factors(state, _blocks(matrix, group["block_size"]), group["shampoo_beta"])
            start = group["start_preconditioning_step"]
            if t >= start and (t - start) % group["precondition_frequency"] == 0:
                state["left_root"] = _inverse_fourth_roots(state["left"], group)
                state["right_root"] = _inverse_fourth_roots(state["right"], group)
            if t >= start:
                shampoo = _precondition(moment.reshape(matrix.shape), state, group["block_size"]).reshape(p.shape)
                if group["grafting"] != "none":
                    tiny = torch.finfo(shampoo.dtype).tiny
                    shampoo = shampoo * (torch.linalg.vector_norm(direction)
                                         / torch.linalg.vector_norm(shampoo).clamp_min(tiny))
                direction = shampoo
        if group["weight_decay"]:
            p.mul_(1.0 - group["lr"] * group["weight_decay"])
        p.add_(direction, alpha=-group["lr"])


def _check_hyperparameters(h: dict[str, Any]) -> None:
    check_nonnegative("lr", h["lr"])
    check_betas("betas", h["betas"])
    check_unit_interval("shampoo_beta", h["shampoo_beta"], closed_right=True)
    if h["shampoo_beta"] == 0:
        raise ValueError("shampoo_beta must be > 0 (0 keeps no curvature history), got 0")
    check_positive("epsilon", h["epsilon"])
    check_nonnegative("weight_decay", h["weight_decay"])
    check_positive_int("block_size", h["block_size"])
    check_positive_int("precondition_frequency", h["precondition_frequency"])
    check_positive_int("start_preconditioning_step", h["start_preconditioning_step"])
    check_choice("grafting", h["grafting"], GRAFTING)
    check_positive("grafting_eps", h["grafting_eps"])
    check_choice("root_method", h["root_method"], ROOT_METHODS)


def _init_state(state: dict, p: torch.Tensor, group: dict[str, Any]) -> None:
    state["step"] = 0
    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    if group["grafting"] != "none":
        state["graft_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    if p.ndim >= 2:
        dtype = factor_dtype(p.dtype)
        blocks = _blocks(p.detach().reshape(p.shape[0], -1), group["block_size"])
        state["left"] = [p.new_zeros(b.shape[0], b.shape[0], dtype=dtype) for b in blocks]
        state["right"] = [p.new_zeros(b.shape[1], b.shape[1], dtype=dtype) for b in blocks]
        state["left_root"], state["right_root"] = [], []


def factor_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype factors and their decompositions are kept in: eigh, QR and the roots need at
    least float32, so half-precision parameters get float32 factors."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _graft_direction(moment: torch.Tensor, grad: torch.Tensor, state: dict, group: dict[str, Any],
                     t: int) -> torch.Tensor:
    """The grafting optimizer's direction for the bias-corrected first moment ``moment``."""
    kind = group["grafting"]
    if kind == "none":
        return moment
    if kind == "adam":
        beta2 = group["betas"][1]
        state["graft_sq"].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        scale = (state["graft_sq"] / (1.0 - beta2**t)).sqrt_()
    else:
        state["graft_sq"].addcmul_(grad, grad)
        scale = state["graft_sq"].sqrt()
    return moment / scale.add_(group["grafting_eps"])


def _blocks(matrix: torch.Tensor, block_size: int) -> list[torch.Tensor]:
    """The blocks of ``matrix`` in row-major block order, each at most block_size x block_size."""
    return [block for rows in matrix.split(block_size, 0) for block in rows.split(block_size, 1)]


def _accumulate_factors(state: dict, blocks: list[torch.Tensor], beta: float) -> None:
    for block, left, right in zip(blocks, state["left"], state["right"]):
        block = block.to(left.dtype)
        if beta == 1.0:
            left.addmm_(block, block.mT)
            right.addmm_(block.mT, block)
        else:
            left.mul_(beta).addmm_(block, block.mT, alpha=1.0 - beta)
            right.mul_(beta).addmm_(block.mT, block, alpha=1.0 - beta)


def _inverse_fourth_roots(factors: list[torch.Tensor], group: dict[str, Any]) -> list[torch.Tensor]:
    """(F + ε I)^{-1/4} for every factor, one batched call per distinct size."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, F in enumerate(factors):
        by_size[F.shape[-1]].append(i)
    roots: list[torch.Tensor] = [factors[0]] * len(factors)
    for size, indices in by_size.items():
        eye = torch.eye(size, dtype=factors[0].dtype, device=factors[0].device)
        stack = torch.stack([factors[i] for i in indices]) + group["epsilon"] * eye
        if group["root_method"] == "newton":
            result = inv_root(stack, 4)
        else:
            eigenvalues, Q = torch.linalg.eigh(stack)
            # The eigenvalues of F + εI are >= ε; rounding can put the computed ones a little below.
            result = (Q * eigenvalues.clamp_min(group["epsilon"]).pow(-0.25).unsqueeze(-2)) @ Q.mT
        for i, root in zip(indices, result.unbind(0)):
            roots[i] = root
    return roots


def _precondition(moment: torch.Tensor, state: dict, block_size: int) -> torch.Tensor:
    """L_b^{-1/4} M_b R_b^{-1/4} for every block b of ``moment``, reassembled."""
    blocks = iter(zip(state["left_root"], state["right_root"]))
    rows = []
    for row in moment.split(block_size, 0):
        parts = []
        for block in row.split(block_size, 1):
            left, right = next(blocks)
            parts.append((left @ block.to(left.dtype) @ right).to(moment.dtype))
        rows.append(torch.cat(parts, 1))
    return torch.cat(rows, 0)
