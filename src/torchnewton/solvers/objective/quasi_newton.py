"""Quasi-Newton baselines on the shared line searches: BFGS and L-BFGS (strong Wolfe by default).

BFGS keeps the inverse Hessian approximation Hₖ and updates it with s = xₖ₊₁ − xₖ,
y = ∇fₖ₊₁ − ∇fₖ, ρ = 1/yᵀs:  Hₖ₊₁ = (I − ρsyᵀ) Hₖ (I − ρysᵀ) + ρssᵀ, starting from
H₀ = (yᵀs / yᵀy) I after the first step (Nocedal & Wright §6.1, eq. 6.20). L-BFGS keeps the last
m pairs and applies Hₖ by the two-loop recursion (Nocedal 1980; N&W Alg. 7.4), with empty slots
(ρ = 0) contributing nothing, so members of a batch may hold different numbers of pairs. The
recursion is written once over its vector arithmetic: (B, n) tensors for a batch; for one small
problem on the CPU (the loop's lean path) coordinates in the basis (∇f, s₁…sₖ, y₁…yₖ) with one
Gram matrix, so a step of the recursion is a few float operations instead of torch calls.
A pair with yᵀs ≤ ε‖s‖‖y‖ (possible only without the Wolfe curvature condition) is skipped.
When a search fails with a non-trivial memory, the memory is dropped and the member retries
along −∇f; only a failure from the steepest-descent restart is final.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
from torch.linalg import vector_norm

from ...globalize.members import identity, lean
from .line_search import _FALSE, _TRUE, LineSearchMinimizer, SearchOutcome
from .problem import ObjectiveProblem
from ..evolve import evolve
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
    usable = outcome.ok & (sy > torch.finfo(s.dtype).eps * vector_norm(s, dim=-1) * vector_norm(y, dim=-1)) & torch.isfinite(sy)
    return s, y, sy, usable


def _restart(new: ObjectiveState, outcome: SearchOutcome, has_memory: torch.Tensor):
    """Members whose search failed with a memory retry from scratch instead of failing."""
    reset = ~outcome.ok & has_memory
    failure = torch.where(reset, torch.zeros_like(new.failure), new.failure)
    return reset, failure


def _first_step(state: ObjectiveState, has_memory: torch.Tensor) -> torch.Tensor:
    """α₀ = 1/‖∇f‖ along −∇f before any curvature is known (a unit-length first step), else 1."""
    g_norm = vector_norm(state.g, dim=-1).clamp(min=torch.finfo(state.g.dtype).tiny)
    return torch.where(has_memory, torch.ones_like(g_norm), torch.clamp(1 / g_norm, max=1.0))


@dataclass
class BFGS(LineSearchMinimizer):
    def make_state(self, problem: ObjectiveProblem, fields: dict) -> BFGSState:
        x = fields["x"]
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1).clone()
        return BFGSState(**fields, inverse_hessian=eye, has_memory=torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))

    def initial_step(self, state: BFGSState) -> torch.Tensor | float:
        if lean(state.x):
            return _first_step_one(state, bool(state.has_memory))
        return _first_step(state, state.has_memory)

    def direction(self, problem: ObjectiveProblem, state: BFGSState) -> torch.Tensor:
        # bmm is what ``@`` runs on two 3-d tensors, without its broadcasting views around it
        return -torch.bmm(state.inverse_hessian, state.g.unsqueeze(-1)).squeeze(-1)

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
        return evolve(new, inverse_hessian=H, has_memory=has_memory, failure=failure)

    def _update_one(self, old: BFGSState, new: BFGSState, outcome: SearchOutcome) -> BFGSState:
        """The same update for one problem, its decisions taken on Python floats."""
        ok, has_memory = bool(outcome.ok), bool(old.has_memory)
        if not ok:
            if not has_memory:
                return new
            # restart along −∇f: drop the memory, clear the search failure
            eye = torch.eye(old.x.shape[-1], dtype=old.x.dtype).expand_as(old.inverse_hessian)
            return evolve(new, inverse_hessian=eye, has_memory=_FALSE, failure=torch.zeros_like(new.failure))
        s, y = outcome.step, outcome.g - old.g
        sy, s_norm, y_norm = _pair_scalars(s, y)
        if not (sy > torch.finfo(s.dtype).eps * s_norm * y_norm and math.isfinite(sy)):
            return new
        eye = identity(s.shape[-1], s.dtype).unsqueeze(0)
        H = old.inverse_hessian
        if not has_memory:
            H = sy / max((y * y).sum(-1).item(), torch.finfo(s.dtype).tiny) * eye
        return evolve(new, inverse_hessian=_inverse_update(H, s, y, 1 / sy, eye), has_memory=_TRUE)


def _inverse_update(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, rho: torch.Tensor | float,
                    eye: torch.Tensor) -> torch.Tensor:
    """Hₖ₊₁ = (I − ρsyᵀ) Hₖ (I − ρysᵀ) + ρssᵀ."""
    left = eye - rho * (s.unsqueeze(-1) * y.unsqueeze(-2))
    # bmm is what ``@`` runs on two 3-d tensors, without its broadcasting views around it
    return torch.bmm(torch.bmm(left, H), left.transpose(-1, -2)) + rho * (s.unsqueeze(-1) * s.unsqueeze(-2))


def _pair_scalars(s: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """One problem's (sᵀy, ‖s‖, ‖y‖) as Python floats, reduced as the batch reduces them (along
    the last dimension) and read one by one (cheaper than the tensor a ``cat`` allocates)."""
    return (s * y).sum(-1).item(), vector_norm(s, dim=-1).item(), vector_norm(y, dim=-1).item()


@dataclass
class LBFGS(LineSearchMinimizer):
    memory: int = 10

    def make_state(self, problem: ObjectiveProblem, fields: dict) -> LBFGSState:
        x = fields["x"]
        batch, n = x.shape
        return LBFGSState(**fields, s=x.new_zeros(batch, self.memory, n), y=x.new_zeros(batch, self.memory, n),
                          rho=x.new_zeros(batch, self.memory), gamma=x.new_ones(batch))

    def initial_step(self, state: LBFGSState) -> torch.Tensor | float:
        if lean(state.x):
            return _first_step_one(state, state.rho.tolist()[0][-1] > 0)  # tolist: no indexing ops
        return _first_step(state, state.rho[:, -1] > 0)

    def direction(self, problem: ObjectiveProblem, state: LBFGSState) -> torch.Tensor:
        if not lean(state.x):
            pairs = _TensorPairs(state.g, state.s.unbind(1), state.y.unbind(1))
            return -pairs.vector(_two_loop(pairs, state.rho.unbind(1), state.gamma))
        rho = state.rho[0].tolist()
        # the pairs held fill the newest slots (rho > 0); the empty ones contribute exact zeros
        first = next((i for i, r in enumerate(rho) if r != 0), self.memory)
        S, Y = state.s[:, first:], state.y[:, first:]
        pairs = (_CoordinatePairs(state.g, S, Y) if state.x.shape[-1] <= _COORDINATES_MAX_N
                 else _TensorPairs(state.g, S.unbind(1), Y.unbind(1)))
        return -pairs.vector(_two_loop(pairs, rho[first:], float(state.gamma)))

    def update(self, problem: ObjectiveProblem, old: LBFGSState, new: LBFGSState, outcome: SearchOutcome) -> LBFGSState:
        if lean(old.x):
            return self._update_one(old, new, outcome)
        s, y, sy, usable = _curvature_pairs(old, outcome)
        safe_sy = torch.where(usable, sy, torch.ones_like(sy))
        keep = lambda mask, a, b: torch.where(mask.view((-1,) + (1,) * (a.dim() - 1)), a, b)
        S, Y = keep(usable, _shift(old.s, s), old.s), keep(usable, _shift(old.y, y), old.y)
        rho = keep(usable, _shift(old.rho, 1 / safe_sy), old.rho)
        gamma = torch.where(usable, sy / (y * y).sum(-1).clamp(min=torch.finfo(s.dtype).tiny), old.gamma)
        reset, failure = _restart(new, outcome, old.rho[:, -1] > 0)
        rho = torch.where(reset.unsqueeze(-1), torch.zeros_like(rho), rho)
        gamma = torch.where(reset, torch.ones_like(gamma), gamma)
        return evolve(new, s=S, y=Y, rho=rho, gamma=gamma, failure=failure)

    def _update_one(self, old: LBFGSState, new: LBFGSState, outcome: SearchOutcome) -> LBFGSState:
        """The same update for one problem, its decisions taken on Python floats."""
        if not bool(outcome.ok):
            if not float(old.rho[0, -1]) > 0:
                return new
            # restart along −∇f: drop the pairs, clear the search failure
            return evolve(new, rho=torch.zeros_like(old.rho), gamma=torch.ones_like(old.gamma),
                          failure=torch.zeros_like(new.failure))
        s, y = outcome.step, outcome.g - old.g
        sy, s_norm, y_norm = _pair_scalars(s, y)
        if not (sy > torch.finfo(s.dtype).eps * s_norm * y_norm and math.isfinite(sy)):
            return new
        gamma = sy / max((y * y).sum(-1).item(), torch.finfo(s.dtype).tiny)
        return evolve(new, s=_shift(old.s, s), y=_shift(old.y, y), rho=_shift(old.rho, old.rho.new_full((1,), 1 / sy)),
                      gamma=old.gamma.new_full((1,), gamma))


def _shift(buffer: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
    """Drop the oldest slot of ``buffer`` (B, m, ...) and append ``item`` (B, ...) as the newest."""
    return torch.cat([buffer[:, 1:], item.unsqueeze(1)], dim=1)


def _first_step_one(state: ObjectiveState, has_memory: bool) -> float:
    """:func:`_first_step` for one problem, on Python floats."""
    if has_memory:
        return 1.0
    return min(1 / max(float(vector_norm(state.g)), torch.finfo(state.g.dtype).tiny), 1.0)


def _two_loop(pairs, rho, gamma):
    """r = Hₖ∇f by the two-loop recursion (N&W Alg. 7.4) over the pairs (sᵢ, yᵢ), oldest first:

        q ← ∇f;  for i = k…1: aᵢ = ρᵢ sᵢᵀq, q ← q − aᵢyᵢ;   r ← γq;
        for i = 1…k: bᵢ = ρᵢ yᵢᵀr, r ← r + (aᵢ − bᵢ)sᵢ.

    ``pairs`` holds the vectors and their arithmetic (:class:`_TensorPairs` or
    :class:`_CoordinatePairs`); ``rho``, ``gamma`` are per-member scalars ((B,) tensors or floats).
    """
    q = pairs.start()
    alphas = []
    for i in reversed(range(len(rho))):
        a = rho[i] * pairs.dot_s(i, q)
        q = pairs.minus_y(q, a, i)
        alphas.append(a)
    r = pairs.scale(q, gamma)
    for i, a in zip(range(len(rho)), reversed(alphas)):
        b = rho[i] * pairs.dot_y(i, r)
        r = pairs.plus_s(r, a - b, i)
    return r


class _TensorPairs:
    """Vectors as (B, n) tensors, per-member scalars as (B,) tensors: the batched arithmetic."""

    def __init__(self, g: torch.Tensor, s: tuple[torch.Tensor, ...], y: tuple[torch.Tensor, ...]):
        self.g, self.s, self.y = g, s, y

    def start(self) -> torch.Tensor:
        return self.g

    def dot_s(self, i: int, v: torch.Tensor):
        return (self.s[i] * v).sum(-1)

    def dot_y(self, i: int, v: torch.Tensor):
        return (self.y[i] * v).sum(-1)

    def minus_y(self, v: torch.Tensor, a, i: int) -> torch.Tensor:
        return v - _column(a) * self.y[i]

    def plus_s(self, v: torch.Tensor, c, i: int) -> torch.Tensor:
        return v + _column(c) * self.s[i]

    def scale(self, v: torch.Tensor, gamma) -> torch.Tensor:
        return _column(gamma) * v

    def vector(self, v: torch.Tensor) -> torch.Tensor:
        return v


def _column(c):
    return c.unsqueeze(-1) if isinstance(c, torch.Tensor) else c


class _CoordinatePairs:
    """One problem's vectors as coordinates in the basis V = (∇f, s₁…sₖ, y₁…yₖ), Python floats.

    Every vector of the recursion lies in span V, and each inner product has a basis vector on one
    side, so with the Gram matrix VVᵀ (one matrix product) a step of the recursion is O(k) float
    operations instead of several torch calls on n-vectors; the direction is rebuilt as cᵀV once.
    Worth it while (2k+1)²n flops of the Gram matrix cost less than the torch calls they replace
    (small n, see ``_COORDINATES_MAX_N``).
    """

    def __init__(self, g: torch.Tensor, S: torch.Tensor, Y: torch.Tensor):
        self.k = S.shape[1]
        self.basis = torch.cat([g, S[0], Y[0]])  # (2k+1, n)
        self.gram = (self.basis @ self.basis.T).tolist()

    def start(self) -> list[float]:
        return [1.0] + [0.0] * (2 * self.k)

    def _dot(self, row: int, v: list[float]) -> float:
        return sum(map(operator.mul, self.gram[row], v))

    def dot_s(self, i: int, v: list[float]) -> float:
        return self._dot(1 + i, v)

    def dot_y(self, i: int, v: list[float]) -> float:
        return self._dot(1 + self.k + i, v)

    def minus_y(self, v: list[float], a: float, i: int) -> list[float]:
        v[1 + self.k + i] -= a
        return v

    def plus_s(self, v: list[float], c: float, i: int) -> list[float]:
        v[1 + i] += c
        return v

    def scale(self, v: list[float], gamma: float) -> list[float]:
        return [gamma * c for c in v]

    def vector(self, v: list[float]) -> torch.Tensor:
        return (self.basis.new_tensor(v) @ self.basis).unsqueeze(0)


# largest n for which one problem's two-loop recursion runs in coordinates (_CoordinatePairs)
_COORDINATES_MAX_N = 64
