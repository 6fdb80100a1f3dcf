"""The non-finite guard of the optimizers with state (KFAC, Shampoo, SOAP, the Muon family), and
the common step of the curvature optimizers.

Their state (Kronecker factors, eigenbases, inverse roots, momentum) outlives a step: one NaN
gradient folded into it poisons every later update. So before any state changes, one fused check
(a single host synchronization) looks at the loss and every gradient; if any is not finite the
step raises and leaves the parameters and the optimizer state exactly as they were.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch

from .validate import check_gradient


def nonfinite_groups(tensor_groups: Sequence[Sequence[torch.Tensor]], *, exact: bool = False) -> torch.Tensor:
    """(G,) bool, on the tensors' device: which groups may hold a nan or inf entry. No host sync.

    One fused reduction, the 2-norm of every tensor (``torch._foreach_norm``): a nan or inf entry
    makes it nan or inf, so a group flagged False is finite. A norm can also overflow (float16
    tensors of norm above 65504): with ``exact=True`` each flagged tensor is checked entry by
    entry instead (an elementwise pass per tensor, for confirming a hit; ``first_nonfinite_group``
    does both).

    Example:
        >>> nonfinite_groups([[torch.ones(2)], [torch.ones(2), torch.tensor([1.0, float("inf")])]])
        tensor([False,  True])
    """
    # an empty tensor (a rank's empty shard) is finite
    owners = [g for g, tensors in enumerate(tensor_groups) for t in tensors if t.numel()]
    tensors = [t for group in tensor_groups for t in group if t.numel()]
    if not tensors:
        device = next((t.device for group in tensor_groups for t in group), None)
        return torch.zeros(len(tensor_groups), dtype=torch.bool, device=device)
    device = tensors[0].device
    if exact:
        bad = torch.stack([~torch.isfinite(t).all().to(device) for t in tensors])
    else:
        norms = torch._foreach_norm(tensors)
        if len({(n.dtype, n.device) for n in norms}) > 1:
            norms = [n.to(device, torch.float32) for n in norms]
        bad = ~torch.isfinite(torch.stack(norms))
    counts = torch.zeros(len(tensor_groups), device=device).index_add_(
        0, torch.tensor(owners, device=device), bad.float())
    return counts > 0


def first_nonfinite_group(tensor_groups: Sequence[Sequence[torch.Tensor]],
                          agree: Callable[[torch.Tensor], torch.Tensor] = lambda flags: flags) -> int | None:
    """Index of the first group with a nan or inf entry, or None: one host synchronization when
    all are finite, a second (exact) pass only when the fused one flags a group. ``agree`` combines
    the flags of every rank where each rank checks only its own shards."""
    if not any(agree(nonfinite_groups(tensor_groups)).tolist()):
        return None
    flags = agree(nonfinite_groups(tensor_groups, exact=True)).tolist()
    return flags.index(True) if any(flags) else None


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
    checked = list(tensors)
    if isinstance(loss, torch.Tensor):
        checked.append(loss.detach() if loss.is_floating_point() else loss.detach().double())
    elif isinstance(loss, (int, float)):
        checked.append(torch.tensor(float(loss)))
    if first_nonfinite_group([checked]) is not None:
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
