"""The AdamW stage for the parameters a matrix optimizer does not orthogonalize.

Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019): with bias-corrected
moments m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t),

    theta <- (1 - lr wd) theta - lr m_hat / (sqrt(v_hat) + eps),

evaluated in the same order of operations as torch.optim.AdamW, so the two agree to rounding.
"""
from __future__ import annotations

import torch


def init_adamw_state(state: dict, param: torch.Tensor) -> None:
    if "exp_avg" not in state:
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def adamw_step(params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict], *, lr: float,
               betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """One AdamW step for ``params`` whose ``states`` hold step, exp_avg and exp_avg_sq."""
    if not params:
        return
    beta1, beta2 = betas
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
    for param, state, exp_avg, exp_avg_sq in zip(params, states, exp_avgs, exp_avg_sqs):
        state["step"] += 1
        step = float(state["step"])
        bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-lr / (1.0 - beta1**step))
