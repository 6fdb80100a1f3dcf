"""Curvature–matrix products of a model on one batch, for a block of B vectors at once.

Vectors arrive as a list of tensors shaped (B, *θᵢ.shape), one per trainable parameter, and the
products leave the same way. Two kinds of product:

* Hessian: ∇²_θ L(θ) v, three exact ways (Pearlmutter 1994, "Fast exact multiplication by the
  Hessian"):
  - double backward: build ∇L with ``create_graph=True`` once, then one backward of ⟨∇L, v⟩ per
    vector through that graph — the cheapest for one vector;
  - reverse-over-reverse, vmapped: ``torch.func.vjp`` of the gradient function builds the same
    graph once, and its pullback v ↦ ∇²L v is vmapped over chunks of the block; batched matrix
    products replace B small ones, so this is the fast route for a block;
  - forward-over-reverse: ``torch.func.jvp`` of the gradient, vmapped over the block (the way
    curvlinops does it).
  For a loss with a closed-form output gradient g(f) = ∇_f L (MSE, cross-entropy) the gradient is
  the pullback Jᵀ g(f(θ)) and its derivative is H v = Jᵀ ∇²_f L (J v) + Σ_k g_k ∇²_θ f_k v, without
  differentiating autograd's generic loss backward: under ``torch.func`` ``nll_loss`` and
  ``log_softmax`` backward run as Python decompositions (15–20% of the CPU time of a 16-vector
  block on the benchmark's digits MLP), and double backward through ``log_softmax_backward``
  costs about 20% of a block's time there against a softmax and a subtraction.
* Jacobian sandwich: Jᵀ M (J v) with J = ∂f/∂θ the Jacobian of the outputs and M an operator on
  output space — the loss Hessian for the Gauss–Newton matrix, an average of gradient outer
  products for the Fisher matrices. Jv comes from forward-mode AD and Jᵀu from one backward of
  the same forward pass (one vector) or from ``torch.func.vjp`` (a block of vectors).

Both evaluate the model with ``torch.func.functional_call``; in training mode the buffers are
passed as copies, so products never update BatchNorm running statistics.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.autograd.forward_ad as forward_ad
from torch.func import functional_call, grad, jvp, vjp, vmap
from torch.overrides import TorchFunctionMode

Tensors = list[torch.Tensor]
OutputOperator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossGradient = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FunctionalModel:
    """``model`` as a function of its trainable tensors: (tensors, inputs) ↦ outputs."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str]):
        self.model, self.names = model, list(names)

    def __call__(self, tensors: Sequence[torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        state = dict(zip(self.names, tensors))
        if self.model.training:
            # a copy takes the running-statistics update a training-mode forward pass makes
            state.update({name: b.clone() for name, b in self.model.named_buffers()})
        return functional_call(self.model, state, (inputs,))


def scalar_loss(loss_function: LossFunction, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    loss = loss_function(outputs, targets)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_function must return a scalar tensor, got {shape}")
    return loss.reshape(())


def hessian_double_backward(model: FunctionalModel, loss_function: LossFunction, inputs: torch.Tensor,
                            targets: torch.Tensor, params: Sequence[torch.Tensor], vectors: Tensors,
                            loss_gradient: LossGradient | None = None) -> Tensors:
    """``loss_gradient(f, y)``, if given, is ∇_f L as a differentiable function of the outputs f."""
    outputs = model(params, inputs)
    if loss_gradient is None:
        root, seed = scalar_loss(loss_function, outputs, targets), None
    else:
        root, seed = outputs, loss_gradient(outputs, targets)
    block = vectors[0].shape[0]
    if not root.requires_grad:  # the loss does not depend on θ
        return [torch.zeros((block, *p.shape), dtype=p.dtype, device=p.device) for p in params]
    gradient = torch.autograd.grad(root, params, seed, create_graph=True, allow_unused=True,
                                   materialize_grads=True)
    # a gradient entry without a graph is constant in θ: its rows of the Hessian are zero
    live = [i for i, g in enumerate(gradient) if g.requires_grad]
    if not live:
        return [torch.zeros((block, *p.shape), dtype=p.dtype, device=p.device) for p in params]
    # one backward of ⟨∇L, v_b⟩ per vector through the shared graph: batching them with
    # is_grads_batched (vmap over the backward) measured no faster on CPU (16x larger intermediates)
    live_gradient = [gradient[i] for i in live]
    columns = [torch.autograd.grad(live_gradient, params, [vectors[i][b] for i in live],
                                   retain_graph=b < block - 1, materialize_grads=True) for b in range(block)]
    return [torch.stack(parts) for parts in zip(*columns)]


def hessian_forward_over_reverse(model: FunctionalModel, loss_function: LossFunction, inputs: torch.Tensor,
                                 targets: torch.Tensor, params: Sequence[torch.Tensor], vectors: Tensors,
                                 loss_gradient: LossGradient | None = None) -> Tensors:
    """``loss_gradient(f, y)``, if given, is ∇_f L as a differentiable function of the outputs f."""
    primals = tuple(p.detach() for p in params)
    if loss_gradient is not None:
        def gradient_in(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            outputs, pullback = vjp(lambda t: model(t, inputs), tensors)
            return pullback(loss_gradient(outputs, targets))[0]

        def product(*tangents: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(jvp(gradient_in, (primals,), (tangents,))[1])
    else:
        gradient = grad(lambda tensors, target: scalar_loss(loss_function, model(tensors, inputs), target))
        # floating targets enter as primals with an explicit zero tangent: left implicit, the
        # forward derivative of mse_loss's backward writes into an immutable ZeroTensor (torch 2.x)
        target_tangent = torch.zeros_like(targets) if targets.is_floating_point() else None

        def product(*tangents: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if target_tangent is None:
                return tuple(jvp(lambda tensors: gradient(tensors, targets), (primals,), (tangents,))[1])
            return tuple(jvp(gradient, (primals, targets), (tangents, target_tangent))[1])

    if vectors[0].shape[0] == 1:
        return [t.unsqueeze(0) for t in product(*(v[0] for v in vectors))]
    return list(vmap(product, randomness="same")(*vectors))


def hessian_reverse_over_reverse(model: FunctionalModel, loss_function: LossFunction, inputs: torch.Tensor,
                                 targets: torch.Tensor, params: Sequence[torch.Tensor], vectors: Tensors,
                                 loss_gradient: LossGradient | None = None, chunk: int | None = None) -> Tensors:
    """The pullback of θ ↦ ∇L(θ) is v ↦ ∇²L v (H is symmetric): built once by ``torch.func.vjp``
    and vmapped over the block cut into near-equal chunks of at most ``chunk`` vectors (one chunk
    if None; a small remainder chunk would cost nearly as much as a full one). ``loss_gradient(f,
    y)``, if given, is ∇_f L as a differentiable function of the outputs f.

    The forward pass runs once, outside vmap: dropout draws one mask for the whole block and
    BatchNorm sees the batch once, as in the other routes."""
    primals = tuple(p.detach() for p in params)
    if loss_gradient is not None:
        def gradient(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            outputs, pullback = vjp(lambda t: model(t, inputs), tensors)
            return pullback(loss_gradient(outputs, targets))[0]
    else:
        gradient = grad(lambda tensors: scalar_loss(loss_function, model(tensors, inputs), targets))
    _, pullback = vjp(gradient, primals)

    def product(*tangents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return pullback(tangents)[0]

    block = vectors[0].shape[0]
    pieces = 1 if chunk is None else -(-block // max(1, chunk))
    sizes = [block // pieces + (i < block % pieces) for i in range(pieces)]
    parts = []
    for piece in zip(*(v.split(sizes) for v in vectors)):
        if piece[0].shape[0] == 1:
            parts.append([t.unsqueeze(0) for t in product(*(v[0] for v in piece))])
        else:
            parts.append(list(vmap(product)(*piece)))
    return parts[0] if len(parts) == 1 else [torch.cat(columns) for columns in zip(*parts)]


class _CountElements(TorchFunctionMode):
    """Sums the elements of the tensors every torch function returns."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.total += value.numel()
        return out


def forward_elements(model: FunctionalModel, params: Sequence[torch.Tensor], inputs: torch.Tensor) -> int:
    """How many elements one forward pass on ``inputs`` produces (its outputs and intermediates):
    a vmapped Hessian pullback holds about that many per vector of a chunk."""
    counter = _CountElements()
    with torch.no_grad(), counter:
        model([p.detach() for p in params], inputs)
    return counter.total


def jacobian_sandwich(model: FunctionalModel, inputs: torch.Tensor, params: Sequence[torch.Tensor],
                      vectors: Tensors, middle: OutputOperator) -> Tensors:
    """Jᵀ M(f, Jv) for each vector; ``middle(f, T)`` maps tangents T (B, *f.shape) to (B, *f.shape)."""
    if vectors[0].shape[0] == 1:
        return _sandwich_one(model, inputs, params, [v[0] for v in vectors], middle)
    primals = tuple(p.detach() for p in params)
    outputs, pullback = vjp(lambda tensors: model(tensors, inputs), primals)
    tangents = vmap(lambda *v: jvp(lambda tensors: model(tensors, inputs), (primals,), (v,))[1],
                    randomness="same")(*vectors)
    cotangents = middle(outputs.detach(), tangents)
    return list(vmap(lambda u: pullback(u)[0])(cotangents))


def _sandwich_one(model: FunctionalModel, inputs: torch.Tensor, params: Sequence[torch.Tensor],
                  vector: Tensors, middle: OutputOperator) -> Tensors:
    # one forward pass with dual numbers gives f (with its backward graph) and Jv together
    with forward_ad.dual_level():
        duals = [forward_ad.make_dual(p, v) for p, v in zip(params, vector)]
        outputs, tangent = forward_ad.unpack_dual(model(duals, inputs))
    if tangent is None or not outputs.requires_grad:  # the outputs do not depend on θ
        return [torch.zeros_like(p).unsqueeze(0) for p in params]
    cotangent = middle(outputs.detach(), tangent.unsqueeze(0))[0]
    pulled = torch.autograd.grad(outputs, params, cotangent, materialize_grads=True)
    return [g.unsqueeze(0) for g in pulled]


def outer_product_operator(gradients: torch.Tensor, scale: float) -> OutputOperator:
    """M(T) = scale/S Σ_s Σ_n e_sn ⟨e_sn, T_n⟩ for per-sample output gradients e (S, N, ...):
    Jᵀ M J = scale/S Σ_s Σ_n g_sn g_snᵀ with g_sn = J_nᵀ e_sn the gradient of sample n."""
    samples, batch = gradients.shape[0], gradients.shape[1]
    flat = gradients.reshape(samples, batch, -1)

    def middle(outputs: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        block = tangents.shape[0]
        coefficients = torch.einsum("snk,bnk->bsn", flat, tangents.reshape(block, batch, -1))
        combined = torch.einsum("bsn,snk->bnk", coefficients, flat) * (scale / samples)
        return combined.reshape(tangents.shape)

    return middle
