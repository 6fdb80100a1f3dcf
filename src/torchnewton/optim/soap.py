"""SOAP: Adam run in the eigenbasis of Shampoo's factors.

Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson & Kakade, "SOAP: Improving and Stabilizing
Shampoo using Adam" (arXiv:2409.11321, 2024), Algorithms 3 and 4.

For a parameter with k dimensions (a matrix W: k = 2, a conv kernel: k = 4) SOAP keeps one
Shampoo factor per dimension d of size at most ``max_precondition_dim``, an EMA of the gradient's
mode-d Gram matrix (for a matrix: L = β_s L + (1 - β_s) G Gᵀ, R = β_s R + (1 - β_s) Gᵀ G), and
an orthonormal basis Q_d of its eigenvectors (eigenvalues in descending order). Write
rot(X) = X ×_1 Q_1ᵀ ×_2 Q_2ᵀ ... (for a matrix Q_Lᵀ X Q_R) and unrot for the inverse. A step is

    M <- β1 M + (1 - β1) G                 (first moment, kept in the parameter's own basis)
    V <- β2 V + (1 - β2) rot(G)²           (second moment, kept in the rotated basis)
    W <- W - lr sqrt(1 - β2^k) / (1 - β1^k) · unrot(rot(M) / (sqrt(V) + eps))
    W <- W - lr λ W                         (decoupled weight decay)

then the factors take in G, and every ``precondition_frequency`` steps the basis is refreshed.
Since M lives in the original coordinates, a basis change rotates it exactly (it is re-rotated
each step); V, a diagonal in the rotated coordinates, cannot be rotated exactly, and is carried
over by matching eigenvectors: the refresh (Algorithm 4) estimates the eigenvalues as
diag(Q_dᵀ P_d Q_d), sorts them in descending order, permutes V's mode-d entries accordingly and
takes Q_d <- qr(P_d Q_d[:, order]), one power iteration + QR. ``basis_update="eigh"`` refreshes
by an exact eigendecomposition instead (descending order, V kept by eigenvalue rank).
Dimensions longer than ``max_precondition_dim`` keep the identity basis; with none left (1-D
parameters: biases, norm gains) SOAP is exactly Adam.

As in the authors' code (and pytorch-optimizer's copy of it) the first step of a parameter only
measures its gradient to build the initial basis by ``eigh`` and does not move the parameter; the
bias corrections count from the second step (k = step - 1).

A factor of rank below its size (a wide layer's first gradients) has an eigenbasis that is not
unique on its null space; any change of rounding (a different summation order for the factor)
picks another basis there, and since Adam is not rotation-invariant the trajectories part. So
this implementation equals pytorch-optimizer's to round-off where its factors are computed the
same way (matrices), and only statistically on 4-D kernels. heavyball's SOAP is a different
variant (bias-corrected factor EMA, first moment kept in the rotated basis, a null-space lift in
the power step, its own refresh schedule); the digits benchmark compares it, no test equates it.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> opt = SOAP(model.parameters(), lr=3e-3)
    >>> for _ in range(2):
    ...     model(torch.randn(16, 4)).square().mean().backward(); opt.step(); opt.zero_grad()
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from .finite import GuardedOptimizer
from .shampoo import factor_dtype
from .validate import (
    check_betas,
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_unit_interval,
)

BASIS_UPDATES = ("power-qr", "eigh")


class SOAP(GuardedOptimizer):
    """Shampoo-eigenbasis Adam (SOAP) on the torch.optim contract.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: Adam's (β1, β2).
        shampoo_beta: the factors' EMA coefficient; None uses β2 (the authors' default).
        eps: Adam's eps.
        weight_decay: decoupled weight decay λ.
        precondition_frequency: steps between basis refreshes.
        max_precondition_dim: dimensions longer than this are not rotated.
        basis_update: "power-qr" (Algorithm 4) or "eigh".
    """

    def __init__(self, params: Iterable[Any], lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.95), *,
                 shampoo_beta: float | None = None, eps: float = 1e-8, weight_decay: float = 0.01,
                 precondition_frequency: int = 10, max_precondition_dim: int = 10000,
                 basis_update: str = "power-qr") -> None:
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
                        precondition_frequency=precondition_frequency,
                        max_precondition_dim=max_precondition_dim, basis_update=basis_update)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, h: dict[str, Any]) -> None:
        _check_hyperparameters(h)

    def _update(self, p: torch.Tensor, state: dict, group: dict[str, Any]) -> None:
        grad = p.grad
        beta1, beta2 = group["betas"]
        shampoo_beta = beta2 if group["shampoo_beta"] is None else group["shampoo_beta"]
        if not state:
            _init_state(state, p, group["max_precondition_dim"])
            _accumulate_factors(state["factors"], grad, shampoo_beta)
            state["basis"] = [None if F is None else _descending_eigenvectors(F) for F in state["factors"]]
            return
        state["step"] += 1
        k = state["step"] - 1
        basis = state["basis"]
        state["exp_avg"].lerp_(grad, 1.0 - beta1)
        state["exp_avg_sq"].lerp_(rotate(grad, basis).square(), 1.0 - beta2)
        normalized = rotate(state["exp_avg"], basis) / (state["exp_avg_sq"].sqrt() + group["eps"])
        step_size = group["lr"] * (1.0 - beta2**k) ** 0.5 / (1.0 - beta1**k)
        p.add_(rotate(normalized, basis, back=True), alpha=-step_size)
        if group["weight_decay"]:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        _accumulate_factors(state["factors"], grad, shampoo_beta)
        if k % group["precondition_frequency"] == 0:
            _refresh_basis(state, group["basis_update"])


def _check_hyperparameters(h: dict[str, Any]) -> None:
    check_nonnegative("lr", h["lr"])
    check_betas("betas", h["betas"])
    if h["shampoo_beta"] is not None:
        check_unit_interval("shampoo_beta", h["shampoo_beta"])
    check_positive("eps", h["eps"])
    check_nonnegative("weight_decay", h["weight_decay"])
    check_positive_int("precondition_frequency", h["precondition_frequency"])
    check_positive_int("max_precondition_dim", h["max_precondition_dim"])
    check_choice("basis_update", h["basis_update"], BASIS_UPDATES)


def _init_state(state: dict, p: torch.Tensor, max_dim: int) -> None:
    state["step"] = 1
    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    dtype = factor_dtype(p.dtype)
    # 1-D parameters are not rotated: SOAP is Adam on them.
    sizes = p.shape if p.ndim >= 2 else ()
    state["factors"] = [p.new_zeros(n, n, dtype=dtype) if n <= max_dim else None for n in sizes]


def _accumulate_factors(factors: list[torch.Tensor | None], grad: torch.Tensor, beta: float) -> None:
    """P_d <- β P_d + (1 - β) G_(d) G_(d)ᵀ, with G_(d) the mode-d unfolding of the gradient."""
    for d, F in enumerate(factors):
        if F is not None:
            unfolded = grad.movedim(d, 0).reshape(grad.shape[d], -1).to(F.dtype)
            F.lerp_(unfolded @ unfolded.mT, 1.0 - beta)


def rotate(X: torch.Tensor, basis: list[torch.Tensor | None], *, back: bool = False) -> torch.Tensor:
    """X ×_1 Q_1ᵀ ×_2 Q_2ᵀ ... (``back``: ×_d Q_d), identity where a basis entry is None.

    Each contraction over the leading dimension appends the new one last, so after all k the
    dimensions are back in order.

    Example:
        >>> Q = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
        >>> X = torch.randn(3, 2, dtype=torch.float64)
        >>> torch.allclose(rotate(X, [Q, None]), Q.mT @ X)
        True
    """
    if not basis:
        return X
    for Q in basis:
        if Q is None:
            X = X.movedim(0, -1)
        else:
            X = torch.tensordot(X, Q.to(X.dtype), dims=([0], [1 if back else 0]))
    return X


def _descending_eigenvectors(F: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigh(F)[1].flip(-1)


def _refresh_basis(state: dict, method: str) -> None:
    """New eigenbases; with "power-qr", V's entries follow their eigenvectors (Algorithm 4)."""
    for d, (F, Q) in enumerate(zip(state["factors"], state["basis"])):
        if F is None:
            continue
        if method == "eigh":
            state["basis"][d] = _descending_eigenvectors(F)
            continue
        FQ = F @ Q
        order = torch.argsort((Q * FQ).sum(0), descending=True)
        state["exp_avg_sq"] = state["exp_avg_sq"].index_select(d, order)
        state["basis"][d] = torch.linalg.qr(FQ.index_select(1, order))[0]
