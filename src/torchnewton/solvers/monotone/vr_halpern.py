"""Variance-reduced Halpern iteration for finite sums (Cai, Alacaoglu & Diakonikolas, "Variance
Reduced Halpern Iteration for Finite-Sum Monotone Inclusions", ICLR 2024, Algorithm 2).

For F = (1/n) Σᵢ Fᵢ monotone with mean-square Lipschitz constant L, Halpern's iteration runs on
the resolvent of the whole operator, J = (I + η(F + G))⁻¹ (firmly nonexpansive, fixed points =
solutions):

    u_{k+1} = λ_k u₀ + (1 − λ_k) ṽ_k,   ṽ_k ≈ J(u_k),   λ_k = 1/(k + 2),

with a large resolvent step η = √n/L. Each ṽ_k solves the 1-strongly monotone inclusion
0 ∈ Φ(v) + ηG(v), Φ(v) = v − u_k + ηF(v), by the variance-reduced forward-reflected-backward
method (VR-FoRB, Alacaoglu & Malitsky 2022) with the loopless-SVRG estimator: a snapshot w with
its full Φ(w) (n calls), refreshed with probability p; each inner step draws a minibatch B of b
components and costs 2b calls,

    v̄ = (1 − p) v + p w,
    v⁺ = J_{τηG}(v̄ − τ [Φ(w) + Φ_B(v) − Φ_B(w⁻)]),      (w⁻ the previous snapshot)

with τ = θ √(p(1 − p)) / L_Φ, L_Φ = 1 + η (L_F² + L²/b)^{1/2}, p = b/n. The inner solve is
linearly convergent; the paper's schedule runs M_k = O((1/p + L_Φ/√p) log(k + 2)) inner steps,
so that the resolvent errors shrink fast enough for Halpern's O(1/k) rate on
‖u_k − J(u_k)‖/η. The total is Õ(n + √n L ‖u₀ − u*‖/ε) oracle calls for residual ε, up to √n
fewer than the deterministic methods' O(n L ‖u₀ − u*‖/ε). The paper uses single samples
(b = 1, p = 1/n); minibatches with p = b/n keep the same oracle complexity for b ≤ √n and
cut the number of (Python-level) inner steps by b.

Each outer step evaluates F in full at ṽ_k (n calls, counted): for the natural residual that
decides termination, and as the first snapshot of the next inner solve, which starts there.
With ``restart`` the anchor u₀ moves to ṽ_k whenever the residual has halved since it was set.

Example:
    >>> import torch
    >>> from torchnewton.solvers.monotone.solve import monotone_inclusion
    >>> from torchnewton.solvers.monotone.operator import FiniteSumOperator
    >>> g = torch.Generator().manual_seed(0)
    >>> A = torch.randn(400, 2, 2, dtype=torch.float64, generator=g)
    >>> A = A - A.transpose(1, 2) + 0.5 * torch.eye(2, dtype=torch.float64)   # monotone components
    >>> b = torch.randn(400, 2, dtype=torch.float64, generator=g)
    >>> op = FiniteSumOperator(lambda z, i: (A[i] @ z + b[i]).mean(0), n=400, lipschitz=4.0)
    >>> res = monotone_inclusion(op, torch.zeros(2, dtype=torch.float64), tol=1e-6, options={"seed": 0})
    >>> bool(res.success), res.oracle_calls > 0
    (True, True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .extragradient import AnchoredState, restarted
from .operator import OracleCounter
from .state import MonotoneTermination, measured, moved, record


@dataclass
class VarianceReducedHalpernState(AnchoredState):
    u: torch.Tensor  # (1, d) the Halpern iterate whose resolvent the inner solve approximates


@dataclass
class VarianceReducedHalpern:
    termination: MonotoneTermination
    resolvent_step: float  # η
    batch_size: int  # b
    snapshot_probability: float  # p
    inner_step: float  # τ
    inner_scale: float  # constant of the schedule M_k
    generator: torch.Generator
    restart: bool = False

    def inner_iterations(self, k: int) -> int:
        """M_k = ⌈c (1/p + L_Φ/√p) log(k + 2)⌉, written with τ = θ √(p(1 − p))/L_Φ."""
        p = self.snapshot_probability
        per_halving = 1.0 / p + math.sqrt(1.0 - p) / self.inner_step
        return max(1, math.ceil(self.inner_scale * per_halving * math.log(k + 2)))

    def init(self, oracle: OracleCounter, x0: torch.Tensor) -> VarianceReducedHalpernState:
        fields = measured(oracle, x0, oracle.full(x0[0]).unsqueeze(0))
        return VarianceReducedHalpernState(**fields, anchor=x0, anchor_residual=fields["residual"],
                                           k=torch.zeros(1, dtype=torch.long, device=x0.device), u=x0)

    def resolvent(self, oracle: OracleCounter, u: torch.Tensor, v: torch.Tensor, Fv: torch.Tensor,
                  steps: int) -> torch.Tensor:
        """ṽ ≈ J_{η(F+G)}(u) by ``steps`` VR-FoRB steps from v, whose F(v) is known (the first snapshot)."""
        eta, tau, p, n = self.resolvent_step, self.inner_step, self.snapshot_probability, oracle.operator.n
        device = u.device
        batches = torch.randint(n, (steps, self.batch_size), generator=self.generator, device=self.generator.device)
        refresh = (torch.rand(steps, generator=self.generator, device=self.generator.device) < p).tolist()
        batches = batches.to(device)
        snapshot = previous = v
        snapshot_phi = snapshot - u + eta * Fv  # Φ(w)
        for t in range(steps):
            batch = batches[t]
            # Φ_B(v) − Φ_B(w⁻) = (v − w⁻) + η (F_B(v) − F_B(w⁻)); the anchor u cancels
            difference = oracle.batch(v, batch) - oracle.batch(previous, batch)
            estimate = snapshot_phi + (v - previous) + eta * difference
            reference = torch.lerp(v, snapshot, p)
            v = oracle.resolvent(reference - tau * estimate, tau * eta)
            previous = snapshot
            if refresh[t]:
                snapshot = v
                snapshot_phi = v - u + eta * oracle.full(v)
        return v

    def step(self, oracle: OracleCounter, state: VarianceReducedHalpernState, running: torch.Tensor):
        k = int(state.k[0])
        v = self.resolvent(oracle, state.u[0], state.x[0], state.fun[0], self.inner_iterations(k))
        v = v.unsqueeze(0)
        weight = 1.0 / (k + 2.0)
        state = moved(oracle, state, v, oracle.full(v[0]).unsqueeze(0), k=state.k + 1,
                      u=torch.lerp(v, state.anchor, weight))
        if self.restart:
            new = restarted(state)
            if new is not state:  # the Halpern iterate restarts at the new anchor
                return replace(new, u=new.anchor)
        return state

    def terminate(self, oracle: OracleCounter, state: VarianceReducedHalpernState):
        return self.termination(state)

    def record(self, oracle: OracleCounter, state: VarianceReducedHalpernState) -> dict:
        return record(state)
