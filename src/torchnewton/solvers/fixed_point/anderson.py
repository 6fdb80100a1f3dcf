"""Anderson acceleration (type II) of z = T(z), with regularized least squares and a safeguard.

With residuals g_i = T(z_i) − z_i and the last m differences ΔZ = [z_{i+1} − z_i],
ΔG = [g_{i+1} − g_i] (as rows), each step solves the regularized least-squares problem

    γ = argmin ‖g_k − ΔGᵀγ‖² + λ ‖D γ‖²,   D = diag(‖ΔG_i‖₂),

and moves to z_{k+1} = z_k + β g_k − (ΔZ + β ΔG)ᵀ γ (Walker & Ni 2011, "Anderson acceleration
for fixed-point iterations", SINUM 49; mixing β as in Anderson 1965). For a linear T and m = ∞
this is GMRES on (I − T) z = b (Walker & Ni, Theorem 2.2): on a contraction whose spectrum is
spread over [0, ρ] it needs about the square root of Picard's count, and a finite memory m keeps
that behaviour as long as m covers the slow part of the spectrum (Toth & Kelley 2015, "Convergence
analysis for Anderson acceleration", SINUM 53, prove local r-linear convergence no slower than
Picard's for any m). The m × m Gram system is G + λ diag(G), G = ΔG ΔGᵀ: the Jacobi-scaled
system (unit diagonal) with the shift λ (plus m·eps of the dtype, which Cholesky needs) acting on
every row alike, factorized without the scaling. One product with the stored rows per step gives
both the new row of G and the next right-hand side ΔG g. The rows shrink with the residual, by orders of magnitude within one memory window, and
a shift relative to their mean size would silence the newest rows and cut the memory short
(with m = 50 that cost up to 2x the evaluations of the exact least squares). Safeguard: a step
whose residual ‖g_{k+1}‖₂ exceeds ``safeguard``·‖g_k‖₂ (or is not finite) is replaced by the
plain mixing step z_k + β g_k, at the cost of one more evaluation of T in that iteration (the
residual test of safeguarded Anderson, Zhang, O'Donoghue & Boyd 2020). It rarely fires on a
contraction: Pollock & Rebholz (2021, "Anderson acceleration for contractive and noncontractive
operators", IMA J. Numer. Anal. 41) bound ‖g_{k+1}‖ by the gain θ_k = ‖ḡ‖/‖g_k‖ ≤ 1 of the least
squares (ḡ its residual) times the contraction factor, plus higher-order terms; for an affine
T(z) = Az + b, g_{k+1} = ((1 − β)I + βA) ḡ exactly, so with ‖A‖₂ < 1 it never fires.

``regularization_form="weights"`` penalizes instead the weights of Anderson's original
(constrained) form: the step is the combination Σ α_i (z_i + β g_i) of the m + 1 stored iterates
with Σ α_i = 1, and the least squares is

    α = argmin ‖Σ α_i g_i‖² + λ ‖α‖²   subject to Σ α_i = 1,

with an absolute λ (Anderson 1965; the form of the DEQ reference code, Bai, Kolter & Koltun 2019,
and of torchdeq's ``anderson_solver``, λ = 1e-4 there, whose memory m counts iterates: its m is
this memory + 1). In the difference coordinates α = Lγ + e_newest, L the (m+1) × m bidiagonal
difference map (oldest α = γ_oldest, α_i = γ_i − γ_{i−1}, newest α = 1 − γ_newest), so the system
becomes (G + λ LᵀL) γ = ΔG g_k + λ e_newest, LᵀL the tridiagonal [−1, 2, −1] along the age
order of the rows. A large λ relative to ‖g‖² pulls α toward the uniform 1/(m+1): the step then
averages the last m + 1 images instead of extrapolating from them, a damping that does not vanish
as the residuals shrink (they fall below √λ), where the default form's relative shift leaves the
least squares exact.

Example:
    >>> import torch
    >>> from torchnewton import fixed_point
    >>> res = fixed_point(torch.cos, torch.ones(3, dtype=torch.float64), method="anderson")
    >>> bool(res.success), round(float(res.x[0]), 6)
    (True, 0.739085)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .methods import record
from .problem import FixedPointProblem, FixedPointState, advance, initial_fields
from .termination import FixedPointTermination


REGULARIZATION_FORMS = ("scaled", "weights")


@functools.lru_cache(maxsize=256)
def _weights_penalty(filled: int, newest: int, memory: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """LᵀL (filled × filled) in ring-buffer order: 2 on the diagonal, −1 between rows of
    consecutive ages (row r is followed by row r + 1 mod ``memory``, except the newest). Cached:
    it depends only on the buffer's fill and position, and is read, never written."""
    penalty = 2 * torch.eye(filled, dtype=dtype, device=device)
    for row in range(filled):
        if row != newest:
            follower = (row + 1) % memory
            penalty[row, follower] = penalty[follower, row] = -1
    return penalty


@dataclass
class AndersonState(FixedPointState):
    """``dG`` (B, m, n) holds the last m differences ΔG and ``dF`` the matching rows of
    ΔZ + βΔG (what the step subtracts), in a ring buffer at position ``slot`` (shared by the
    batch; rows [0, min(slot, m)) are filled); ``gram`` (B, m, m) = ΔG ΔGᵀ, one new row per step;
    ``rhs`` (B, m) = ΔG g_k, the right-hand side of the next least squares; ``rejections`` (B,)
    counts the safeguarded steps. The buffers are written in place, so the loop never copies
    them; those of members that are done are no longer read."""

    dF: torch.Tensor
    dG: torch.Tensor
    gram: torch.Tensor
    rhs: torch.Tensor
    slot: int
    rejections: torch.Tensor


