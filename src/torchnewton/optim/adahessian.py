"""AdaHessian: Adam with the Hessian diagonal in place of the squared gradient.

Yao, Gholami, Shen, Mustafa, Keutzer & Mahoney, "ADAHESSIAN: An Adaptive Second Order Optimizer
for Machine Learning" (AAAI 2021). Per parameter tensor, at step t:

    D   = z ⊙ (H z),  z Rademacher                  (Hutchinson: E[D] = diag H)
    D̄   = mean of |D| over the spatial dims of a convolution kernel (ndim ≥ 3), else D
    m   ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) D̄ ⊙ D̄
    θ   ← θ − lr · (m / (1 − β₁ᵗ)) / ((v / (1 − β₂ᵗ))^{k/2} + ε)

with Hessian power k ∈ [0, 1] (k = 1: the paper's update; k = 0: SGD with momentum). H z comes
from one double-backward pass through the gradients, so the closure (or the code before
``step()``) must call ``loss.backward(create_graph=True)``; gradients without a graph raise a
``RuntimeError``. After the step the gradients are detached in place, which frees that graph
(the reference cycle parameter → grad → graph → parameter that ``create_graph`` otherwise leaves).

Weight decay: decoupled by default, θ ← (1 − lr·wd) θ before the update (the paper's form, AdamW's
rule); with ``decoupled_weight_decay=False`` the L2 penalty ½wd‖θ‖² is added to the loss instead,
so wd·θ joins the gradient and wd (its exact Hessian diagonal) joins D before the averaging.

The Rademacher vectors come from the optimizer's own generator, seeded by ``seed`` (by default
``torch.initial_seed()``, so ``torch.manual_seed`` governs it while the global stream is left
untouched); its state is part of ``state_dict()``, so a run resumed from a checkpoint draws the
same vectors and continues bit for bit.

Differences from ``pytorch_optimizer.AdaHessian`` (whose update coincides with this one for
parameters of ndim ≤ 2, Rademacher sampling and decoupled decay): it draws z from torch's global
generator, does not average over kernel positions, and its coupled weight decay leaves the
Hessian estimate unchanged. The original implementation averages 4-d kernels only; here every
kernel of ndim ≥ 3 (1-d, 2-d and 3-d convolutions) is averaged over its trailing dims.

Example:
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = AdaHessian(model.parameters(), lr=0.1, seed=0)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = model(torch.randn(8, 4)).square().mean()
    ...     loss.backward(create_graph=True)
    ...     return loss
    >>> loss = opt.step(closure)
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from .parameter_derivatives import hutchinson_sample
from .validate import check_betas, check_gradient, check_nonnegative, check_positive, check_unit_interval

_GENERATOR_KEY = "rademacher_generator"


class AdaHessian(torch.optim.Optimizer):
    """Adam whose second moment is the squared Hutchinson estimate of the Hessian diagonal.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (the paper's default 0.15).
        betas: (β₁, β₂), the decay rates of the gradient and Hessian-diagonal moments.
        eps: added to the denominator (the paper's default 1e-4).
        weight_decay: decoupled (default) or L2 weight decay coefficient, see the module docs.
        hessian_power: k in [0, 1].
        decoupled_weight_decay: False: L2 penalty in the loss, with its Hessian diagonal.
        spatial_averaging: average |D| over the kernel positions of parameters with ndim ≥ 3.
        seed: seed of the Rademacher generator (None: ``torch.initial_seed()``).
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.15, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-4, weight_decay: float = 0.0, *, hessian_power: float = 1.0,
                 decoupled_weight_decay: bool = True, spatial_averaging: bool = True,
                 seed: int | None = None) -> None:
        check_nonnegative("lr", lr)
        check_betas("betas", betas)
        check_positive("eps", eps)
        check_nonnegative("weight_decay", weight_decay)
        check_unit_interval("hessian_power", hessian_power, closed_right=True)
        for name, flag in (("decoupled_weight_decay", decoupled_weight_decay),
                           ("spatial_averaging", spatial_averaging)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, hessian_power=hessian_power,
                        decoupled_weight_decay=decoupled_weight_decay, spatial_averaging=spatial_averaging)
        super().__init__(params, defaults)
        device = self.param_groups[0]["params"][0].device
        if seed is None:  # follow torch.manual_seed without consuming the global generator's stream
            seed = torch.initial_seed()
        self._generator = torch.Generator(device=device).manual_seed(seed)

    # ------------------------------------------------------------------ torch.optim contract

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state dict plus the Rademacher generator's state."""
        state = super().state_dict()
        state[_GENERATOR_KEY] = self._generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        generator_state = state_dict.pop(_GENERATOR_KEY, None)
        if generator_state is None:
            raise ValueError(f"state_dict has no {_GENERATOR_KEY!r}: it was not saved by AdaHessian")
        super().load_state_dict(state_dict)
        self._generator.set_state(generator_state)

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient; ``closure`` must call
        ``loss.backward(create_graph=True)`` (or the caller must have, before ``step()``)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        for p in params:
            check_gradient(p, "AdaHessian")
        grads = [p.grad for p in params]
        if not any(g.requires_grad for g in grads):
            raise RuntimeError("AdaHessian needs second derivatives but the gradients carry no autograd graph: "
                               "call loss.backward(create_graph=True) in the closure")
        generator_state = self._generator.get_state()
        with torch.enable_grad():
            samples = hutchinson_sample(grads, params, self._generator)
        grads = [g.detach() for g in grads]
        if not all(bool(torch.isfinite(t).all()) for t in grads + samples):
            self._generator.set_state(generator_state)
            self._free_graph(params)
            raise FloatingPointError("non-finite gradient or Hessian estimate; AdaHessian changed neither the parameters "
                               "nor its state")
        estimates = {id(p): (g, d) for p, g, d in zip(params, grads, samples)}
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in estimates:
                    self._update(p, *estimates[id(p)], group)
        self._free_graph(params)
        return loss

    def _update(self, p: torch.Tensor, grad: torch.Tensor, sample: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_hessian_diag_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if wd and not group["decoupled_weight_decay"]:
            grad = grad.add(p, alpha=wd)
            sample = sample + wd
        if group["spatial_averaging"] and p.ndim >= 3:
            sample = sample.abs().mean(dim=tuple(range(2, p.ndim)), keepdim=True).expand_as(p)
        state["step"] += 1
        step = state["step"]
        state["exp_avg"].lerp_(grad, 1.0 - beta1)
        state["exp_hessian_diag_sq"].mul_(beta2).addcmul_(sample, sample, value=1.0 - beta2)
        denominator = (state["exp_hessian_diag_sq"] / (1.0 - beta2**step)).pow_(group["hessian_power"] / 2)
        denominator.add_(group["eps"])
        if wd and group["decoupled_weight_decay"]:
            p.mul_(1.0 - lr * wd)
        p.addcdiv_(state["exp_avg"], denominator, value=-lr / (1.0 - beta1**step))

    @staticmethod
    def _free_graph(params: list[torch.Tensor]) -> None:
        for p in params:
            p.grad = p.grad.detach()
