"""A finite-sum monotone operator F = (1/n) Σᵢ Fᵢ, the resolvent of G, and the oracle counter.

The problem is the monotone inclusion 0 ∈ F(x) + G(x): F: ℝᵈ → ℝᵈ monotone,
⟨F(u) − F(v), u − v⟩ ≥ 0, and Lipschitz; G maximally monotone, known only through its resolvent
J_{τG} = (I + τG)⁻¹ (a proximal map or a projection: G = ∂g gives J_{τG} = prox_{τg}, G the normal
cone of a convex set C gives the projection onto C). A saddle point problem
min_x max_y Φ(x, y) + f(x) − h(y) is the case F(x, y) = (∇ₓΦ, −∇ᵧΦ), G = (∂f, ∂h).

The measure of progress is the natural (forward–backward) residual with unit step,

    r(x) = x − J_G(x − F(x)),   ‖r(x)‖₂ ≤ dist(0, F(x) + G(x)),

zero exactly at solutions; without G it is F(x) itself. Methods pay in *oracle calls*: one call
is one evaluation of one component Fᵢ at one point (a full evaluation of F costs n).

Example:
    >>> import torch
    >>> A = torch.randn(1000, 3, 3, dtype=torch.float64)                 # n = 1000 components
    >>> op = FiniteSumOperator(lambda z, idx: torch.einsum("bij,j->i", A[idx], z) / len(idx),
    ...                        n=1000, lipschitz=float(torch.linalg.matrix_norm(A, 2).square().mean().sqrt()))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ...core.validate import check_positive

Components = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Resolvent = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass
class FiniteSumOperator:
    """F = (1/n) Σᵢ Fᵢ given by a batched callable.

    Args:
        components: ``components(x, indices)`` with x (d,) and ``indices`` an int64 tensor (b,)
            (entries in [0, n), repeats allowed) returns (1/b) Σⱼ F_{indices[j]}(x), shape (d,).
        n: number of components.
        lipschitz: L, the mean-square Lipschitz constant of the components,
            (1/n) Σᵢ ‖Fᵢ(u) − Fᵢ(v)‖² ≤ L² ‖u − v‖² (an upper bound is fine; it sets step sizes).
        full_lipschitz: Lipschitz constant of F itself (≤ L); default L.
        full: optional faster callable for F(x) (all n components); it is counted as n calls.
    """

    components: Components
    n: int
    lipschitz: float
    full_lipschitz: float | None = None
    full: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if not callable(self.components):
            raise TypeError(f"components must be callable, got {type(self.components).__name__}")
        check_positive(self.n, "n", integer=True)
        check_positive(self.lipschitz, "lipschitz")
        if self.full_lipschitz is None:
            self.full_lipschitz = self.lipschitz
        check_positive(self.full_lipschitz, "full_lipschitz")
        if self.full_lipschitz > self.lipschitz * (1 + 1e-12):
            raise ValueError(f"full_lipschitz ({self.full_lipschitz}) cannot exceed the mean-square "
                             f"Lipschitz constant lipschitz ({self.lipschitz})")
        if self.full is not None and not callable(self.full):
            raise TypeError(f"full must be callable, got {type(self.full).__name__}")


class OracleCounter:
    """Evaluates F and its minibatches, counting single-component oracle calls in ``calls``."""

    def __init__(self, operator: FiniteSumOperator, resolvent: Resolvent | None, device: torch.device):
        self.operator, self.resolvent_map = operator, resolvent
        self.all = torch.arange(operator.n, device=device)
        self.calls = 0

    def full(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += self.operator.n
        if self.operator.full is not None:
            return self.operator.full(x)
        return self.operator.components(x, self.all)

    def batch(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        self.calls += int(indices.numel())
        return self.operator.components(x, indices)

    def resolvent(self, x: torch.Tensor, step: float) -> torch.Tensor:
        """J_{step·G}(x) for x (d,) or a batch of one (1, d); the identity without G."""
        if self.resolvent_map is None:
            return x
        return self.resolvent_map(x.reshape(-1), step).reshape(x.shape)

    def residual(self, x: torch.Tensor, Fx: torch.Tensor) -> torch.Tensor:
        """The natural residual x − J_G(x − F(x)) from a known F(x) (no oracle call)."""
        return x - self.resolvent(x - Fx, 1.0)
