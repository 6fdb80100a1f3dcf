"""What the Gauss–Newton and Fisher matrices need from a loss, in closed form on the outputs.

For a loss L(f) = (1/R) Σ_i ℓ(f_i, y_i) of the model outputs f, R the reduction divisor
(R = 1 for ``reduction='sum'``; for ``'mean'`` the number of averaged terms), these give

* ``hessian_product``: ∇²_f L · u, exactly —
  MSE: ℓ = ‖f − y‖² so ∇²L = (2/R) I;
  cross-entropy: ℓ = −log softmax(f)_y so ∇²ℓ = diag(p) − ppᵀ with p = softmax(f), per term;
* ``gradients``: the unreduced per-term gradients ∇_f ℓ(f, y) (MSE: 2(f − y); CE: p − onehot(y));
* ``reduced_gradient``: ∇_f L = (1/R)·those, differentiable in f, so that forward-mode AD through
  it gives ∇²_f L · u without autograd's generic loss backward;
* ``sample_targets``: y ~ q(·|f), the model's predictive distribution with −log q = ℓ + const
  (MSE: y ~ N(f, ½I); CE: y ~ Categorical(p)), so that E_y[∇ℓ ∇ℓᵀ] = ∇²ℓ — the Fisher equals
  the Gauss–Newton matrix for these losses (Martens 2020, "New insights and perspectives on the
  natural gradient method", §9.2).

Example:
    >>> loss = output_loss(torch.nn.CrossEntropyLoss())
    >>> f = torch.randn(4, 3); u = torch.randn(4, 3)
    >>> loss.hessian_product(f, u).shape
    torch.Size([4, 3])
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

SUPPORTED = "torch.nn.MSELoss or torch.nn.CrossEntropyLoss with reduction 'mean' or 'sum'"


class OutputLoss(ABC):
    """A supported loss, seen as a function of the model outputs."""

    def __init__(self, module: torch.nn.Module):
        if module.reduction not in ("mean", "sum"):
            raise ValueError(f"loss_function must reduce to a scalar (reduction 'mean' or 'sum'), "
                             f"got reduction={module.reduction!r}")
        self.module, self.reduction = module, module.reduction

    @abstractmethod
    def check(self, outputs: torch.Tensor, targets: torch.Tensor, where: str) -> None:
        """Raise if outputs and targets do not fit this loss."""

    @abstractmethod
    def num_terms(self, outputs: torch.Tensor) -> int:
        """R for reduction 'mean': how many terms the loss averages."""

    def scale(self, outputs: torch.Tensor) -> float:
        """1/R: the factor between the summed per-term losses and the reduced loss."""
        return 1.0 / self.num_terms(outputs) if self.reduction == "mean" else 1.0

    @abstractmethod
    def hessian_product(self, outputs: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        """∇²_f L(f) · u for u of shape (..., *outputs.shape), the reduction included."""

    @abstractmethod
    def gradients(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-term ∇_f ℓ(f, y) without the reduction, for targets with optional leading dims."""

    @abstractmethod
    def sample_targets(self, outputs: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
        """``samples`` draws y ~ q(·|f), stacked on a new leading dimension."""

    @abstractmethod
    def reduced_gradient(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """∇_f L(f, y), the reduction included, as a differentiable function of f."""


class MeanSquaredError(OutputLoss):
    def check(self, outputs: torch.Tensor, targets: torch.Tensor, where: str) -> None:
        if not targets.is_floating_point():
            raise TypeError(f"{where}: MSELoss needs floating targets, got {targets.dtype}")
        if targets.shape != outputs.shape:
            raise ValueError(f"{where}: MSELoss needs targets shaped like the model outputs "
                             f"{tuple(outputs.shape)}, got {tuple(targets.shape)}")

    def num_terms(self, outputs: torch.Tensor) -> int:
        return outputs.numel()

    def hessian_product(self, outputs: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        return tangents * (2.0 * self.scale(outputs))

    def gradients(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 2.0 * (outputs - targets)

    def sample_targets(self, outputs: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn((samples, *outputs.shape), generator=generator, dtype=outputs.dtype,
                            device=outputs.device)
        return outputs.detach() + math.sqrt(0.5) * noise

    def reduced_gradient(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (outputs - targets) * (2.0 * self.scale(outputs))


class CrossEntropy(OutputLoss):
    """Class-index targets; logits (N, C) or (N, C, d₁, …) with targets (N,) or (N, d₁, …)."""

    def __init__(self, module: torch.nn.CrossEntropyLoss):
        super().__init__(module)
        if module.weight is not None:
            raise ValueError("CrossEntropyLoss with class weights is not supported (its Hessian "
                             "is not diag(p) − ppᵀ); pass weight=None")
        if module.label_smoothing != 0.0:
            raise ValueError("CrossEntropyLoss with label_smoothing is not supported; pass label_smoothing=0")

    def check(self, outputs: torch.Tensor, targets: torch.Tensor, where: str) -> None:
        if outputs.dim() < 2:
            raise ValueError(f"{where}: CrossEntropyLoss needs model outputs of shape (N, C, ...), "
                             f"got {tuple(outputs.shape)}")
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError(f"{where}: the Gauss-Newton and Fisher matrices of CrossEntropyLoss need "
                            f"class-index targets (an integer dtype), got {targets.dtype}")
        expected = (outputs.shape[0], *outputs.shape[2:])
        if tuple(targets.shape) != expected:
            raise ValueError(f"{where}: CrossEntropyLoss needs targets of shape {expected} for outputs "
                             f"{tuple(outputs.shape)}, got {tuple(targets.shape)}")
        classes = outputs.shape[1]
        if bool(((targets < 0) | (targets >= classes)).any()):
            raise ValueError(f"{where}: targets must be class indices in [0, {classes}); found "
                             f"{int(targets.min())}..{int(targets.max())} (ignore_index is not supported)")

    def num_terms(self, outputs: torch.Tensor) -> int:
        return outputs.numel() // outputs.shape[1]

    def _class_dim(self, outputs: torch.Tensor) -> int:
        # counted from the end, so that tensors with extra leading dims index the same axis
        return 1 - outputs.dim()

    def hessian_product(self, outputs: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        dim = self._class_dim(outputs)
        p = torch.softmax(outputs.detach(), dim=dim)
        pu = p * tangents
        return (pu - p * pu.sum(dim, keepdim=True)) * self.scale(outputs)

    def gradients(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        dim = self._class_dim(outputs)
        p = torch.softmax(outputs.detach(), dim=dim)
        onehot = torch.nn.functional.one_hot(targets, outputs.shape[1]).to(p.dtype).movedim(-1, dim)
        return p - onehot

    def sample_targets(self, outputs: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
        classes = outputs.shape[1]
        rows = torch.softmax(outputs.detach(), dim=1).movedim(1, -1).reshape(-1, classes)
        drawn = torch.multinomial(rows, samples, replacement=True, generator=generator)
        return drawn.T.reshape(samples, outputs.shape[0], *outputs.shape[2:])

    def reduced_gradient(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(outputs, dim=1)
        onehot = torch.nn.functional.one_hot(targets, outputs.shape[1]).to(p.dtype).movedim(-1, 1)
        return (p - onehot) * self.scale(outputs)


def output_loss(loss_function: object) -> OutputLoss:
    """The closed-form view of a supported loss module; anything else is a ``TypeError``."""
    if isinstance(loss_function, torch.nn.MSELoss):
        return MeanSquaredError(loss_function)
    if isinstance(loss_function, torch.nn.CrossEntropyLoss):
        return CrossEntropy(loss_function)
    raise TypeError(f"the Gauss-Newton and Fisher matrices need loss_function to be {SUPPORTED}, "
                    f"got {type(loss_function).__name__}; HessianOperator accepts any scalar loss")
