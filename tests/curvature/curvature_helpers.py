"""Small float64 models and dense references for the curvature tests: full Hessians by
torch.autograd.functional.hessian, Jacobians by torch.autograd.functional.jacobian, loss Hessians
on the outputs by autograd (not the closed forms under test), per-sample gradients by a loop."""
from __future__ import annotations

import torch
from torch.func import functional_call

from torchnewton.curvature import flatten, trainable_parameters, unflatten

F64 = torch.float64


def mlp(seed: int = 0, sizes: tuple[int, ...] = (3, 4, 3)) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).to(F64)


def conv_net(seed: int = 0) -> torch.nn.Module:
    """(N, 2, 4, 4) → per-pixel logits (N, 3, 4, 4)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(),
                               torch.nn.Conv2d(3, 3, 1)).to(F64)


def classification_batch(n: int = 7, features: int = 3, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, dtype=F64, generator=g), torch.randint(0, classes, (n,), generator=g)


def regression_batch(n: int = 7, features: int = 3, outputs: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, dtype=F64, generator=g), torch.randn(n, outputs, dtype=F64, generator=g)


def _function(model):
    names, params = trainable_parameters(model)
    theta = flatten(params).detach()

    def outputs(flat, inputs):
        return functional_call(model, dict(zip(names, unflatten(flat, params))), (inputs,))

    return theta, outputs


def batch_weights(batches, reduction):
    total = sum(x.shape[0] for x, _ in batches)
    return [x.shape[0] / total if reduction == "mean" else 1.0 for x, _ in batches]


def dense_hessian(model, loss, batches, reduction="mean"):
    theta, outputs = _function(model)

    def full_loss(flat):
        return sum(w * loss(outputs(flat, x), y) for (x, y), w in zip(batches, batch_weights(batches, reduction)))

    return torch.autograd.functional.hessian(full_loss, theta)


def output_jacobian(model, inputs):
    theta, outputs = _function(model)
    return torch.autograd.functional.jacobian(lambda flat: outputs(flat, inputs).reshape(-1), theta)


def dense_gauss_newton(model, loss, batches, reduction="mean"):
    theta, outputs = _function(model)
    total = 0
    for (x, y), w in zip(batches, batch_weights(batches, reduction)):
        out = outputs(theta, x).detach()
        loss_hessian = torch.autograd.functional.hessian(lambda f: loss(f.reshape(out.shape), y), out.reshape(-1))
        J = output_jacobian(model, x)
        total = total + w * J.T @ loss_hessian @ J
    return total


def mean_divisor(loss, outputs):
    """R: the number of terms a 'mean' reduction divides by."""
    if loss.reduction == "sum":
        return 1.0
    return outputs.numel() / (outputs.shape[1] if isinstance(loss, torch.nn.CrossEntropyLoss) else 1)


def per_sample_gradients(model, loss, inputs, targets):
    """Rows ∇_θ ℓ_n of the unreduced per-sample losses."""
    theta, outputs = _function(model)
    summed = type(loss)(reduction="sum")
    rows = [torch.autograd.functional.jacobian(lambda flat: summed(outputs(flat, inputs[i:i + 1]), targets[i:i + 1]),
                                               theta) for i in range(inputs.shape[0])]
    return torch.stack(rows)


def dense_empirical_fisher(model, loss, batches, reduction="mean"):
    theta, outputs = _function(model)
    total = 0
    for (x, y), w in zip(batches, batch_weights(batches, reduction)):
        grads = per_sample_gradients(model, loss, x, y)
        total = total + w * grads.T @ grads / mean_divisor(loss, outputs(theta, x))
    return total


def relative_error(a, b):
    return float((a - b).norm() / b.norm())
