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


def linearize(fun: BatchFunction, x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(F(x), v ↦ J(x)v) with the linearization recorded once, for many products at one x.

    The reverse-mode graph of u ↦ J(x)ᵀu is built once (u a dummy cotangent); each product is then
    one backward pass through it, J v = ∂(J(x)ᵀu · v)/∂u, with no new evaluation of F. In PyTorch
    that is several times cheaper than a forward-mode pass per product (what a Krylov solver needs).
    """
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        value = fun(z)
        u = torch.zeros_like(value, requires_grad=True)
        pullback = torch.autograd.grad(value, z, u, create_graph=True, allow_unused=True)[0] if value.requires_grad else None
    if pullback is None or not pullback.requires_grad:  # F does not depend on x
        return value.detach(), lambda v: value.new_zeros(value.shape)

    def product(v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return torch.autograd.grad(pullback, u, v, retain_graph=True)[0]

    return value.detach(), product


def vjp(fun: BatchFunction, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F(x), J(x)ᵀ u) by one reverse-mode pass."""
    value, pullback = _vjp(fun, x)
    return value, pullback(u)[0]


def jacobian(fun: BatchFunction, x: torch.Tensor, *, mode: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(F(x) (B, m), J(x) (B, m, n)).

    ``mode="reverse"``: one batched backward call over the m output basis vectors
    (``is_grads_batched``); ``"forward"``: ``vmap`` over n forward-mode passes. ``"auto"`` takes
    forward mode only for tall Jacobians (m ≥ 2n), where it needs far fewer passes; on CPU a
    reverse pass is the cheaper one otherwise.
    """
    if mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"mode must be 'auto', 'forward' or 'reverse', got {mode!r}")
    n = x.shape[-1]
    if mode == "forward":
        return _forward_jacobian(fun, x)
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        value = fun(z)
        m = value.shape[-1]
        if mode == "auto" and m >= 2 * n:
            # the evaluation above is lost, but a tall Jacobian saves m − n backward passes
            return _forward_jacobian(fun, x)
        if not value.requires_grad:  # F does not depend on x
            return value.detach(), x.new_zeros(x.shape[0], m, n)
        (rows,) = torch.autograd.grad(value, z, grad_outputs=_basis(m, value), is_grads_batched=True,
                                      allow_unused=True)
    if rows is None:
        return value.detach(), x.new_zeros(x.shape[0], m, n)
    return value.detach(), rows.transpose(0, 1)


def _forward_jacobian(fun: BatchFunction, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    value, push = _jvp_linearized(fun, x)
    columns = vmap(push)(_basis(x.shape[-1], x))  # (n, B, m)
    return value, columns.permute(1, 2, 0)


def _jvp_linearized(fun: BatchFunction, x: torch.Tensor):
    value = fun(x)
    return value, lambda t: _jvp(fun, (x,), (t,))[1]


def gradient(objective: BatchFunction, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x) (B,), ∇f(x) (B, n)) for a batched objective, by one reverse pass of the batch sum.

    Plain ``torch.autograd.grad`` on one recorded graph (the value and the gradient share it):
    for the small objectives of a single solve it costs about half of ``torch.func``'s
    ``vjp``, whose functional wrapping is per call. That path is taken under ``torch.no_grad``
    (how the solvers iterate), where no outer graph can want the gradient; where the gradient
    may itself be differentiated (grad mode on: the implicit gradient's ∂∇f/∂θ; or a
    ``torch.func`` transform, as ``hvp``) the functional form is used.
    """
    if torch.is_grad_enabled() or torch._C._functorch.peek_interpreter_stack() is not None:
        value, pullback = _vjp(objective, x)
        return value, pullback(torch.ones_like(value))[0]
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        value = objective(z)
        if not value.requires_grad:  # f does not depend on x
            return value.detach(), torch.zeros_like(x)
        (grad,) = torch.autograd.grad(value, z, torch.ones_like(value), allow_unused=True)
    return value.detach(), torch.zeros_like(x) if grad is None else grad


def _gradient_only(objective: BatchFunction) -> BatchFunction:
    return lambda y: gradient(objective, y)[1]


def hvp(objective: BatchFunction, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇f(x), ∇²f(x) v), no Hessian formed.

    Under ``torch.no_grad`` (how the solvers iterate) reverse over reverse: the gradient's graph
    is differentiated once more along v; for small objectives this costs several times less than
    ``torch.func``'s forward-over-reverse (0.33 ms against 2.1 ms per product on Rosenbrock n = 2),
    whose functional wrapping is per call. Where the product may itself be differentiated (grad
    mode on, or inside a ``torch.func`` transform) forward-over-reverse is used.
    """
    if torch.is_grad_enabled() or torch._C._functorch.peek_interpreter_stack() is not None:
        return _jvp(_gradient_only(objective), (x,), (v,))
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        value = objective(z)
        if not value.requires_grad:  # f does not depend on x
            return torch.zeros_like(x), torch.zeros_like(x)
        (grad,) = torch.autograd.grad(value.sum(), z, create_graph=True)
        if not grad.requires_grad:  # f is affine in x
            return grad.detach(), torch.zeros_like(x)
        (product,) = torch.autograd.grad(grad, z, v, allow_unused=True)
    return grad.detach(), torch.zeros_like(x) if product is None else product


def hessian(objective: BatchFunction, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(f(x), ∇f(x), ∇²f(x) (B, n, n)), symmetrized.

    Reverse over reverse: the gradient's graph is differentiated along the n basis vectors in
    one batched backward call (``is_grads_batched``); on CPU that is several times faster than
    ``vmap`` over forward-mode passes for the small dense Hessians Newton methods factorize.
    """
    batch, n = x.shape
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        value = objective(z)
        (grad,) = torch.autograd.grad(value.sum(), z, create_graph=True)
        if not grad.requires_grad:  # f is affine in x
            return value.detach(), grad.detach(), x.new_zeros(batch, n, n)
        (rows,) = torch.autograd.grad(grad, z, grad_outputs=_basis(n, x), is_grads_batched=True,
                                      allow_unused=True)
    if rows is None:
        return value.detach(), grad.detach(), x.new_zeros(batch, n, n)
    hess = rows.transpose(0, 1)
    return value.detach(), grad.detach(), 0.5 * (hess + hess.transpose(-1, -2))


def gauss_newton_product(fun: BatchFunction, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Jᵀ(J v) for residuals F, the Gauss–Newton approximation of the Hessian of ½‖F‖²."""
    _, Jv = jvp(fun, x, v)
    return vjp(fun, x, Jv)[1]
