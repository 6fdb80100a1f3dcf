"""Saddle-free Newton: the Newton step with the Hessian's eigenvalues replaced by their moduli.

d = −|H|⁻¹∇f with |H| = V diag(max(|λᵢ|, μ)) Vᵀ (Dauphin et al. 2014, "Identifying and
attacking the saddle point problem in high-dimensional non-convex optimization"). Along
directions of negative curvature the step goes downhill instead of towards the saddle, and the
step length there is scaled by the curvature, unlike a shifted Newton step; μ = ``damping``·max|λ|
keeps |H| invertible. The step is globalized by the shared line search.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...globalize.secular import EigenHessian
from .line_search import LineSearchMinimizer
from .problem import ObjectiveProblem
from .state import ObjectiveState


@dataclass
class SaddleFreeNewton(LineSearchMinimizer):
    damping: float = 1e-8

    def direction(self, problem: ObjectiveProblem, state: ObjectiveState) -> torch.Tensor:
        eig = EigenHessian.of(problem.hessian(state.x))
        problem.counters.nlinsolve += 1
        moduli = eig.values.abs()
        floor = self.damping * moduli.amax(-1, keepdim=True).clamp(min=torch.finfo(moduli.dtype).tiny)
        return eig.expand(-eig.coordinates(state.g) / torch.maximum(moduli, floor))
