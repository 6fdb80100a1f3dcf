"""Adaptive cubic regularization (ARC) of Newton's method, with optionally lazy Hessians.

Each iteration minimizes the cubic model m(s) = gᵀs + ½sᵀHs + (σ/3)‖s‖³ globally
(``globalize.cubic``), accepts x + s when ρ = (f(x) − f(x+s)) / (−m(s)) ≥ η₁, and adapts σ:
halved (not below ``min_sigma``) when ρ ≥ η₂, doubled when the step is rejected (Cartis, Gould &
Toint 2011, "Adaptive cubic regularisation methods for unconstrained optimization", Part I).

Lazy Hessians (``lazy = m``): the Hessian, and its eigendecomposition, is recomputed only after
m accepted steps and reused in between with fresh gradients — the model at x is
gᵀs + ½sᵀ∇²f(z)s + (σ/3)‖s‖³ with z the last snapshot (Doikov, Chayti & Jaggi 2023, "Second-order
optimization with lazy Hessians"). With a Hessian costing about n gradients, m ≈ n cuts the
arithmetic cost by about √n compared with m = 1 (their Corollary for the cubic method).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.linalg import vector_norm

from ...core.status import Status
from ...globalize.cubic import cubic_model_decrease, cubic_step
from ...globalize.members import ops_for
from ...globalize.secular import EigenHessian
from ...globalize.rounding import rounding_safe_ratio
from .problem import ObjectiveProblem
from ..evolve import evolve
from .state import ObjectiveState, initial_fields, record

Termination = Callable[[ObjectiveState], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class CubicState(ObjectiveState):
    sigma: torch.Tensor  # (B,) cubic weight
    eigenvalues: torch.Tensor  # (B, n) of the snapshot Hessian
    eigenvectors: torch.Tensor  # (B, n, n)
    hessian: torch.Tensor  # (B, n, n) the snapshot Hessian itself (accurate steps and model values)
    age: torch.Tensor  # (B,) accepted steps since the snapshot


@dataclass
class AdaptiveCubicRegularization:
    termination: Termination
    lazy: int = 1
    initial_sigma: float = 1.0
    min_sigma: float = 1e-8
    eta1: float = 0.1
    eta2: float = 0.9

    def init(self, problem: ObjectiveProblem, x0: torch.Tensor) -> CubicState:
        f, g = problem.value_and_grad(x0)
        eig = EigenHessian.of(problem.hessian(x0))
        problem.counters.nlinsolve += 1
        return CubicState(**initial_fields(x0, f, g), sigma=torch.full_like(f, self.initial_sigma),
                          eigenvalues=eig.values, eigenvectors=eig.vectors, hessian=eig.matrix,
                          age=torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device))

    def step(self, problem: ObjectiveProblem, state: CubicState, running: torch.Tensor) -> CubicState:
        x, g = state.x, state.g
        eig = EigenHessian(state.eigenvalues, state.eigenvectors, state.hessian)
        # per-member scalars through ``o``: (B,) tensors, or Python floats for one problem (lean path)
        o = ops_for(x)
        age = o.value(state.age)
        refresh = age >= self.lazy
        if o.any(refresh):
            fresh = EigenHessian.of(problem.hessian(x))
            eig = fresh.where(refresh, eig) if o.batched else fresh
            problem.counters.nlinsolve += 1
            age = o.where(refresh, o.full(age, 0), age)
        sigma_old = o.value(state.sigma)
        s = cubic_step(eig, g, sigma_old)
        # a batch's (B,) tensor; one member's float (its model value summed on floats)
        predicted = cubic_model_decrease(eig, g, sigma_old, s)
        x_trial = x + s
        f_trial, gradient_at_trial = problem.value_then_gradient(x_trial)
        s_length = vector_norm(s, dim=-1)
        f, trial, s_norm = o.values(state.f, f_trial, s_length)
        if not (o.batched or isinstance(predicted, float)):  # a larger member's, summed by torch
            predicted = predicted.item()
        rho = rounding_safe_ratio(f, trial, predicted, dtype=x.dtype)
        accept = rho >= self.eta1
        x_new = o.where(accept, x_trial, x)
        g_new = o.where(accept, gradient_at_trial(), g) if o.batched or accept else g
        sigma = o.where(rho >= self.eta2, o.clamp(0.5 * sigma_old, min=self.min_sigma),
                        o.where(accept, sigma_old, 2 * sigma_old))
        # σ beyond 1/ε: no step of representable length decreases f any more
        stalled = sigma > 1 / torch.finfo(x.dtype).eps
        if o.batched:
            failure = torch.where(stalled, int(Status.STALLED), state.failure)
            step_norm = torch.where(accept, s_norm, 0.0)
        else:  # values unchanged keep their tensor: none to allocate
            failure = o.pack(int(Status.STALLED), state.failure) if stalled else state.failure
            step_norm = s_length if accept else o.pack(0.0, state.step_norm)
        return evolve(state, x=x_new, f=o.where(accept, f_trial, state.f), g=g_new, step_norm=step_norm,
                      failure=failure, sigma=o.pack(sigma, state.sigma), eigenvalues=eig.values,
                      eigenvectors=eig.vectors, hessian=eig.matrix, age=o.pack(age + accept, state.age))

    def terminate(self, problem: ObjectiveProblem, state: CubicState):
        return self.termination(state)

    def record(self, problem: ObjectiveProblem, state: CubicState) -> dict:
        return {**record(state), "sigma": state.sigma.detach().clone()}
