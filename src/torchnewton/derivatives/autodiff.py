"""Batched derivatives by torch.func, following the batch convention of ARCHITECTURE.md.

A batched function maps x (B, n) to (B, m) (or (B,) for an objective), row i depending only on
row i of x. Per-problem Jacobians are then derivatives of the batch sum: one forward-mode pass
per input coordinate, or one reverse-mode pass per output, vectorized with ``vmap`` over the
basis vectors, whichever is fewer.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import jvp as _jvp
from torch.func import vjp as _vjp
from torch.func import vmap

BatchFunction = Callable[[torch.Tensor], torch.Tensor]


def _basis(k: int, x: torch.Tensor) -> torch.Tensor:
    """k basis vectors, each broadcast over the batch: shape (k, B, k)."""
    eye = torch.eye(k, dtype=x.dtype, device=x.device)
    return eye.unsqueeze(1).expand(k, x.shape[0], k)


def jvp(fun: BatchFunction, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F(x), J(x) v) by one forward-mode pass."""
    return _jvp(fun, (x,), (v,))


def vjp(fun: BatchFunction, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F(x), J(x)ᵀ u) by one reverse-mode pass."""
    value, pullback = _vjp(fun, x)
    return value, pullback(u)[0]


def jacobian(fun: BatchFunction, x: torch.Tensor, *, mode: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(F(x) (B, m), J(x) (B, m, n)). ``mode`` is "forward", "reverse" or "auto" (fewer passes)."""
    if mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"mode must be 'auto', 'forward' or 'reverse', got {mode!r}")
    n = x.shape[-1]
    if mode == "auto":
        with torch.no_grad():
            m = fun(x).shape[-1]
        mode = "forward" if n <= m else "reverse"
    if mode == "forward":
        value, push = _jvp_linearized(fun, x)
        columns = vmap(push)(_basis(n, x))  # (n, B, m)
        return value, columns.permute(1, 2, 0)
    value, pullback = _vjp(fun, x)
    rows = vmap(lambda u: pullback(u)[0])(_basis(value.shape[-1], value))  # (m, B, n)
    return value, rows.permute(1, 0, 2)


def _jvp_linearized(fun: BatchFunction, x: torch.Tensor):
    value = fun(x)
    return value, lambda t: _jvp(fun, (x,), (t,))[1]


def gradient(objective: BatchFunction, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x) (B,), ∇f(x) (B, n)) for a batched objective, by one reverse pass of the batch sum."""
    value, pullback = _vjp(objective, x)
    return value, pullback(torch.ones_like(value))[0]


def _gradient_only(objective: BatchFunction) -> BatchFunction:
    return lambda y: gradient(objective, y)[1]


def hvp(objective: BatchFunction, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇f(x), ∇²f(x) v) by forward-over-reverse: one pass, no Hessian formed."""
    return _jvp(_gradient_only(objective), (x,), (v,))


def hessian(objective: BatchFunction, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(f(x), ∇f(x), ∇²f(x) (B, n, n)): n forward-over-reverse passes vectorized by vmap."""
    value, grad = gradient(objective, x)
    columns = vmap(lambda t: _jvp(_gradient_only(objective), (x,), (t,))[1])(_basis(x.shape[-1], x))
    hess = columns.permute(1, 2, 0)
    return value, grad, 0.5 * (hess + hess.transpose(-1, -2))


def gauss_newton_product(fun: BatchFunction, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Jᵀ(J v) for residuals F, the Gauss–Newton approximation of the Hessian of ½‖F‖²."""
    _, Jv = jvp(fun, x, v)
    return vjp(fun, x, Jv)[1]
