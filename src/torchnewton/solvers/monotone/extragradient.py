"""Deterministic methods for 0 ∈ F(x) + G(x), F monotone and L-Lipschitz: two full evaluations
of F (2n oracle calls) and two resolvents of G per step.

* Extragradient (Korpelevich 1976; with a resolvent, Nemirovski's mirror-prox in the Euclidean
  setup): x̄ = J_{τG}(x − τF(x)), x⁺ = J_{τG}(x − τF(x̄)), τ < 1/L. Its last iterate has residual
  O(1/√k) on monotone problems, linear convergence on strongly monotone or polyhedral ones.
* Extra-anchored gradient, the Halpern iteration on the extragradient step (Yoon & Ryu 2021,
  "Accelerated algorithms for smooth convex-concave minimax problems with O(1/k²) rate on squared
  gradient norm"; with a resolvent, Cai, Oikonomou & Diakonikolas 2022): every step is pulled
  toward the anchor x₀ with weight λ_k = 1/(k + 2),

      x̄ = J_{τG}(λ_k x₀ + (1 − λ_k) x − τF(x)),   x⁺ = J_{τG}(λ_k x₀ + (1 − λ_k) x − τF(x̄)),

  residual O(L‖x₀ − x*‖/k), the optimal rate for monotone Lipschitz F. With ``restart`` the
  anchor moves to the current point whenever the residual has halved since the anchor was set
  (an adaptive restart; linear convergence on sharp problems, Cai et al. 2022).

Example:
    >>> import torch
    >>> from torchnewton.solvers.monotone.solve import monotone_inclusion
    >>> from torchnewton.solvers.monotone.operator import FiniteSumOperator
    >>> S = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)   # min_x max_y x·y
    >>> op = FiniteSumOperator(lambda z, idx: S @ z, n=1, lipschitz=1.0)
    >>> res = monotone_inclusion(op, torch.ones(2, dtype=torch.float64), method="extragradient", tol=1e-8)
    >>> bool(res.success), float(res.x.abs().max()) < 1e-7
    (True, True)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .operator import OracleCounter
from .state import MonotoneState, MonotoneTermination, measured, moved, record


@dataclass
class Extragradient:
    termination: MonotoneTermination
    step_size: float  # τ

    def init(self, oracle: OracleCounter, x0: torch.Tensor) -> MonotoneState:
        return MonotoneState(**measured(oracle, x0, oracle.full(x0[0]).unsqueeze(0)))

    def base(self, state: MonotoneState) -> torch.Tensor:
        """The point both half steps start from: x itself (the anchored variant pulls it to x₀)."""
        return state.x

    def extragradient_step(self, oracle: OracleCounter, state: MonotoneState) -> tuple[torch.Tensor, torch.Tensor]:
        base, tau = self.base(state), self.step_size
        middle = oracle.resolvent(base - tau * state.fun, tau)
        x = oracle.resolvent(base - tau * oracle.full(middle[0]).unsqueeze(0), tau)
        return x, oracle.full(x[0]).unsqueeze(0)

    def step(self, oracle: OracleCounter, state: MonotoneState, running: torch.Tensor) -> MonotoneState:
        return moved(oracle, state, *self.extragradient_step(oracle, state))

    def terminate(self, oracle: OracleCounter, state: MonotoneState):
        return self.termination(state)

    def record(self, oracle: OracleCounter, state: MonotoneState) -> dict:
        return record(state)



@dataclass
class AnchoredState(MonotoneState):
    anchor: torch.Tensor  # (1, d) x₀, or the point of the last restart
    anchor_residual: torch.Tensor  # (1,) the residual there
    k: torch.Tensor  # (1,) steps since the anchor was set


@dataclass
class ExtraAnchoredGradient(Extragradient):
    restart: bool = False

    def init(self, oracle: OracleCounter, x0: torch.Tensor) -> AnchoredState:
        fields = measured(oracle, x0, oracle.full(x0[0]).unsqueeze(0))
        return AnchoredState(**fields, anchor=x0, anchor_residual=fields["residual"],
                             k=torch.zeros(1, dtype=torch.long, device=x0.device))

    def base(self, state: AnchoredState) -> torch.Tensor:
        weight = 1.0 / (float(state.k[0]) + 2.0)
        return torch.lerp(state.x, state.anchor, weight)

    def step(self, oracle: OracleCounter, state: AnchoredState, running: torch.Tensor) -> AnchoredState:
        state = moved(oracle, state, *self.extragradient_step(oracle, state), k=state.k + 1)
        return restarted(state) if self.restart else state


def restarted(state: AnchoredState) -> AnchoredState:
    """Move the anchor to the current point once its residual is half the anchor's."""
    if bool((state.residual <= 0.5 * state.anchor_residual).all()):
        return replace(state, anchor=state.x, anchor_residual=state.residual, k=torch.zeros_like(state.k))
    return state
