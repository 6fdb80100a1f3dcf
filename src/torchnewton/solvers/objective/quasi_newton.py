"""Quasi-Newton baselines on the shared line searches: BFGS and L-BFGS (strong Wolfe by default).

BFGS keeps the inverse Hessian approximation Hₖ and updates it with s = xₖ₊₁ − xₖ,
y = ∇fₖ₊₁ − ∇fₖ, ρ = 1/yᵀs:  Hₖ₊₁ = (I − ρsyᵀ) Hₖ (I − ρysᵀ) + ρssᵀ, starting from
H₀ = (yᵀs / yᵀy) I after the first step (Nocedal & Wright §6.1, eq. 6.20). L-BFGS keeps the last
m pairs and applies Hₖ by the two-loop recursion (Nocedal 1980; N&W Alg. 7.4), with empty slots
(ρ = 0) contributing nothing, so members of a batch may hold different numbers of pairs.
A pair with yᵀs ≤ ε‖s‖‖y‖ (possible only without the Wolfe curvature condition) is skipped.
When a search fails with a non-trivial memory, the memory is dropped and the member retries
along −∇f; only a failure from the steepest-descent restart is final.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ...globalize.members import lean
from .line_search import _FALSE, _TRUE, LineSearchMinimizer, SearchOutcome
from .problem import ObjectiveProblem
from .state import ObjectiveState


@dataclass
class BFGSState(ObjectiveState):
    inverse_hessian: torch.Tensor  # (B, n, n)
    has_memory: torch.Tensor  # (B,) bool: H differs from the identity


@dataclass
class LBFGSState(ObjectiveState):
    s: torch.Tensor  # (B, m, n), newest pair last
    y: torch.Tensor  # (B, m, n)
    rho: torch.Tensor  # (B, m), 0 for empty slots
    gamma: torch.Tensor  # (B,) initial scaling yᵀs / yᵀy of the newest pair


def _curvature_pairs(old: ObjectiveState, outcome: SearchOutcome) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, y, yᵀs, usable mask) of the step just taken."""
    s, y = outcome.step, outcome.g - old.g
    sy = (s * y).sum(-1)
    usable = outcome.ok & (sy > torch.finfo(s.dtype).eps * s.norm(dim=-1) * y.norm(dim=-1)) & torch.isfinite(sy)
    return s, y, sy, usable


def _restart(new: ObjectiveState, outcome: SearchOutcome, has_memory: torch.Tensor):
    """Members whose search failed with a memory retry from scratch instead of failing."""
    reset = ~outcome.ok & has_memory
    failure = torch.where(reset, torch.zeros_like(new.failure), new.failure)
    return reset, failure


def _first_step(state: ObjectiveState, has_memory: torch.Tensor) -> torch.Tensor:
    """α₀ = 1/‖∇f‖ along −∇f before any curvature is known (a unit-length first step), else 1."""
    g_norm = state.g.norm(dim=-1).clamp(min=torch.finfo(state.g.dtype).tiny)
    return torch.where(has_memory, torch.ones_like(g_norm), torch.clamp(1 / g_norm, max=1.0))


