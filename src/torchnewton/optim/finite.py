"""The non-finite guard of the curvature optimizers (KFAC, Shampoo, SOAP), and their common step.

Their state (Kronecker factors, eigenbases, inverse roots) outlives a step: one NaN gradient
folded into a factor poisons every later preconditioner. So before any state changes, one fused
check (a single host synchronization) looks at the loss and every gradient; if any is not
finite the step raises and leaves the parameters and the optimizer state exactly as they were.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from .validate import check_gradient


def check_finite_step(loss: Any, tensors: Iterable[torch.Tensor], optimizer: str) -> None:
    """Raise ``FloatingPointError`` if ``loss`` (when a tensor or number) or any of ``tensors`` has
    a nan or inf entry.

    Example:
        >>> check_finite_step(torch.tensor(1.0), [torch.ones(3)], "SOAP")
        >>> check_finite_step(float("nan"), [], "SOAP")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FloatingPointError: SOAP.step: the loss or a gradient has nan or inf entries; ...
    """
    tensors = list(tensors)
    # max |x| is nan for a nan entry and inf for an inf one, and cannot overflow as a sum of squares can.
    peaks = [p.float() for p in torch._foreach_norm(tensors, float("inf"))] if tensors else []
    if isinstance(loss, torch.Tensor):
        peaks.append(loss.detach().abs().max().float())
    elif isinstance(loss, (int, float)):
        peaks.append(torch.tensor(float(loss)))
    if not peaks:
        return
    device = peaks[0].device
    if not bool(torch.isfinite(torch.stack([p.to(device) for p in peaks])).all()):
        raise FloatingPointError(
            f"{optimizer}.step: the loss or a gradient has nan or inf entries; the step was not taken "
            "and the optimizer state is unchanged")


def guarded_closure(optimizer: torch.optim.Optimizer,
                    closure: Callable[[], Any] | None) -> tuple[Any, list[torch.Tensor]]:
    """Evaluate ``closure`` (with gradients enabled), then refuse sparse or complex gradients and
    non-finite values; return the loss and the parameters that have a gradient.

    The shared head of ``step`` for optimizers whose state must never see a bad gradient.
    """
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    name = type(optimizer).__name__
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    for p in params:
        check_gradient(p, name)
    check_finite_step(loss, [p.grad for p in params], name)
    return loss, params


class GuardedOptimizer(torch.optim.Optimizer):
    """An optimizer that updates each parameter on its own (``_update``) after one guarded closure
    evaluation, and validates every param group it is given (``_check_hyperparameters``)."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)

    def _check_hyperparameters(self, h: dict[str, Any]) -> None:
        raise NotImplementedError  # each optimizer names its own hyperparameters

    def _update(self, p: torch.Tensor, state: dict, group: dict[str, Any]) -> None:
        raise NotImplementedError  # each optimizer's own per-parameter update

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient; ``closure`` re-evaluates the loss.

        Raises ``FloatingPointError`` (state untouched) if the loss or a gradient is not finite.
        """
        loss, _ = guarded_closure(self, closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, self.state[p], group)
        return loss
