"""The secular equation of regularized Newton steps, solved in an eigenbasis of the Hessian.

Trust-region and cubic-regularization subproblems share one structure: the step is

    s(λ) = −(H + λI)⁻¹ g,   λ ≥ max(0, −λ₁),   with ‖s(λ)‖ = r(λ)

for a target radius r (r = Δ for a trust region, r = λ/σ for the cubic model; Moré & Sorensen
1983, "Computing a trust region step"; Cartis, Gould & Toint 2011, "Adaptive cubic
regularisation methods", Thm 3.1). With H = V diag(λᵢ) Vᵀ and c = Vᵀg, ‖s(λ)‖² = Σ cᵢ²/(λᵢ+λ)²
costs O(n) per λ, so the root of ψ(λ) = 1/‖s(λ)‖ − 1/r(λ) (increasing and nearly linear, which
is why Moré–Sorensen use 1/‖s‖) is found by safeguarded Newton inside a bracket for every member
of a batch at once. One eigendecomposition serves every subproblem with the same Hessian:
rejected trust-region steps and lazily reused Hessians locate λ in O(n²) per solve, not O(n³).
When H itself is kept (below), the step is then solved by one Cholesky factorization of H + λI,
n³/3 flops: cheaper than the eigendecomposition (about 9n³) but not O(n²).

The *hard case* (g ⟂ the eigenvectors of λ₁ < 0, so ‖s(λ)‖ stays below r(λ) as λ → −λ₁) is
handled exactly: λ = −λ₁ and the step is completed along v₁ to the required length — unless
|λ₁| is within the eigensolver's backward error n·ε·‖H‖ and gᵀv₁ is rounding noise too (a
numerically singular, positive semidefinite H with g in its range, e.g. a rank-deficient
least-squares Hessian): then there is nothing to exploit along v₁ and the step stays s(λ) at the
lower end.

Accuracy for ill-conditioned H: a computed eigendecomposition is only normwise backward stable
(V diag(λ) Vᵀ = H + E with ‖E‖ ≈ ε‖H‖), so with κ(H) ≈ 1e15 every eigenvalue below ε‖H‖ is
noise and −V diag(1/(λᵢ+λ)) Vᵀ g, and a model value built from the eigenpairs, are wrong in those
directions. When the Hessian itself is kept (``EigenHessian.matrix``), the eigenbasis only
locates λ; the step is then computed by a Cholesky solve of (H + λI)s = −g (componentwise
backward stable, so badly scaled but positive definite H are solved accurately), Moré–Sorensen's
first test "H ≻ 0 by Cholesky and ‖H⁻¹g‖ ≤ r" decides interior steps, and sᵀHs uses H.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.linalg import vector_norm

from .members import FLOAT_MATRIX_MAX_N, FloatOps, identity, lean, ops_for

Target = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # λ -> (1/r(λ), d(1/r)/dλ)


@dataclass
class EigenHessian:
    """H = V diag(values) Vᵀ for a batch: values (B, n) ascending, vectors (B, n, n)."""

    values: torch.Tensor
    vectors: torch.Tensor
    matrix: torch.Tensor | None = None  # H itself (B, n, n), for accurate steps and model values

    @classmethod
    def of(cls, H: torch.Tensor) -> "EigenHessian":
        """Decompose H; a member with non-finite entries gets NaN eigenvalues (its steps are then
        rejected as non-finite) instead of aborting the batched eigh for everyone."""
        # one member with finite entries has nothing to mask: a small H's entries are read back and
        # tested as floats, a larger one's sum (one that overflows takes the masked path, which
        # gives the same result)
        if lean(H) and (all(math.isfinite(v) for row in H.tolist()[0] for v in row) if H.shape[-1] <= FLOAT_MATRIX_MAX_N
                        else math.isfinite(H.sum().item())):
            values, vectors = torch.linalg.eigh(H)
            return cls(values, vectors, H)
        finite = torch.isfinite(H).all(-1).all(-1)
        eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
        values, vectors = torch.linalg.eigh(torch.where(finite.view(-1, 1, 1), H, eye))
        return cls(torch.where(finite.unsqueeze(-1), values, torch.full_like(values, float("nan"))), vectors, H)

    # torch.bmm, the kernel ``@`` reaches for (B, n, n) operands after its expand/reshape calls:
    # the same products, without their dispatch cost on the single-problem path

    def coordinates(self, g: torch.Tensor) -> torch.Tensor:
        return torch.bmm(g.unsqueeze(-2), self.vectors).squeeze(-2)

    def expand(self, c: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.vectors, c.unsqueeze(-1)).squeeze(-1)

    def quadratic(self, s: torch.Tensor) -> torch.Tensor:
        """sᵀHs, per member (from H itself when kept: exact also in its near-null directions)."""
        if self.matrix is not None:
            return (s * torch.bmm(self.matrix, s.unsqueeze(-1)).squeeze(-1)).sum(-1)
        c = self.coordinates(s)
        return (self.values * c * c).sum(-1)

    def where(self, mask: torch.Tensor, other: "EigenHessian") -> "EigenHessian":
        matrix = None
        if self.matrix is not None and other.matrix is not None:
            matrix = torch.where(mask.view(-1, 1, 1), self.matrix, other.matrix)
        return EigenHessian(torch.where(mask.unsqueeze(-1), self.values, other.values),
                            torch.where(mask.view(-1, 1, 1), self.vectors, other.vectors), matrix)


@dataclass
class SecularSolution:
    step: torch.Tensor  # (B, n)
    shift: torch.Tensor | float  # (B,) λ (a float on the lean path)
    hard_case: torch.Tensor | bool  # (B,) bool


def _inverse_norm(c2: torch.Tensor, values: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1/‖s(λ)‖, d(1/‖s(λ)‖)/dλ) from c² (B, n)."""
    tiny = torch.finfo(c2.dtype).tiny
    d = values + lam.unsqueeze(-1)
    norm2 = (c2 / (d * d)).sum(-1).clamp(min=tiny)
    slope = (c2 / (d * d * d)).sum(-1)
    return norm2.rsqrt(), slope * norm2.rsqrt() ** 3


