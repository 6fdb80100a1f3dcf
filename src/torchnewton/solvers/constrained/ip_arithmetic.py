"""The sync-free arithmetic of one interior-point iteration, as pure functions of tensors.

:class:`~.interior_point.InteriorPoint` splits an iteration at its factorizations (the KKT solve),
its function calls (f, c and their derivatives) and its host decisions (whether any member needs
a second-order correction, a backtracking search, new derivatives or a slack reset). Between them
the arithmetic is pure: no host read, no Python branch on a tensor's value. Each piece here is one
such stretch, called through the problem's :class:`~torchnewton.core.fusion.Fusion`: eager by
default (exactly the operations of the formulas below), one fused kernel with
``options={"compile": True}`` (a batched iteration of a small problem then costs a few dozen
dispatched operations instead of hundreds).

Pieces (Wächter & Biegler 2006; the formulas are those of :mod:`.interior_point`):

* :func:`prepare`: gaps y − L and U − y, Σ = z_L/(y − L) + z_U/(U − y), h = c − target − s,
  the barrier gradient, r = ∇φ_μ + J_yᵀλ, the inexact-solve accuracy θ and, with few slacks,
  the KKT blocks W = H + Σ, −r, −h;
* :func:`direction`: Δz, the fractions to the boundary α_max (y) and α_z (z), the penalty π of the
  ℓ₂ merit φ_μ + π‖h‖, its slope and value at α = 0, and the full trial point y + α_maxΔy;
* :func:`trial_merit` and :func:`judge`: the merit of a trial from its f and c, and the verdict on
  the full step;
* :func:`update`: y⁺, λ⁺, z⁺ (kept within [μ/(κ(y − L)), κμ/(y − L)]) and the new gaps;
* :func:`measures`: the KKT measures of the new state and the next μ.

Every piece takes the bound layout as its first :data:`GEOMETRY_SIZE` arguments (:class:`Geometry`,
flattened: tensors are graph inputs, flags are constants of the graph), so that a compiled piece is
shared by every solve of the same shapes and layout.

Example:
    >>> import torch
    >>> geo = Geometry.of(torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.zeros(0, 0), torch.zeros(1, 0),
    ...                   torch.zeros(0, dtype=torch.long))
    >>> geo.gaps(torch.tensor([[0.25]]))
    (tensor([[0.2500]]), tensor([[0.7500]]))
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ...core.status import Status
from ...linear.batched import matvec, rmatvec
from .lean import constant, finite
from .termination import multiplier_scale, track_progress

KAPPA_SIGMA = 1e10


class Geometry(NamedTuple):
    """Bounds L ≤ y ≤ U of y = (x, s) and where the slacks sit among the m constraint rows."""

    L: torch.Tensor  # (B, n + p)
    U: torch.Tensor
    has_L: torch.Tensor  # (B, n + p) bool
    has_U: torch.Tensor
    has_LU: torch.Tensor  # (B, 2(n + p)) bool
    minus_selector: torch.Tensor  # (m, p): −1 at (row of slack j, j)
    minus_selector_t: torch.Tensor  # its transpose, contiguous
    target: torch.Tensor  # (B, m): the equality right-hand sides, zero on inequality rows
    rows: torch.Tensor  # (p,) the inequality rows
    all_L: bool  # every component has a finite lower bound (no mask needed)
    all_U: bool
    target_zero: bool
    start: int | None  # the inequality rows as rows[start:stop] where consecutive, else None
    stop: int | None

    @classmethod
    def of(cls, L: torch.Tensor, U: torch.Tensor, selector: torch.Tensor, target: torch.Tensor,
           rows: torch.Tensor) -> "Geometry":
        has_L, has_U = torch.isfinite(L), torch.isfinite(U)
        p = rows.numel()
        first = int(rows[0]) if p else 0
        consecutive = torch.equal(rows, torch.arange(first, first + p, device=rows.device))
        return cls(L, U, has_L, has_U, torch.cat([has_L, has_U], -1), -selector, (-selector).T.contiguous(), target,
                   rows, bool(has_L.all()), bool(has_U.all()), not bool(target.any()),
                   first if consecutive else None, first + p if consecutive else None)

    @classmethod
    def take(cls, args: tuple) -> tuple["Geometry", tuple]:
        """(the geometry, the remaining arguments) of a piece's flat argument list."""
        return cls(*args[:GEOMETRY_SIZE]), args[GEOMETRY_SIZE:]

    def h(self, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """c − target − (s placed in the inequality rows): one ``addmm`` adding s·(−selectorᵀ), whose
        entries are exactly −sᵢ or zero, so the value is that of the two subtractions."""
        return torch.addmm(c if self.target_zero else c - self.target, s, self.minus_selector_t)

    def on_L(self, t: torch.Tensor) -> torch.Tensor:
        """t where y has a lower bound, zero elsewhere (t itself where every component has one)."""
        return t if self.all_L else torch.where(self.has_L, t, constant(0.0, t))

    def on_U(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.all_U else torch.where(self.has_U, t, constant(0.0, t))

    def inequality(self, t: torch.Tensor) -> torch.Tensor:
        """The columns of the inequality rows of t (B, m)."""
        return t[:, self.start:self.stop] if self.start is not None else t.index_select(-1, self.rows)

    def jacobian_y(self, J: torch.Tensor) -> torch.Tensor:
        return torch.cat([J, self.minus_selector.expand(J.shape[0], -1, -1)], -1)

    def gaps(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y − L, U − y), 1 where the bound is missing (no mask where every bound of that side is finite)."""
        lower = y - self.L if self.all_L else torch.where(self.has_L, y - self.L, constant(1.0, y))
        upper = self.U - y if self.all_U else torch.where(self.has_U, self.U - y, constant(1.0, y))
        return lower, upper

    def barrier_value(self, f: torch.Tensor, y: torch.Tensor, mu: torch.Tensor,
                      gaps: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """f − μ Σ log(gaps): a missing bound's gap is 1 (no term); outside the bounds a gap ≤ 0
        makes the value NaN or +inf, which every test here reads as a rejected point (μ > 0).
        ``gaps``: :meth:`gaps` of y where known (the same values)."""
        both = torch.where(self.has_LU, torch.cat([y - self.L, self.U - y], -1), constant(1.0, y)) \
            if gaps is None else torch.cat(gaps, -1)
        return f - mu * torch.log(both).sum(-1)


GEOMETRY_SIZE = len(Geometry._fields)


def fraction_to_boundary(gap: torch.Tensor, direction: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Largest α ≤ 1 with gap + α·direction ≥ (1 − τ)·gap for every component."""
    if not gap.shape[-1]:
        return gap.new_ones(gap.shape[0])
    # τ·min over the components that move toward their boundary of gap/|direction|
    limits = torch.where(direction < 0, gap / direction.neg(), constant(torch.inf, gap))
    return torch.clamp(tau * limits.amin(-1), max=1.0)


def prepare(*args):
    """(y, lower, upper, σ_L, σ_U, Σ, J_y, h, μ/(y − L), μ/(U − y), ∇φ_μ, r, θ, W, −r, −h) at
    (x, s, λ, z_L, z_U, μ) with ∇f = g, c, J and H = ∇²ₓL; W, −r, −h only where ``full`` (the
    full KKT system is solved: few slacks), else None."""
    geo, (x, s, lam, zl, zu, mu, g, c, J, H, full, sharpen, accuracy) = Geometry.take(args)
    batch, n = x.shape
    y = torch.cat([x, s], -1)
    lower, upper = geo.gaps(y)
    sigma_L, sigma_U = zl / lower, zu / upper  # z is zero where a bound is missing
    sigma = sigma_L + sigma_U
    Jy = geo.jacobian_y(J)
    h = geo.h(c, s)
    mu_col = mu.unsqueeze(-1)
    grad_y = torch.cat([g, g.new_zeros(batch, s.shape[-1])], -1)
    # μ/(y − L) and μ/(U − y), zero where the bound is missing (formed once, used twice)
    mu_L, mu_U = geo.on_L(mu_col / lower), geo.on_U(mu_col / upper)
    grad_barrier = grad_y - mu_L + mu_U
    r_x = grad_barrier + torch.cat([rmatvec(J, lam), -geo.inequality(lam)], -1)  # + J_yᵀλ
    kkt_norm = torch.cat([r_x, h], -1).norm(dim=-1)
    theta = torch.clamp(kkt_norm ** sharpen, max=accuracy) if sharpen > 0 else torch.full_like(kkt_norm, accuracy)
    W = minus_r = minus_h = None
    if full:
        W = torch.diag_embed(sigma)
        W[:, :n, :n] += H
        minus_r, minus_h = -r_x, -h
    return y, lower, upper, sigma_L, sigma_U, sigma, Jy, h, mu_L, mu_U, grad_barrier, r_x, theta, W, minus_r, minus_h


def direction(*args):
    """(τ, α_max, z, Δz, α_z, ‖h‖, π, slope, φ(0), active, packed (f, c), Armijo threshold at α_max,
    the full trial point y + α_maxΔy) after the KKT solve gave Δy, Δλ."""
    geo, (y, lower, upper, zl, zu, sigma_L, sigma_U, sigma, mu_L, mu_U, mu, grad_barrier, h, H, dy, dlam, lam,
          penalty_old, f, c, running, c1) = Geometry.take(args)
    n = H.shape[-1]
    dzl = geo.on_L(mu_L - zl - sigma_L * dy)
    dzu = geo.on_U(mu_U - zu + sigma_U * dy)
    tau = torch.clamp(1 - mu, min=0.99)
    # one call for both sides (a missing bound has an infinite gap, no limit)
    alpha_max = fraction_to_boundary(torch.where(geo.has_LU, torch.cat([lower, upper], -1), constant(torch.inf, y)),
                                     torch.cat([dy, -dy], -1), tau)
    z, dz = torch.cat([zl, zu], -1), torch.cat([dzl, dzu], -1)
    # dz is zero where a bound is missing, so that z sets no limit
    alpha_z = fraction_to_boundary(z, dz, tau)
    # ℓ₂ merit φ_μ + π‖h‖ and its penalty (Nocedal & Wright (18.36), ρ = 0.1)
    h_norm = h.norm(dim=-1)
    linear = (grad_barrier * dy).sum(-1)
    dx = dy[:, :n]
    curvature = torch.clamp((dx * matvec(H, dx)).sum(-1) + (sigma * dy * dy).sum(-1), min=0.0)
    needed = (linear + 0.5 * curvature) / (0.9 * h_norm).clamp(min=torch.finfo(y.dtype).tiny)
    # exactness: a minimizer of φ_μ + π‖h‖ is feasible only if π > ‖λ‖₂ (the dual norm); below it
    # the line search trades violation for objective step after step (HS59)
    needed = torch.maximum(needed, 1.1 * (lam + dlam).norm(dim=-1))
    penalty = torch.where((h_norm > 0) & (needed > penalty_old), torch.maximum(needed + 1.0, 2 * penalty_old),
                          penalty_old)
    penalty_h = penalty * h_norm
    slope = linear - penalty_h
    phi0 = geo.barrier_value(f, y, mu, (lower, upper)) + penalty_h
    phi0 = phi0 + 10 * torch.finfo(y.dtype).eps * phi0.abs().clamp(min=1.0)
    active = running & (slope < 0) & finite(slope)
    packed0 = torch.cat([f.unsqueeze(-1), c], -1)
    threshold = phi0 + c1 * alpha_max * slope
    trial = y + alpha_max.unsqueeze(-1) * dy
    return tau, alpha_max, z, dz, alpha_z, h_norm, penalty, slope, phi0, active, packed0, threshold, trial


def trial_merit(*args):
    """(φ_μ + π‖h‖, packed (f, c), ‖h‖) at a trial point y of values f, c."""
    geo, (f, c, y, mu, penalty) = Geometry.take(args)
    n = y.shape[-1] - geo.rows.numel()
    h_norm = geo.h(c, y[:, n:]).norm(dim=-1)
    value = geo.barrier_value(f, y, mu) + penalty * h_norm
    return value, torch.cat([f.unsqueeze(-1), c], -1), h_norm


def judge(*args):
    """The full step's verdict: (its merit, packed (f, c) and ‖h‖; moved, α, packed (f, c) of the
    taken points, pending (a search is still due), corrigible (a second-order correction is due),
    failure) from its f and c."""
    geo, (f, c, trial, mu, penalty, threshold, active, alpha_max, packed0, h_norm, running,
          failure) = Geometry.take(args)
    value, packed_full, h_full = trial_merit(*geo, f, c, trial, mu, penalty)
    moved = active & finite(value) & (value <= threshold)
    alpha = torch.where(moved, alpha_max, constant(0.0, alpha_max))
    packed = torch.where(moved.unsqueeze(-1), packed_full, packed0)
    pending = active & ~moved
    # the second-order correction only where the rejected step raised ‖h‖ (the Maratos effect it is for)
    corrigible = pending & ~(h_full < h_norm)
    failure = torch.where(running & ~active, constant(int(Status.STALLED), failure), failure)
    return value, packed_full, h_full, moved, alpha, packed, pending, corrigible, failure


def update(*args):
    """(x⁺, s⁺ (y⁺ = (x⁺, s⁺)), λ⁺, z_L⁺, z_U⁺, gaps of y⁺, f, c, ‖y⁺ − y‖, jammed) from the accepted α (and the
    second-order correction's ``shift``, None where none was taken). ``dense``: the fields of the
    next state as contiguous tensors rather than views (compiled: the pieces they enter are
    compiled for one layout, that of the loop's masked fields)."""
    geo, (y, alpha, dy, shift, lam, dlam, moved, alpha_z, z, dz, mu, packed, running, dense) = Geometry.take(args)
    half = z.shape[-1] // 2
    mu_col = mu.unsqueeze(-1)
    column = alpha.unsqueeze(-1)
    y_new = y + column * dy if shift is None else y + column * dy + shift
    lam_new = lam + column * dlam
    az = torch.where(moved, alpha_z, constant(0.0, alpha_z)).unsqueeze(-1)
    gaps_new = geo.gaps(y_new)
    both = torch.cat(gaps_new, -1)  # the lower and upper sides in one tensor: one op each for both
    z_new = torch.where(geo.has_LU, torch.clamp(torch.minimum(z + az * dz, KAPPA_SIGMA * mu_col / both),
                                                min=0.0).maximum(mu_col / (KAPPA_SIGMA * both)), constant(0.0, z))
    # only members still running count: the loop discards the others' new state
    jammed = running & (alpha < 1e-2)
    n = half - geo.rows.numel()
    fields = [y_new[:, :n], y_new[:, n:], z_new[:, :half], z_new[:, half:], packed[:, 0], packed[:, 1:]]
    x_new, s_new, zl_new, zu_new, f, c = [t.contiguous() for t in fields] if dense else fields
    return x_new, s_new, lam_new, zl_new, zu_new, gaps_new, f, c, alpha * dy.norm(dim=-1), jammed


def measures(*args):
    """The KKT measures at (x, s, λ, z) and, where ``advance``, the next μ: (∇f, J, optimality,
    violation, complementarity, s_d, infeasible count, best error, stall count, μ⁺).

    ``g_new``/``J_new``: the derivatives at the accepted point, taken where ``moved`` (None: none
    evaluated). ``shortcut``: skip the infeasibility test where no member is infeasible (a host
    read; the eager path's saving, the same values), False where traced. ``rule``: the barrier
    update (see :mod:`.interior_point`)."""
    geo, (c_lower, c_upper, near_L, near_U, mask_LU, x, s, lam, zl, zu, f, g, c, J, g_new, J_new, moved, mu,
          step_norm, count, best, stall, lower, upper, tol, infeasibility_tol, rule, advance,
          shortcut) = Geometry.take(args)
    if g_new is not None:  # where a member did not move it keeps its derivatives
        g = torch.where(moved.unsqueeze(-1), g_new, g)
        J = torch.where(moved.view(-1, 1, 1), J_new, J)
    # ∇f + J_yᵀλ − z_L + z_U with J_y = [J, −selector]: the slack part of J_yᵀλ is −λ of the inequality rows
    dual = torch.cat([g + rmatvec(J, lam), -geo.inequality(lam)], -1) - zl + zu
    h = geo.h(c, s)
    # z is kept zero where a bound is missing (and that gap is 1), so no mask is needed
    products = torch.cat([lower * zl, upper * zu], -1)
    complementarity = products.abs().amax(-1)
    violation = h.abs().amax(-1) if h.shape[-1] else torch.zeros_like(f)
    stationary = _stationary(x, c, J, c_lower, c_upper, near_L, near_U, tol, infeasibility_tol, shortcut)
    optimality, scale = dual.abs().amax(-1), multiplier_scale(lam, zl, zu)
    primal_dual = torch.maximum(optimality / scale, violation)
    error = torch.maximum(primal_dual, complementarity)
    best, stall = track_progress(best, stall, error, x, step_norm)
    infeasible_count = torch.where(stationary, count + 1, torch.zeros_like(count))
    barrier = next_barrier(geo, mu, products, primal_dual, lower, upper, zl, zu, mask_LU, tol / 10, rule) \
        if advance else mu
    return g, J, optimality, violation, complementarity, scale, infeasible_count, best, stall, barrier


def true_violation(c: torch.Tensor, c_lower: torch.Tensor, c_upper: torch.Tensor) -> torch.Tensor:
    return c - torch.minimum(torch.maximum(c, c_lower), c_upper)


def _stationary(x, c, J, c_lower, c_upper, near_L, near_U, tol, infeasibility_tol, shortcut):
    """Members at a stationary point of the violation v: ‖v‖∞ > tol and
    ‖P(Jᵀv)‖∞ ≤ infeasibility_tol·‖v‖∞, P dropping components that push x out through an active bound."""
    if c.shape[-1] == 0:
        return torch.zeros_like(x[:, 0], dtype=torch.bool)
    v = true_violation(c, c_lower, c_upper)
    size = v.abs().amax(-1)
    infeasible = size > tol
    if shortcut and not bool(infeasible.any()):  # every member within tol of feasible: no test to run
        return infeasible
    grad = rmatvec(J, v)
    zero = constant(0.0, grad)
    grad = torch.where(((x <= near_L) & (grad > 0)) | ((x >= near_U) & (grad < 0)), zero, grad)
    measure = grad.abs().amax(-1) / size.clamp(min=torch.finfo(size.dtype).tiny)
    return infeasible & (measure <= infeasibility_tol)


def next_barrier(geo: Geometry, mu, products, primal_dual, lower, upper, zl, zu, mask_LU, floor, rule):
    """μ for the next iteration at a state whose (y − L, U − y) are ``lower``, ``upper``; ``products``
    (y − L)z_L, (U − y)z_U and ``primal_dual`` max(optimality/s_d, violation) as computed there."""
    if rule == "monotone":
        # z is zero and the gap one where a bound is missing: the mask zeroes those deviations
        deviation = torch.nan_to_num(((products - mu.unsqueeze(-1)) * mask_LU).abs()).amax(-1)
        error = torch.maximum(primal_dual, deviation)
        solved = error <= 10 * mu
        return torch.where(solved, torch.clamp(torch.minimum(0.2 * mu, mu ** 1.5), min=floor), mu)
    products = torch.cat([torch.where(geo.has_L, lower * zl, float("nan")),
                          torch.where(geo.has_U, upper * zu, float("nan"))], -1)
    count = (~torch.isnan(products)).sum(-1)
    mean = torch.nan_to_num(products).sum(-1) / count.clamp(min=1)
    smallest = torch.nan_to_num(products, nan=float("inf")).amin(-1)
    xi = (smallest / mean.clamp(min=torch.finfo(mu.dtype).tiny)).clamp(max=1.0)
    centering = 0.1 * torch.clamp(0.05 * (1 - xi) / xi.clamp(min=1e-12), max=2.0) ** 3
    new = torch.clamp(centering * mean, min=floor)
    return torch.where(count > 0, new, torch.full_like(mu, floor))
