"""Dense batched Hessians by reverse-over-reverse autograd.

The same quantity as :func:`torchnewton.derivatives.autodiff.hessian`, computed as n
vector-Jacobian products of the gradient's graph batched into one call
(``torch.autograd.grad(..., is_grads_batched=True)``) instead of ``vmap`` over forward-mode
passes. On CPU in torch 2.x that is several times faster for the small dense Hessians the
trust-region and cubic methods factorize (about 2 ms vs 13 ms for n = 30 in one measurement
here), which matters when a Hessian is formed every iteration.
"""
from __future__ import annotations

from typing import Callable

import torch

BatchFunction = Callable[[torch.Tensor], torch.Tensor]


def hessian_reverse(objective: BatchFunction, x: torch.Tensor) -> torch.Tensor:
    """∇²f(x) (B, n, n), symmetrized, for a batched objective f: (B, n) → (B,).

    Example:
        >>> H = hessian_reverse(lambda x: (x**3).sum(-1), torch.tensor([[1.0, 2.0]]))
        >>> H
        tensor([[[ 6.,  0.],
                 [ 0., 12.]]])
    """
    batch, n = x.shape
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(z).sum(), z, create_graph=True)
        basis = torch.eye(n, dtype=x.dtype, device=x.device).unsqueeze(1).expand(n, batch, n)
        if not grad.requires_grad:  # f is affine in x: the Hessian is zero
            return torch.zeros(batch, n, n, dtype=x.dtype, device=x.device)
        (rows,) = torch.autograd.grad(grad, z, grad_outputs=basis, is_grads_batched=True, allow_unused=True)
    if rows is None:
        return torch.zeros(batch, n, n, dtype=x.dtype, device=x.device)
    hess = rows.detach().transpose(0, 1)
    return 0.5 * (hess + hess.transpose(-1, -2))