def _inverse_norm_of_member(c2: list[float], values: list[float], tiny: float) -> Callable[[float], tuple[float, float]]:
    """``_inverse_norm`` of one member on Python floats (the lean path; equal to round-off)."""
    def at(lam: float) -> tuple[float, float]:
        norm2 = slope = 0.0
        for ci, vi in zip(c2, values):
            d = vi + lam
            norm2 += FloatOps.divide(ci, d * d)
            slope += FloatOps.divide(ci, d * d * d)
        inverse = 1 / math.sqrt(max(norm2, tiny)) if not math.isnan(norm2) else math.nan
        return inverse, slope * inverse * inverse * inverse

    return at


def solve_secular(eig: EigenHessian, g: torch.Tensor, inverse_target: Target, upper: torch.Tensor | float, *,
                  interior_allowed: torch.Tensor | bool, iterations: int = 60,
                  g_norm: torch.Tensor | float | None = None) -> SecularSolution:
    """Solve 1/‖s(λ)‖ = 1/r(λ) on (max(0, −λ₁), ``upper``], batched.

    ``inverse_target(λ)`` returns 1/r(λ) and its derivative; ``upper`` (B,) is a shift where
    ‖s‖ ≤ r is known to hold. Members in ``interior_allowed`` whose Newton step s(0) already
    satisfies ‖s(0)‖ ≤ r(0) with H ≻ 0 get λ = 0 (the unconstrained trust-region step).
    ``interior_allowed`` may be a plain ``False`` (no member, known without looking).
    ``g_norm`` is ‖g‖ per member where the caller has it (a float on the lean path).
    For one problem on the CPU (``globalize.members.lean``) the per-member scalars — ``upper``,
    ``interior_allowed``, λ, what ``inverse_target`` takes and returns — are Python numbers and
    the O(n) sums of the Newton iteration on λ run on Python lists; the step stays a tensor, and
    with H kept (``EigenHessian.matrix``) it is solved by Cholesky first, the eigenbasis step being
    formed only where the batch would fall back to it (hard case, failed factorization).
    """
    o = ops_for(g)
    tiny, eps = torch.finfo(g.dtype).tiny, torch.finfo(g.dtype).eps
    values = eig.values
    c = eig.coordinates(g)
    c2 = c * c
    if o.batched:
        scale = torch.clamp(values.abs().amax(-1), min=tiny)
        lowest, c_first = values[:, 0], c[:, 0]
        g_norm = vector_norm(g, dim=-1) if g_norm is None else g_norm
        norm_at = lambda lam: _inverse_norm(c2, values, lam)
    else:  # the member's scalars read back one tensor at a time (no ``cat`` to allocate)
        values_list, c2_list = values.tolist()[0], c2.tolist()[0]
        c_first = c.tolist()[0][0]
        g_norm = vector_norm(g, dim=-1).item() if g_norm is None else g_norm
        scale = FloatOps.clamp(functools.reduce(FloatOps.maximum, map(abs, values_list)), min=tiny)
        lowest = values_list[0]
        norm_at = _inverse_norm_of_member(c2_list, values_list, tiny)
    delta = eps ** 0.75 * scale  # how close to −λ₁ the shift may get
    # H ≻ 0 (λ₁ > 0, however small): the root lies in [0, upper] and λ = 0 may be the answer; only
    # an indefinite or singular H needs the shift kept off the pole at −λ₁
    lower = o.where(lowest > 0, o.full(lowest, 0.0), -lowest + delta)
    upper = o.maximum(upper, lower)
    inv_norm_lo, _ = norm_at(lower)
    inv_r_lo, _ = inverse_target(lower)
    at_lower = inv_norm_lo >= inv_r_lo  # ‖s(lower)‖ ≤ r(lower): no root above the lower end
    interior = at_lower & interior_allowed & (lower == 0)
    newton_step, factored, newton_norm = None, None, None
    # a batch runs the test unasked (no member allowed leaves interior and at_lower as they are):
    # "is any allowed?" would be a host read; a caller allowing none says so by a plain False
    if eig.matrix is not None and interior_allowed is not False and (o.batched or interior_allowed):
        # Moré–Sorensen's first test, on H itself: Cholesky succeeds and ‖H⁻¹g‖ ≤ r(0); it
        # overrides the eigenpairs, whose smallest values may be rounding noise
        inv_r0, _ = inverse_target(o.full(lowest, 0.0))
        if o.batched:
            newton_step, factored = _cholesky_step(eig.matrix, g, torch.zeros_like(g[:, 0]))
        else:
            newton_step, factored = _cholesky_step_of_member(eig.matrix, g, 0.0, values_list)
        factored = o.value(factored) if o.batched else factored
        newton_norm = o.value(vector_norm(newton_step, dim=-1))
        allowed_and_factored = factored & interior_allowed
        newton_inside = allowed_and_factored & (newton_norm * inv_r0 <= 1)
        interior = newton_inside | (interior & o.not_(allowed_and_factored))
        at_lower = newton_inside | o.where(allowed_and_factored & (lower == 0), newton_inside, at_lower)
    # λ₁ < 0 within the eigensolver's backward error n·ε·‖H‖, with g ⟂ v₁ to within √ε‖g‖: the
    # model has neither curvature nor slope along v₁, and completing the step along it would
    # follow noise (the model predicts a decrease f cannot show, so the step is rejected until
    # the radius collapses); s(lower) minimizes the model to that accuracy. With a real slope
    # along v₁ (a flat valley) the completion is kept: it makes real progress
    negligible = (lowest >= -values.shape[-1] * eps * scale) & (abs(c_first) <= eps ** 0.5 * g_norm)
    hard = at_lower & o.not_(interior) & o.not_(negligible)
    flat = at_lower & o.not_(interior) & negligible
    lo, hi = o.copy(lower), o.copy(upper)
    lam = o.copy(upper)
    settled = interior | hard | flat
    tolerance = eps ** 0.75
    for iteration in range(iterations):
        # Newton on ψ converges in a few steps; stop once every member has. A batch asks the host
        # every 8 steps only: a settled member's λ no longer changes, so the extra steps are idle
        # (at step 0 only where some member may be interior, the common settled start)
        if (not o.batched or (iteration % 8 == 0 and (iteration > 0 or interior_allowed is not False))) \
                and o.all(settled):
            break
        inv_norm, d_inv_norm = norm_at(lam)
        inv_r, d_inv_r = inverse_target(lam)
        psi = inv_norm - inv_r
        settled = settled | (abs(psi) <= tolerance * inv_r) | (hi - lo <= tolerance * hi)
        # ψ is increasing: a positive value means λ is above the root
        hi = o.where(psi > 0, lam, hi)
        lo = o.where(psi <= 0, lam, lo)
        newton = lam - o.divide(psi, o.clamp(d_inv_norm - d_inv_r, min=tiny))
        inside = o.isfinite(newton) & (newton > lo) & (newton < hi)
        lam = o.where(settled, lam, o.where(inside, newton, 0.5 * (lo + hi)))
    lam = o.where(interior, o.full(lam, 0.0), o.where(hard | flat, lower, lam))
    if not o.batched and eig.matrix is not None and not hard:
        # one member whose accurate step is wanted first: the eigenbasis step only if it fails
        step = _accurate_step(eig, g, lam, inverse_target, interior, newton_step, factored, newton_norm,
                              values_list, tiny)
        if step is not None:
            return SecularSolution(step=step, shift=lam, hard_case=hard)
    d = values + o.column(lam)
    coefficients = -c / torch.where(d.abs() > 0, d, torch.ones_like(d))
    step = eig.expand(coefficients)
    # hard case: move along v₁ until ‖s‖ = r(λ), on the side where gᵀv₁ τ ≤ 0
    inv_r_hard, _ = inverse_target(lam)
    radius = 1 / o.clamp(inv_r_hard, min=tiny)
    if o.batched or hard:  # a batch completes unasked, kept only where hard
        v1 = eig.vectors[..., 0]
        sv = o.value((step * v1).sum(-1))
        root = o.sqrt(o.clamp(sv * sv + radius * radius - o.value((step * step).sum(-1)), min=0))
        # the two roots of ‖s + τv₁‖ = r have opposite signs (‖s‖ ≤ r): take the one with τ·gᵀv₁ ≤ 0
        tau = o.where(c_first > 0, -sv - root, -sv + root)
        step = o.where(hard, step + o.column(tau) * v1, step)
    if eig.matrix is not None:
        # the eigenbasis located λ; solve (H + λI)s = −g accurately where H + λI ≻ 0 numerically
        if o.batched or not (interior and newton_step is not None):
            accurate, ok = _cholesky_step(eig.matrix, g, o.pack(lam, g[:, 0]))
            ok = o.value(ok)
        else:  # λ = 0: the factorization above already solved it
            accurate, ok = newton_step, factored
        if newton_step is not None:
            accurate = o.where(interior, newton_step, accurate)
        # λ from the eigenpairs may be slightly off: never exceed the target length
        norm = o.value(vector_norm(accurate, dim=-1))
        accurate = accurate * o.column(o.clamp(radius / o.clamp(norm, min=tiny), max=1.0))
        use = ok & o.not_(hard) & o.value(torch.isfinite(accurate).all(-1))
        step = o.where(use, accurate, step)
    return SecularSolution(step=step, shift=lam, hard_case=hard)