@dataclass
class Anderson:
    termination: FixedPointTermination
    memory: int = 10
    mixing: float = 1.0
    regularization: float = 1e-8
    safeguard: float | None = 1.0
    regularization_form: str = "scaled"

    def __post_init__(self):
        if self.regularization_form not in REGULARIZATION_FORMS:
            raise ValueError(f"regularization_form must be one of {REGULARIZATION_FORMS}, "
                             f"got {self.regularization_form!r}")

    def init(self, problem: FixedPointProblem, x0: torch.Tensor) -> AndersonState:
        batch, n = x0.shape
        buffer = x0.new_zeros(batch, self.memory, n)
        return AndersonState(**initial_fields(problem, x0, problem.initial_value(x0)), dF=buffer,
                             dG=buffer.clone(), gram=x0.new_zeros(batch, self.memory, self.memory),
                             rhs=x0.new_zeros(batch, self.memory), slot=0,
                             rejections=torch.zeros(batch, dtype=torch.long, device=x0.device))

    def _coefficients(self, state: AndersonState, filled: int) -> torch.Tensor:
        """γ (B, filled) of the regularized least-squares problem over the filled rows; zero where
        the Gram system could not be factorized (the step is then the plain one)."""
        # the shift λ‖Dγ‖² is relative to each row's own size D_ii² = (ΔG ΔGᵀ)_ii: the rows of ΔG
        # shrink with the residual, by orders of magnitude over one memory window, so a shift
        # relative to their mean size would swamp the newest (smallest) rows and cut the memory
        # short. (G + λ diag G) is the Jacobi-scaled system D(D⁻¹GD⁻¹ + λI)D, factorized without
        # the scaling (Cholesky's accuracy does not depend on it, van der Sluis); m·eps of the dtype
        # joins λ, which Cholesky needs, and `tiny` keeps a zero row (g unchanged by a step) at γ_i = 0
        shifted = state.gram[:, :filled, :filled].clone()
        rhs = state.rhs[:, :filled]
        eps = torch.finfo(shifted.dtype).eps
        if self.regularization_form == "weights":
            newest = (state.slot - 1) % self.memory
            penalty = _weights_penalty(filled, newest, self.memory, shifted.dtype, shifted.device)
            shifted += self.regularization * penalty
            rhs = rhs.clone()
            rhs[:, newest] += self.regularization
            shift = filled * eps
        else:
            shift = self.regularization + filled * eps
        shifted.diagonal(dim1=-2, dim2=-1).mul_(1 + shift).add_(torch.finfo(shifted.dtype).tiny)
        factor, info = torch.linalg.cholesky_ex(shifted)
        gamma = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
        # a NaN or Inf anywhere in γ makes its sum non-finite, and `|NaN| < ∞` is false
        usable = (info == 0) & (gamma.sum(-1).abs() < math.inf)
        return torch.where(usable.unsqueeze(-1), gamma, 0.0)

    def step(self, problem: FixedPointProblem, state: AndersonState, running: torch.Tensor) -> AndersonState:
        x, g = state.x, state.fun
        plain = torch.add(x, g, alpha=self.mixing)
        rejections = state.rejections
        # [ΔG_new; g_{k+1}] side by side, so that one product with the stored rows gives both the
        # new row of the Gram matrix and the next right-hand side (one pass over ΔG per step)
        pair = x.new_empty(x.shape[0], 2, x.shape[1])
        if state.slot == 0:
            x_new = plain
            g_new = torch.sub(problem.evaluate(x_new), x_new, out=pair[:, 1])
        else:
            filled = min(state.slot, self.memory)
            gamma = self._coefficients(state, filled).unsqueeze(1)  # (B, 1, filled)
            x_new = torch.baddbmm(plain.unsqueeze(1), gamma, state.dF[:, :filled], alpha=-1).squeeze(1)
            g_new = torch.sub(problem.evaluate(x_new), x_new, out=pair[:, 1])
            if self.safeguard is not None:
                # `not <=` also rejects a NaN residual: the plain step is the way out of it
                rejected = ~(g_new.norm(dim=-1) <= self.safeguard * g.norm(dim=-1)) & running
                if bool(rejected.any()):
                    column = rejected.unsqueeze(-1)
                    x_new = torch.where(column, plain, x_new)
                    pair[:, 1] = torch.where(column, problem.evaluate(x_new) - x_new, g_new)
                    rejections = rejections + rejected.long()
        slot = state.slot % self.memory
        # written for every member: those already done are frozen by the loop and never read theirs again
        dG = torch.sub(g_new, g, out=pair[:, 0])
        state.dG[:, slot] = dG
        torch.sub(x_new, x, out=state.dF[:, slot]).add_(dG, alpha=self.mixing)
        dots = torch.bmm(pair, state.dG.transpose(1, 2))  # (B, 2, m): ΔG_new·ΔG_i and g_{k+1}·ΔG_i
        row = dots[:, 0]
        state.gram[:, slot], state.gram[:, :, slot] = row, row
        return advance(problem, state, x_new, g_new, slot=state.slot + 1, rhs=dots[:, 1], rejections=rejections)

    def terminate(self, problem: FixedPointProblem, state: AndersonState):
        return self.termination(state)

    def record(self, problem: FixedPointProblem, state: AndersonState) -> dict:
        return record(state)
