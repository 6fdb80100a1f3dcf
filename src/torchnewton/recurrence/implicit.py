"""Gradients of a solved recurrence by implicit differentiation (the adjoint recurrence).

At the solution, ``h_t = f(h_{t-1}, x_t; theta)`` for all t. For a loss L with ``g_t = dL/dh_t``,
differentiating the T equations gives the adjoint (costate) recurrence, run backwards in time
with the *exact* Jacobians at the solution,

    lambda_t = g_t + J_{t+1}^T lambda_{t+1},   lambda_{T+1} = 0,

one reverse linear scan (:func:`.scan.scan_batched` with ``reverse=True``). Then a single
vector-Jacobian product of the batched cell evaluation with cotangent ``lambda`` gives

    dL/dtheta = sum_t lambda_t^T df/dtheta,  dL/dx_t = lambda_t^T df/dx_t,  dL/dh_0 = J_1^T lambda_1.

Nothing of the Newton iterations is stored or backpropagated: memory is that of one evaluation.
For the library's structured cells on the CPU that product is one fused pass
(:func:`.native.cell_vjp`); otherwise torch autograd differentiates the batched cell call.
This is the same gradient as autograd through the sequential loop (DEER, Lim et al. 2024, Sec. 3).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .problem import RecurrenceProblem
from .scan import scan_batched


class ImplicitStates(torch.autograd.Function):
    """Identity on the solved states ``h`` whose backward is the adjoint recurrence.

    ``apply(problem, h, h0, us, *params)``: ``h`` (B, T, d) the detached solution; gradients flow
    to ``h0``, the (preprocessed) inputs ``us`` and ``params``, the tensors the cell's transition
    closes over (an ``nn.Module`` cell's parameters).
    """

    @staticmethod
    def forward(ctx: Any, problem: RecurrenceProblem, h: torch.Tensor, h0: torch.Tensor,
                us: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.problem = problem
        ctx.params = params
        ctx.save_for_backward(h, h0, us)
        return h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, h0, us = ctx.saved_tensors
        problem: RecurrenceProblem = ctx.problem
        B, T, d = h.shape
        h = h.contiguous()
        # the Jacobians at the solution, blocked or fused like every Newton evaluation
        _, jac, _ = problem.residual_and_jacobian(h, "full")
        if problem.structure != "diagonal":
            jac = jac.transpose(-1, -2)
        # Shift by one: lambda_t couples to J_{t+1}; the last coefficient meets lambda_{T+1} = 0.
        jac_next = torch.cat([jac[:, 1:], torch.zeros_like(jac[:, :1])], 1)
        lam = scan_batched(jac_next, grad_h, torch.zeros_like(h0), problem.structure, reverse=True)
        needs_h0, needs_us = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        fused = None if problem.fused_vjp is None else \
            problem.fused_vjp(problem.h0, h, problem.us, lam.contiguous(), ctx.params)
        if fused is not None:
            grad_us, grad_all = fused
            # dL/dh_0 = J_1^T lambda_1 (jac is transposed already)
            grad_h0 = jac[:, 0] * lam[:, 0] if problem.structure == "diagonal" else \
                (jac[:, 0] @ lam[:, 0].reshape(B, *jac.shape[2:-1], 1)).reshape(B, d)
            return (None, None, grad_h0 if needs_h0 else None, grad_us if needs_us else None, *grad_all)
        params = [p for p in ctx.params if p.requires_grad]
        with torch.enable_grad():
            prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], 1).reshape(B * T, d).detach().requires_grad_(needs_h0)
            u_rows = us.reshape(B * T, -1).detach().requires_grad_(needs_us)
            out = problem.transition(prev, u_rows)
            inputs = [t for t in (prev, u_rows) if t.requires_grad] + params
            grads = list(torch.autograd.grad(out, inputs, lam.reshape(B * T, d), allow_unused=True)) if inputs else []
        grad_h0 = grads.pop(0).reshape(B, T, d)[:, 0] if needs_h0 else None
        grad_us = grads.pop(0).reshape(us.shape) if needs_us else None
        grad_params = iter(grads)
        grad_all = [next(grad_params) if p.requires_grad else None for p in ctx.params]
        return (None, None, grad_h0, grad_us, *grad_all)