def _accurate_step(eig: EigenHessian, g: torch.Tensor, lam: float, inverse_target: Target, interior: bool,
                   newton_step: torch.Tensor | None, factored: bool | None, newton_norm: float | None,
                   values: list[float], tiny: float) -> torch.Tensor | None:
    """The Cholesky step of :func:`solve_secular` for one member outside the hard case (the same
    operations as the batch's, taken only where it uses them), or None where the batch would fall
    back to the eigenbasis step (a failed factorization or a non-finite step)."""
    inv_r, _ = inverse_target(lam)
    radius = 1 / FloatOps.clamp(inv_r, min=tiny)
    if interior and newton_step is not None:  # λ = 0: the factorization of the interior test solved it
        accurate, ok, norm = newton_step, factored, newton_norm
    else:
        accurate, ok = _cholesky_step_of_member(eig.matrix, g, lam, values)
        norm = vector_norm(accurate, dim=-1).item()
    if not ok:
        return None
    scale = FloatOps.clamp(radius / FloatOps.clamp(norm, min=tiny), max=1.0)
    if scale != 1.0:  # a product by 1 changes nothing
        accurate = accurate * scale
    # a finite norm has finite entries; an infinite one may be overflow of finite entries: look
    finite = math.isfinite(norm) or bool(torch.isfinite(accurate).all())
    return accurate if finite else None


