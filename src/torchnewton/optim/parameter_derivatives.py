"""Derivatives of a closure's output with respect to an optimizer's parameter tensors.

An optimizer sees the model as a list of tensors θ = (θ₁, …, θ_k) and the objective as the output
of a closure evaluated on them, with its autograd graph. The second-order optimizers here need,
on the flat vector x = concat(θᵢ.reshape(-1)) of length n:

- the gradient g = ∇f(x) and the Hessian H = ∇²f(x) of a scalar loss f: g by one backward pass
  with ``create_graph=True``, then row i of H is the gradient of gᵢ (one more backward pass each,
  or all at once by ``vmap`` over the backward with ``vectorize=True``);
- the Jacobian J = ∂r/∂x of a residual vector r (m entries), for the Gauss–Newton matrix JᵀJ of
  ½‖r‖²: row-wise by m backward passes when m ≤ n, else column-wise by n passes of the
  "double-backward trick" J v = ∂(Jᵀu · v)/∂u (Jᵀu is linear in a dummy cotangent u, so one
  graph of u ↦ Jᵀu, built once, gives every column by one more backward pass);
- one Hutchinson sample z ⊙ (H z) of diag(H) from gradients that carry a graph (AdaHessian).

Example:
    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> g, H = hessian((w ** 3).sum(), [w])
    >>> H
    tensor([[ 6.,  0.],
            [ 0., 12.]])
"""
from __future__ import annotations

from typing import Sequence

import torch

_FREED_GRAPH = "Trying to backward through the graph a second time"


def assign_flat(params: Sequence[torch.Tensor], vector: torch.Tensor) -> None:
    """Write a flat vector back into the parameters, in place (under ``torch.no_grad``)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            p.copy_(vector[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


def _grad(outputs, inputs, grad_outputs=None, **kwargs) -> tuple[torch.Tensor | None, ...]:
    """torch.autograd.grad with the one mistake a closure can make spelled out: a graph freed by
    a plain ``loss.backward()`` inside the closure."""
    try:
        return torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True, **kwargs)
    except RuntimeError as err:
        if _FREED_GRAPH in str(err):
            raise RuntimeError(
                "the closure's output graph was already freed: second derivatives need it. Do not call "
                "loss.backward() in the closure, or call loss.backward(create_graph=True)") from err
        raise


def _flat_or_zeros(parts: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(t) if d is None else d).reshape(-1) for d, t in zip(parts, like)])


def gradient(loss: torch.Tensor, params: Sequence[torch.Tensor], *, create_graph: bool = False,
             grad_output: torch.Tensor | None = None) -> torch.Tensor:
    """The flat gradient of ``loss`` (or the vector-Jacobian product with ``grad_output``)."""
    parts = _grad(loss, params, grad_output, create_graph=create_graph, retain_graph=True)
    return _flat_or_zeros(parts, params)


def hessian(loss: torch.Tensor, params: Sequence[torch.Tensor], *,
            vectorize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(g (n,), H (n, n)) of a scalar ``loss`` with its graph; H symmetrized against rounding.

    ``vectorize=True`` takes all n rows in one call with ``is_grads_batched`` (vmap over the
    backward pass); every operation in the graph must then support vmap (a custom autograd
    Function without a vmap rule does not).
    """
    g = gradient(loss, params, create_graph=True)
    n = g.numel()
    if not g.requires_grad:  # the loss is affine in the parameters
        return g.detach(), g.new_zeros(n, n)
    if vectorize:
        eye = torch.eye(n, dtype=g.dtype, device=g.device)
        parts = _grad(g, params, eye, is_grads_batched=True, retain_graph=True)
        H = torch.cat([(torch.zeros(n, *t.shape, dtype=g.dtype, device=g.device) if d is None else d)
                       .reshape(n, -1) for d, t in zip(parts, params)], dim=1)
    else:
        H = torch.stack([gradient(g[i], params) for i in range(n)])
    return g.detach(), 0.5 * (H + H.T)


def jacobian(residuals: torch.Tensor, params: Sequence[torch.Tensor], *,
             vectorize: bool = False) -> torch.Tensor:
    """J (m, n) of the flattened ``residuals`` (with their graph) with respect to the parameters."""
    r = residuals.reshape(-1)
    m, n = r.numel(), sum(p.numel() for p in params)
    if m <= n:
        if vectorize:
            eye = torch.eye(m, dtype=r.dtype, device=r.device)
            parts = _grad(r, params, eye, is_grads_batched=True, retain_graph=True)
            return torch.cat([(torch.zeros(m, *t.shape, dtype=r.dtype, device=r.device) if d is None else d)
                              .reshape(m, -1) for d, t in zip(parts, params)], dim=1)
        return torch.stack([gradient(r[j], params) for j in range(m)])
    u = torch.zeros_like(r, requires_grad=True)
    pullback = gradient(r, params, create_graph=True, grad_output=u)  # Jᵀu, linear in u
    if not pullback.requires_grad:
        return r.new_zeros(m, n)
    if vectorize:
        eye = torch.eye(n, dtype=r.dtype, device=r.device)
        (columns,) = _grad(pullback, [u], eye, is_grads_batched=True, retain_graph=True)
        return r.new_zeros(m, n) if columns is None else columns.T
    columns = [_grad(pullback[i], [u], retain_graph=True)[0] for i in range(n)]
    return torch.stack([r.new_zeros(m) if c is None else c for c in columns], dim=1)


def rademacher(shape: torch.Size, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """A vector of independent ±1 entries drawn from ``generator`` (on its device), in ``like``'s
    dtype and device."""
    z = torch.randint(0, 2, shape, generator=generator, dtype=like.dtype, device=generator.device)
    return (z * 2 - 1).to(like.device)


def hutchinson_sample(grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                      generator: torch.Generator, *, retain_graph: bool = False) -> list[torch.Tensor]:
    """One sample z ⊙ (H z) per parameter, E[z ⊙ Hz] = diag(H) (Bekas, Kokiopoulou & Saad 2007).

    ``grads`` are the gradients of the loss, those that depend on the parameters with their graph
    (``backward(create_graph=True)``); a gradient without a graph is constant, its rows of H are
    zero. z is Rademacher, drawn parameter by parameter in order from ``generator``. All products
    come from one double-backward pass: H z = ∂(g · z)/∂θ; ``retain_graph`` keeps the gradients'
    graph for more samples.
    """
    zs = [rademacher(p.shape, generator, p) for p in params]
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    samples = [torch.zeros_like(z) for z in zs]
    if live:
        products = _grad([grads[i] for i in live], list(params), [zs[i] for i in live], retain_graph=retain_graph)
        for i, (z, hz) in enumerate(zip(zs, products)):
            if hz is not None:
                samples[i] = z * hz
    return samples
