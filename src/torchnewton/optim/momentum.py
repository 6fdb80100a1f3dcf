"""The momentum stage: an exponential moving average of gradients, optionally Nesterov.

With buffer B and gradient g, one step is B <- beta B + (1 - beta) g (an EMA, so the update does not
grow by 1 / (1 - beta) the way SGD's heavy ball does), and the direction handed on is

    B                              (classical),
    (1 - beta) g + beta B          (Nesterov: the EMA evaluated one step ahead),

the form of torch.optim.Muon and of Keller Jordan's reference Muon.
"""
from __future__ import annotations

import torch


def ema_momentum(buffers: list[torch.Tensor], grads: list[torch.Tensor], beta: float,
                 nesterov: bool) -> list[torch.Tensor]:
    """Update ``buffers`` in place with ``grads`` and return the directions (new tensors).

    Example:
        >>> b, g = [torch.zeros(2)], [torch.ones(2)]
        >>> ema_momentum(b, g, 0.9, nesterov=True)[0]
        tensor([0.1900, 0.1900])
    """
    if not buffers:
        return []
    torch._foreach_lerp_(buffers, grads, 1.0 - beta)
    if nesterov:
        return torch._foreach_lerp(grads, buffers, beta)
    return [b.clone() for b in buffers]