def _cholesky_step_of_member(H: torch.Tensor, g: torch.Tensor, lam: float,
                             values: list[float]) -> tuple[torch.Tensor, bool]:
    """:func:`_cholesky_step` of one member with λ a float, success as a bool: H + λI is finite
    exactly when the eigenvalues and λ are (``EigenHessian.of`` gives a non-finite H NaN
    eigenvalues), so the finiteness mask is only formed where it can matter, and λ = 0 adds no
    shift."""
    if not (math.isfinite(lam) and all(map(math.isfinite, values))):
        step, ok = _cholesky_step(H, g, g.new_full((1,), lam))
        return step, ok.item()
    shifted = H if lam == 0 else H + lam * identity(H.shape[-1], H.dtype)
    factor, info = torch.linalg.cholesky_ex(shifted)
    half = torch.linalg.solve_triangular(factor, g.unsqueeze(-1), upper=False)
    step = -torch.linalg.solve_triangular(factor.mT, half, upper=True).squeeze(-1)
    return step, info.item() == 0


def _cholesky_step(H: torch.Tensor, g: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(−(H + λI)⁻¹g, whether the Cholesky factorization succeeded), per member."""
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    shifted = H + lam.view(-1, 1, 1) * eye
    finite = torch.isfinite(shifted).all(-1).all(-1)
    factor, info = torch.linalg.cholesky_ex(torch.where(finite.view(-1, 1, 1), shifted, eye))
    # two triangular solves, not cholesky_solve: the same substitutions, without the host read of
    # LAPACK's info that cholesky_solve makes
    half = torch.linalg.solve_triangular(factor, g.unsqueeze(-1), upper=False)
    step = -torch.linalg.solve_triangular(factor.mT, half, upper=True).squeeze(-1)
    return step, finite & (info == 0)