@dataclass
class BFGS(LineSearchMinimizer):
    def make_state(self, problem: ObjectiveProblem, fields: dict) -> BFGSState:
        x = fields["x"]
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1).clone()
        return BFGSState(**fields, inverse_hessian=eye, has_memory=torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))

    def initial_step(self, state: BFGSState) -> torch.Tensor:
        return _first_step(state, state.has_memory)

    def direction(self, problem: ObjectiveProblem, state: BFGSState) -> torch.Tensor:
        return -torch.einsum("bij,bj->bi", state.inverse_hessian, state.g)

    def update(self, problem: ObjectiveProblem, old: BFGSState, new: BFGSState, outcome: SearchOutcome) -> BFGSState:
        if lean(old.x):
            return self._update_one(old, new, outcome)
        s, y, sy, usable = _curvature_pairs(old, outcome)
        H = old.inverse_hessian
        eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)
        yy = (y * y).sum(-1).clamp(min=torch.finfo(s.dtype).tiny)
        # the first pair rescales the identity before it is updated (N&W eq. 6.20)
        H = torch.where(old.has_memory.view(-1, 1, 1), H, (sy / yy).view(-1, 1, 1) * eye)
        rho = torch.where(usable, 1 / torch.where(usable, sy, torch.ones_like(sy)), torch.zeros_like(sy))
        updated = _inverse_update(H, s, y, rho.view(-1, 1, 1), eye)
        H = torch.where(usable.view(-1, 1, 1), updated, old.inverse_hessian)
        reset, failure = _restart(new, outcome, old.has_memory)
        H = torch.where(reset.view(-1, 1, 1), eye.expand_as(H), H)
        has_memory = (old.has_memory | usable) & ~reset
        return replace(new, inverse_hessian=H, has_memory=has_memory, failure=failure)

    def _update_one(self, old: BFGSState, new: BFGSState, outcome: SearchOutcome) -> BFGSState:
        """The same update for one problem, its decisions taken on Python floats."""
        ok, has_memory = bool(outcome.ok), bool(old.has_memory)
        if not ok:
            if not has_memory:
                return new
            # restart along −∇f: drop the memory, clear the search failure
            eye = torch.eye(old.x.shape[-1], dtype=old.x.dtype).expand_as(old.inverse_hessian)
            return replace(new, inverse_hessian=eye, has_memory=_FALSE, failure=torch.zeros_like(new.failure))
        s, y = outcome.step, outcome.g - old.g
        sy, s_norm, y_norm = float((s * y).sum()), float(s.norm()), float(y.norm())
        if not (sy > torch.finfo(s.dtype).eps * s_norm * y_norm and math.isfinite(sy)):
            return new
        eye = torch.eye(s.shape[-1], dtype=s.dtype)
        H = old.inverse_hessian
        if not has_memory:
            H = sy / max(float((y * y).sum()), torch.finfo(s.dtype).tiny) * eye
        return replace(new, inverse_hessian=_inverse_update(H, s, y, 1 / sy, eye), has_memory=_TRUE)


def _inverse_update(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, rho: torch.Tensor | float,
                    eye: torch.Tensor) -> torch.Tensor:
    """Hₖ₊₁ = (I − ρsyᵀ) Hₖ (I − ρysᵀ) + ρssᵀ."""
    left = eye - rho * torch.einsum("bi,bj->bij", s, y)
    return left @ H @ left.transpose(-1, -2) + rho * torch.einsum("bi,bj->bij", s, s)


@dataclass
class LBFGS(LineSearchMinimizer):
    memory: int = 10

    def make_state(self, problem: ObjectiveProblem, fields: dict) -> LBFGSState:
        x = fields["x"]
        batch, n = x.shape
        return LBFGSState(**fields, s=x.new_zeros(batch, self.memory, n), y=x.new_zeros(batch, self.memory, n),
                          rho=x.new_zeros(batch, self.memory), gamma=x.new_ones(batch))

    def initial_step(self, state: LBFGSState) -> torch.Tensor:
        return _first_step(state, state.rho[:, -1] > 0)

    def direction(self, problem: ObjectiveProblem, state: LBFGSState) -> torch.Tensor:
        q = state.g.clone()
        alphas = []
        for i in reversed(range(self.memory)):
            a = state.rho[:, i] * (state.s[:, i] * q).sum(-1)
            q = q - a.unsqueeze(-1) * state.y[:, i]
            alphas.append(a)
        r = state.gamma.unsqueeze(-1) * q
        for i, a in zip(range(self.memory), reversed(alphas)):
            b = state.rho[:, i] * (state.y[:, i] * r).sum(-1)
            r = r + (a - b).unsqueeze(-1) * state.s[:, i]
        return -r

    def update(self, problem: ObjectiveProblem, old: LBFGSState, new: LBFGSState, outcome: SearchOutcome) -> LBFGSState:
        s, y, sy, usable = _curvature_pairs(old, outcome)
        safe_sy = torch.where(usable, sy, torch.ones_like(sy))
        shift = lambda buffer, item: torch.cat([buffer[:, 1:], item.unsqueeze(1)], dim=1)
        keep = lambda mask, a, b: torch.where(mask.view((-1,) + (1,) * (a.dim() - 1)), a, b)
        S, Y = keep(usable, shift(old.s, s), old.s), keep(usable, shift(old.y, y), old.y)
        rho = keep(usable, shift(old.rho, 1 / safe_sy), old.rho)
        gamma = torch.where(usable, sy / (y * y).sum(-1).clamp(min=torch.finfo(s.dtype).tiny), old.gamma)
        reset, failure = _restart(new, outcome, old.rho[:, -1] > 0)
        rho = torch.where(reset.unsqueeze(-1), torch.zeros_like(rho), rho)
        gamma = torch.where(reset, torch.ones_like(gamma), gamma)
        return replace(new, s=S, y=Y, rho=rho, gamma=gamma, failure=failure)
