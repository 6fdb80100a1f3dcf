"""Batched derivatives by torch.func, following the batch convention of ARCHITECTURE.md.

A batched function maps x (B, n) to (B, m) (or (B,) for an objective), row i depending only on
row i of x. Per-problem Jacobians are then derivatives of the batch sum: one forward-mode pass
per input coordinate, or one reverse-mode pass per output, vectorized with ``vmap`` over the
basis vectors, whichever is fewer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import jvp as _jvp
from torch.func import vjp as _vjp
from torch.func import vmap

BatchFunction = Callable[[torch.Tensor], torch.Tensor]


# torch's own entry point behind torch.autograd.grad (private: where a torch lacks it, every pass
# goes through torch.autograd.grad)
_ENGINE = getattr(torch.autograd.Variable, "_execution_engine", None)


def _pull(output: torch.Tensor, z: torch.Tensor, cotangent: torch.Tensor, *, retain_graph: bool | None = None,
          create_graph: bool = False, allow_unused: bool = True) -> torch.Tensor | None:
    """∂(output · cotangent)/∂z by one backward pass: ``torch.autograd.grad(output, z, cotangent)[0]``.

    On the CPU with plain tensors the autograd engine is called directly, as ``torch.autograd.grad``
    does after normalizing its arguments: that Python wrapper (argument tuples, a shape check of
    the cotangent, torch-function dispatch, stashing the caller's context for device threads)
    costs about 20 µs a call, a fifth of the gradient of a two-variable objective. The engine
    and its result are the same. Tensor subclasses and other devices (whose backward runs on
    device threads that need the caller's context) go through ``torch.autograd.grad``.
    """
    retain_graph = create_graph if retain_graph is None else retain_graph
    if _ENGINE is not None and z.is_cpu and type(output) is torch.Tensor and type(z) is torch.Tensor:
        return _ENGINE.run_backward((output,), (cotangent,), retain_graph, create_graph, (z,), allow_unused)[0]
    return torch.autograd.grad(output, z, cotangent, retain_graph=retain_graph, create_graph=create_graph,
                               allow_unused=allow_unused)[0]


def batched_basis(k: int, x: torch.Tensor) -> torch.Tensor:
    """k basis vectors, each broadcast over the batch of x: shape (k, B, k), the cotangents of one
    batched reverse pass (``is_grads_batched``) or the tangents of a vmapped forward one."""
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
        (rows,) = torch.autograd.grad(value, z, grad_outputs=batched_basis(m, value), is_grads_batched=True,
                                      allow_unused=True)
    if rows is None:
        return value.detach(), x.new_zeros(x.shape[0], m, n)
    return value.detach(), rows.transpose(0, 1)


def _forward_jacobian(fun: BatchFunction, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    value, push = _jvp_linearized(fun, x)
    columns = vmap(push)(batched_basis(x.shape[-1], x))  # (n, B, m)
    return value, columns.permute(1, 2, 0)


def _jvp_linearized(fun: BatchFunction, x: torch.Tensor):
    value = fun(x)
    return value, lambda t: _jvp(fun, (x,), (t,))[1]


def gradient(objective: BatchFunction, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x) (B,), ∇f(x) (B, n)) for a batched objective, by one reverse pass of the batch sum.

    One backward pass (:func:`_pull`) through one recorded graph (the value and the gradient share it):
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
        grad = _pull(value, z, torch.ones_like(value))
    return value.detach(), torch.zeros_like(x) if grad is None else grad


def value_then_gradient(objective: BatchFunction, x: torch.Tensor
                        ) -> tuple[torch.Tensor, Callable[..., "GradientGraph"]]:
    """(f(x), ``pull``) from one recorded evaluation; ``pull()`` gives ∇f(x) as a :class:`GradientGraph`.

    For a trial point whose gradient is wanted only if it is accepted (a trust-region step, a
    backtracking trial): f is evaluated once with its graph recorded, and the gradient, if asked
    for, is one backward pass through that graph instead of a second evaluation of f; its values
    are those of :func:`gradient`, bitwise. ``pull(keep_graph=True)`` records the gradient's own
    graph as well, so the Hessian or its products at x (the next Newton step) need no new
    evaluation either. Where grad mode is on or a ``torch.func`` transform is active, the
    gradient is computed afresh by :func:`gradient`.

    Example:
        >>> with torch.no_grad():
        ...     value, pull = value_then_gradient(lambda x: (x ** 2).sum(-1), torch.tensor([[1.0, 2.0]]))
        ...     graph = pull(keep_graph=True)
        ...     value, graph.gradient(), graph.hessian()
        (tensor([5.]), tensor([[2., 4.]]), tensor([[[2., 0.],
                 [0., 2.]]]))
    """
    if torch.is_grad_enabled() or torch._C._functorch.peek_interpreter_stack() is not None:
        value = objective(x)
        return value, lambda keep_graph=False: GradientGraph(objective, x, None, value, gradient(objective, x)[1], False)
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        value = objective(z)
    if not value.requires_grad:  # f does not depend on x
        return value, lambda keep_graph=False: GradientGraph(objective, x, z, value, torch.zeros_like(x), True)

    def pull(keep_graph: bool = False) -> GradientGraph:
        with torch.enable_grad():
            if keep_graph:
                total = value.sum()
                grad = _pull(total, z, torch.ones_like(total), create_graph=True, allow_unused=False)
            else:
                grad = _pull(value, z, torch.ones_like(value))
        return GradientGraph(objective, x, z, value.detach(), torch.zeros_like(x) if grad is None else grad, keep_graph)

    return value.detach(), pull


@dataclass
class GradientGraph:
    """∇f at x, with the graph of its own computation when recorded (``grad.requires_grad``).

    Reverse over reverse: the Hessian ∇²f(x) is one batched backward pass through ∇f along the n
    basis vectors (``is_grads_batched``; on CPU several times faster than ``vmap`` over
    forward-mode passes for small dense Hessians), a product ∇²f(x)v one backward pass along v;
    neither evaluates f again. Without a graph (grad mode on, a ``torch.func`` transform, or a
    gradient pulled without ``keep_graph``) the first such request records one.
    """

    objective: BatchFunction
    x: torch.Tensor  # the point, as the caller holds it (identity says which iterate this is)
    z: torch.Tensor | None  # the leaf the graph starts from
    value: torch.Tensor
    grad: torch.Tensor
    recorded: bool  # grad carries its graph (or f is affine in x and there is none to carry)

    @classmethod
    def record(cls, objective: BatchFunction, x: torch.Tensor) -> "GradientGraph":
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            value = objective(z)
            total = value.sum()
            grad = _pull(total, z, torch.ones_like(total), create_graph=True, allow_unused=False) if value.requires_grad else None
        return cls(objective, x, z, value.detach(), torch.zeros_like(x) if grad is None else grad, True)

    def gradient(self) -> torch.Tensor:
        return self.grad.detach()

    def _recorded(self) -> "GradientGraph":
        return self if self.recorded else GradientGraph.record(self.objective, self.x)

    def hessian(self) -> torch.Tensor:
        """∇²f(x) (B, n, n), symmetrized."""
        graph = self._recorded()
        batch, n = self.x.shape
        if not graph.grad.requires_grad:  # f is affine in x
            return self.x.new_zeros(batch, n, n)
        with torch.enable_grad():
            (rows,) = torch.autograd.grad(graph.grad, graph.z, grad_outputs=batched_basis(n, self.x), is_grads_batched=True,
                                          retain_graph=True, allow_unused=True)
        if rows is None:
            return self.x.new_zeros(batch, n, n)
        hess = rows.transpose(0, 1)
        return 0.5 * (hess + hess.transpose(-1, -2))

    def product(self, v: torch.Tensor) -> torch.Tensor:
        """∇²f(x)v."""
        graph = self._recorded()
        if not graph.grad.requires_grad:
            return torch.zeros_like(self.x)
        with torch.enable_grad():
            out = _pull(graph.grad, graph.z, v, retain_graph=True)
        return torch.zeros_like(self.x) if out is None else out


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
        total = value.sum()
        grad = _pull(total, z, torch.ones_like(total), create_graph=True, allow_unused=False)
        if not grad.requires_grad:  # f is affine in x
            return grad.detach(), torch.zeros_like(x)
        product = _pull(grad, z, v)
    return grad.detach(), torch.zeros_like(x) if product is None else product


def hvp_linearized(objective: BatchFunction, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ ∇²f(x)v with f and its gradient's graph recorded once, for many products at one x.

    Each product is then one backward pass through the recorded ∇f (``retain_graph``), with no
    new evaluation of f: what a Krylov solver or a model value needs at one iterate. The products
    are the ones :func:`hvp` computes (the same graph, the same backward), bitwise. Where a product
    may itself be differentiated (grad mode on, or inside a ``torch.func`` transform) each product
    falls back to :func:`hvp`.

    Example:
        >>> f = lambda x: (x ** 3).sum(-1)
        >>> with torch.no_grad():
        ...     product = hvp_linearized(f, torch.tensor([[1.0, 2.0]]))
        ...     product(torch.tensor([[1.0, 1.0]]))
        tensor([[ 6., 12.]])
    """
    if torch.is_grad_enabled() or torch._C._functorch.peek_interpreter_stack() is not None:
        return lambda v: hvp(objective, x, v)[1]
    return GradientGraph.record(objective, x).product


def hessian(objective: BatchFunction, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(f(x), ∇f(x), ∇²f(x) (B, n, n)), symmetrized.

    Reverse over reverse: the gradient's graph is differentiated along the n basis vectors in
    one batched backward call (``is_grads_batched``); on CPU that is several times faster than
    ``vmap`` over forward-mode passes for the small dense Hessians Newton methods factorize.
    """
    graph = GradientGraph.record(objective, x)
    return graph.value, graph.gradient(), graph.hessian()


def gauss_newton_product(fun: BatchFunction, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Jᵀ(J v) for residuals F, the Gauss–Newton approximation of the Hessian of ½‖F‖²."""
    _, Jv = jvp(fun, x, v)
    return vjp(fun, x, Jv)[1]
