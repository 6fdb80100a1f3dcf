"""What K-FAC measures during a forward and backward pass: the two Kronecker factors of a layer.

For a layer s = W a (+ b) (``nn.Linear``; ``nn.Conv2d`` is one such map per output position, a
being the unfolded input patch) with the bias folded in as a last column of W and a trailing 1
in a, and a loss that is the mean over the batch of n per-sample losses ℓ_i, K-FAC approximates
the layer's block of the Fisher / Gauss–Newton matrix by A ⊗ G (Martens & Grosse, "Optimizing
Neural Networks with Kronecker-factored Approximate Curvature", ICML 2015; for convolutions
Grosse & Martens, "A Kronecker-factored approximate Fisher matrix for convolution layers",
ICML 2016, with the "expand" reading of Eschenhagen et al., NeurIPS 2023):

    A = (1 / (n T)) Σ_{i,t} a_it a_itᵀ,       G = (1 / n) Σ_{i,t} g_it g_itᵀ,

where t runs over the T positions of sample i (T = 1 for a Linear on (n, d) inputs) and
g_it = ∂ℓ_i/∂s_it. The backward pass of the mean loss delivers ∂(mean ℓ)/∂s_it = g_it / n, so
G = n Σ (∂L/∂s)(∂L/∂s)ᵀ over all rows.

Which loss the g come from is the ``curvature`` choice:

- "empirical-fisher": the user's own backward pass with the true targets.
- "gauss-newton": an extra backward pass right after the forward, with targets the model itself
  proposes, so that E[g gᵀ] is the Gauss–Newton matrix Jᵀ H J: for cross-entropy one target per
  sample drawn from softmax(logits) (the Monte-Carlo Fisher, which equals the GGN in
  expectation: Martens 2020, "New insights and perspectives on the natural gradient method");
  for the mean-squared error (torch's ``MSELoss()``, H = (2 / C) I) the exact GGN, one backward
  pass per output column c with cotangent sqrt(2 / C) e_c / n.

Gradients are read with tensor hooks registered on each layer's output during the forward pass:
those see the gradient of the output as it was produced, even when an in-place op (ReLU(inplace))
later rewrites the tensor, and they also fire inside ``torch.autograd.grad``, which runs the
Gauss–Newton pass without touching any ``.grad``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

CURVATURES = ("empirical-fisher", "gauss-newton")
LOSSES = ("cross-entropy", "mse")


@dataclass
class Captured:
    """The inputs and output gradients of one layer since the last forward of the model."""
    inputs: list[torch.Tensor] = field(default_factory=list)
    output_grads: list[torch.Tensor] = field(default_factory=list)


def activation_rows(layer: torch.nn.Module, x: torch.Tensor, with_bias: bool) -> torch.Tensor:
    """The rows a_it (one per sample and position), a trailing 1 appended when the bias is trained."""
    if isinstance(layer, torch.nn.Conv2d):
        rows = _conv_patches(layer, x)
    else:
        rows = x.reshape(-1, x.shape[-1])
    if with_bias:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows


def gradient_rows(layer: torch.nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """The rows ∂L/∂s_it of an output gradient: channels last for a convolution."""
    if isinstance(layer, torch.nn.Conv2d):
        grad = grad.movedim(-3, -1)
    return grad.reshape(-1, grad.shape[-1])


def batch_factors(layer: torch.nn.Module, captured: Captured, with_bias: bool,
                  batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A and G of the last forward/backward (every call of the layer in it contributes rows).

    Example:
        >>> layer = torch.nn.Linear(3, 2)
        >>> captured = Captured([torch.ones(4, 3)], [torch.full((4, 2), 0.25)])  # ∂(mean ℓ)/∂s = g / 4
        >>> A, G = batch_factors(layer, captured, with_bias=True, batch_size=4)
        >>> A.shape, G   # G = (1/4) Σ_i g_i g_iᵀ with g_i = (1, 1)
        (torch.Size([4, 4]), tensor([[1., 1.],
                [1., 1.]]))
    """
    a = torch.cat([activation_rows(layer, x, with_bias) for x in captured.inputs])
    g = torch.cat([gradient_rows(layer, dy) for dy in captured.output_grads])
    return a.mT @ a / a.shape[0], (g.mT @ g) * batch_size


def gauss_newton_backward(output: torch.Tensor, loss: str, weights: list[torch.Tensor]) -> None:
    """Backpropagate the Gauss–Newton targets through the graph of ``output`` (the hooks collect).

    The parameter gradients this computes are discarded; ``.grad`` is not touched and the graph is
    kept for the user's own backward.
    """
    if output.ndim != 2:
        raise ValueError(f"curvature='gauss-newton' needs a model output of shape (batch, outputs); "
                         f"got shape {tuple(output.shape)}")
    n, C = output.shape
    if not bool(torch.isfinite(output).all()):
        return  # no targets to draw; the non-finite loss stops the step that follows
    if loss == "cross-entropy":
        with torch.no_grad():
            targets = torch.multinomial(torch.softmax(output.detach(), dim=-1), 1).squeeze(-1)
        torch.autograd.grad(F.cross_entropy(output, targets), weights, retain_graph=True, allow_unused=True)
        return
    scale = math.sqrt(2.0 / C) / n
    for c in range(C):
        cotangent = torch.zeros_like(output)
        cotangent[:, c] = scale
        torch.autograd.grad(output, weights, grad_outputs=cotangent, retain_graph=True, allow_unused=True)


def _conv_patches(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Input patches (N·T, C_in·kh·kw), ordered as ``conv.weight.reshape(C_out, -1)``'s columns."""
    if x.ndim == 3:
        x = x.unsqueeze(0)
    padding = conv.padding
    if isinstance(padding, str):
        if padding == "same":
            # torch pads "same" with the odd one out on the right/bottom; F.pad lists the last dim first.
            pads = []
            for dilation, size in zip(reversed(conv.dilation), reversed(conv.kernel_size)):
                total = dilation * (size - 1)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        padding = (0, 0)
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride)
    return cols.mT.reshape(-1, cols.shape[1])
