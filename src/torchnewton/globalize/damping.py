"""Levenberg–Marquardt damping: the damped Gauss–Newton step, and λ from a trust radius.

The Levenberg–Marquardt step for min ½‖F + J p‖² with variable scaling D = diag(d) is

    p(λ) = argmin ‖J p + F‖² + λ‖D p‖²,   i.e. (JᵀJ + λD²) p = −JᵀF.

Moré (1978, "The Levenberg–Marquardt algorithm: implementation and theory", Numerical
Analysis, LNM 630) treats λ as the multiplier of the trust-region constraint ‖D p‖ ≤ Δ: λ = 0
when the Gauss–Newton step is short enough, else λ > 0 with ‖D p(λ)‖ = Δ, found by the
Moré–Hebden iteration (Newton's method on 1/‖D p(λ)‖ − 1/Δ, safeguarded by a bracket).

Here both are evaluated in the singular value decomposition of the scaled Jacobian
J D⁻¹ = U diag(σ) Vᵀ: with c = UᵀF the scaled step is

    q(λ) = D p(λ) = −V diag(σᵢ / (σᵢ² + λ)) c,   ‖q(λ)‖² = Σ σᵢ² cᵢ² / (σᵢ² + λ)²,

so one decomposition per Jacobian serves every λ a rejected step asks for at O(n²) each, and the
step keeps the accuracy of a QR solve (it never forms JᵀJ, whose condition number is κ(J)²).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .members import lean, ops_of


def levenberg_marquardt_step(J: torch.Tensor, F: torch.Tensor, damping: torch.Tensor,
                             scale: torch.Tensor) -> torch.Tensor:
    """Solve min ‖J p + F‖² + λ‖D p‖² for p, batched (J (B, m, n), F (B, m), λ (B,), D diag (B, n)).

    Solved as the least-squares problem [J; √λ D] p ≈ [−F; 0] by QR rather than the normal
    equations, so the conditioning is κ(J), not κ(J)² (Moré 1978, "The Levenberg–Marquardt
    algorithm: implementation and theory").
    """
    lower = torch.diag_embed(damping.sqrt().unsqueeze(-1) * scale)
    A = torch.cat([J, lower], dim=-2)
    rhs = torch.cat([-F, torch.zeros_like(scale)], dim=-1).unsqueeze(-1)
    Q, R = torch.linalg.qr(A)
    return _triangular_or_lstsq(R, Q.transpose(-1, -2) @ rhs, A, rhs)


def gauss_newton_step(J: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """The Gauss–Newton step min ‖J p + F‖ (λ = 0 above) by the QR of J itself, batched; the
    minimum-norm step where J is rank-deficient (or m < n), as :func:`levenberg_marquardt_step`.

    Example:
        >>> gauss_newton_step(torch.eye(2).expand(1, 2, 2), torch.ones(1, 2))
        tensor([[-1., -1.]])
    """
    rhs = -F.unsqueeze(-1)
    if J.shape[-2] < J.shape[-1]:
        return (torch.linalg.pinv(J) @ rhs).squeeze(-1)
    Q, R = torch.linalg.qr(J)
    return _triangular_or_lstsq(R, Q.transpose(-1, -2) @ rhs, J, rhs)


def _triangular_or_lstsq(R: torch.Tensor, Qtb: torch.Tensor, A: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    eps, tiny, n = torch.finfo(R.dtype).eps, torch.finfo(R.dtype).tiny, R.shape[-1]
    p = torch.linalg.solve_triangular(R, Qtb, upper=True).squeeze(-1)
    if lean(R):  # one problem: its pivots read back once, the rank test on floats
        diag = [abs(v) for v in R.diagonal(dim1=-2, dim2=-1).tolist()[0]]
        threshold = eps * max(max(diag), tiny) * n
        if all(v > threshold for v in diag):  # (False for a NaN pivot, as the tensor test)
            return p
        return (torch.linalg.pinv(A) @ rhs).squeeze(-1)
    diag = R.diagonal(dim1=-2, dim2=-1).abs()
    rank_ok = diag.min(-1).values > eps * diag.max(-1).values.clamp(min=tiny) * n
    if bool(rank_ok.all()):
        return p
    # rank-deficient [J; √λD] (λ = 0 with singular J): minimum-norm solution via pseudo-inverse
    p_min = (torch.linalg.pinv(A) @ rhs).squeeze(-1)
    return torch.where(rank_ok.unsqueeze(-1), p, p_min)


@dataclass
class ScaledJacobian:
    """J D⁻¹ = U diag(σ) Vᵀ with c = UᵀF: what every damped step at one linearization needs.

    ``singular`` σ (B, k) descending, ``vectors`` V (B, n, k), ``coefficients`` c (B, k),
    ``scale`` d (B, n), k = min(m, n). ``significant`` marks σᵢ > σ₁·max(m, n)·ε; the others
    count as zero in the undamped (λ = 0) step, which is then the minimum-norm Gauss–Newton step,
    as MINPACK's rank-revealing QR makes it for a rank-deficient J.
    """

    singular: torch.Tensor
    vectors: torch.Tensor
    coefficients: torch.Tensor
    scale: torch.Tensor
    significant: torch.Tensor

    @classmethod
    def of(cls, J: torch.Tensor, F: torch.Tensor, scale: torch.Tensor, finite: bool | None = None) -> "ScaledJacobian":
        """Decompose J D⁻¹ per member; a member with a non-finite J or F gets σ = c = NaN (see
        ``finite``) instead of aborting the batched SVD for everyone. ``finite=True`` vouches for a
        batch of one (the caller read its norms): no test before the SVD."""
        scaled = J / scale.unsqueeze(-2)
        if finite is not True or not lean(J):
            finite = torch.isfinite(scaled).all(-1).all(-1) & torch.isfinite(F).all(-1)
        if lean(J) and bool(finite):  # one finite member: nothing to mask
            U, sigma, Vh = torch.linalg.svd(scaled, full_matrices=False)
            significant = sigma > sigma[..., :1] * torch.finfo(sigma.dtype).eps * max(J.shape[-2:])
            return cls(sigma, Vh.transpose(-1, -2), (U * F.unsqueeze(-1)).sum(-2), scale, significant)
        U, sigma, Vh = torch.linalg.svd(torch.where(finite.view(-1, 1, 1), scaled, torch.zeros_like(scaled)),
                                        full_matrices=False)
        c = (U * torch.where(finite.unsqueeze(-1), F, torch.zeros_like(F)).unsqueeze(-1)).sum(-2)
        nan = torch.full_like(sigma, float("nan"))
        significant = sigma > sigma[..., :1] * torch.finfo(sigma.dtype).eps * max(J.shape[-2:])
        return cls(torch.where(finite.unsqueeze(-1), sigma, nan), Vh.transpose(-1, -2),
                   torch.where(finite.unsqueeze(-1), c, nan), scale, significant)

    @classmethod
    def of_one(cls, J: torch.Tensor, F: torch.Tensor, scale: list[float]) -> tuple["ScaledJacobian", "ScaledSpectrum"]:
        """One problem's decomposition (J (1, m, n) and F (1, m) finite, on the CPU) and its floats
        (:meth:`spectrum`) in one go: the same SVD and c = UᵀF as :meth:`of`, so the same bits,
        without the masking, each tensor read back in one ``tolist`` and the significance test on
        the floats (its cut-off rounded in J's dtype): about a dozen calls, where every one counts
        because the user's function has just evicted them from the caches.

        Example:
            >>> J = torch.tensor([[[3.0, 0.0], [0.0, 0.5]]]); F = torch.ones(1, 2)
            >>> decomposition, spectrum = ScaledJacobian.of_one(J, F, [3.0, 0.5])
            >>> spectrum.singular, decomposition.singular.shape
            ([1.0, 1.0], torch.Size([1, 2]))
        """
        J_host = J.detach().numpy() if J.requires_grad else J.numpy()
        F_host = F.detach().numpy() if F.requires_grad else F.numpy()
        d = np.array([scale], dtype=J_host.dtype)  # (1, n): broadcasts over the rows of J (1, m, n)
        U, sigma, Vh = torch.linalg.svd(torch.from_numpy(J_host / d), full_matrices=False)
        # (U * F).sum(-2) of :meth:`of`: the same kernel. Views and masks are made in numpy and
        # wrapped (``from_numpy``): after the user's function has evicted torch's dispatcher from
        # the caches, a torch view or comparison costs 10–20 µs there, the numpy route 3–5 µs
        c = torch.linalg.vecdot(U, torch.from_numpy(F_host[:, :, None]), dim=-2)
        # the read-back straight from the tensors, one call each; V's rows are the columns of Vh
        sigma_list, c_list, rows = sigma.tolist()[0], c.tolist()[0], Vh.tolist()[0]
        threshold = _cutoff(sigma_list[0], J_host.dtype, max(J_host.shape[1:]))
        mask = [s > threshold for s in sigma_list]
        spectrum = ScaledSpectrum(sigma_list, c_list, mask, all(mask) and len(mask) == J_host.shape[-1],
                                  [list(row) for row in zip(*rows)], list(scale))
        return cls(sigma, torch.from_numpy(Vh.numpy().transpose(0, 2, 1)), c, torch.from_numpy(d),
                   torch.from_numpy(np.array([mask]))), spectrum

    @property
    def finite(self) -> torch.Tensor:
        return torch.isfinite(self.singular).all(-1)

    @property
    def full_rank(self) -> torch.Tensor:
        return self.significant.all(-1) & (self.singular.shape[-1] == self.scale.shape[-1])

    def _weights(self, damping: torch.Tensor) -> torch.Tensor:
        """σᵢ / (σᵢ² + λ), with the pseudo-inverse's cut-off at λ = 0."""
        sigma, lam = self.singular, damping.unsqueeze(-1)
        keep = (lam > 0) | self.significant
        denominator = torch.where(keep, sigma * sigma + lam, torch.ones_like(sigma))
        return torch.where(keep, sigma / denominator, torch.zeros_like(sigma))

    def step(self, damping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(p(λ), ‖D p(λ)‖) per member."""
        q = -(self.vectors * (self._weights(damping) * self.coefficients).unsqueeze(-2)).sum(-1)
        return q / self.scale, q.norm(dim=-1)

    def scaled_norm(self, damping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(‖q(λ)‖, S(λ) = Σ σᵢ²cᵢ²/(σᵢ² + λ)³ = −½ d‖q‖²/dλ), in O(k) from the decomposition."""
        weights = self._weights(damping)
        w = weights * self.coefficients
        # σ²c²/(σ²+λ)³ = w² · (σ/(σ²+λ)) / σ, written without dividing by a zero σ
        slope = torch.where(weights > 0, w * w * weights / torch.where(weights > 0, self.singular,
                                                                        torch.ones_like(w)), torch.zeros_like(w))
        return w.norm(dim=-1), slope.sum(-1)

    def scaled_gradient_norm(self) -> torch.Tensor:
        """‖D⁻¹JᵀF‖ = ‖diag(σ) c‖."""
        return (self.singular * self.coefficients).norm(dim=-1)

    def spectrum(self) -> "ScaledSpectrum":
        """The one member of a batch of one as Python floats (the lean path), in one read-back."""
        n, k = self.vectors.shape[-2:]
        parts = (self.singular, self.coefficients, self.significant.to(self.singular.dtype), self.scale)
        flat = torch.cat([*parts, self.vectors.reshape(1, -1)], dim=-1).tolist()[0]
        sigma, c, significant, d, v = flat[:k], flat[k:2 * k], flat[2 * k:3 * k], flat[3 * k:3 * k + n], flat[3 * k + n:]
        significant = [s > 0 for s in significant]
        return ScaledSpectrum(sigma, c, significant, all(significant) and k == n,
                              [v[i * k:(i + 1) * k] for i in range(n)], d)


def _cutoff(largest: float, dtype: np.dtype, size: int) -> float:
    """The significance cut-off σ₁·ε·max(m, n), rounded in ``dtype`` as the tensor test computes it
    (Python floats are float64: there the same IEEE products, without numpy's scalar calls)."""
    if dtype == np.float64:
        return largest * _EPS64 * size
    return float(dtype.type(largest) * np.finfo(dtype).eps * size)


_EPS64 = float(np.finfo(np.float64).eps)


@dataclass
class ScaledSpectrum:
    """σ, c, V, d and the significance mask of one member as Python numbers: the O(k) sums a λ
    search repeats and the O(nk) step cost microseconds instead of a dozen torch calls each. Same
    formulas as :class:`ScaledJacobian`, summed in order (equal to round-off)."""

    singular: list[float]
    coefficients: list[float]
    significant: list[bool]
    full_rank: bool
    vectors: list[list[float]]  # the rows of V (n × k)
    scale: list[float]  # d

    def _weights(self, damping: float) -> list[float]:
        """σᵢ / (σᵢ² + λ), cut off as :meth:`ScaledJacobian._weights`."""
        return [sigma / (sigma * sigma + damping) if (damping > 0 or significant) and sigma * sigma + damping != 0
                else 0.0 for sigma, significant in zip(self.singular, self.significant)]

    def trial(self, damping: float) -> tuple[list[float], float, float]:
        """(p(λ), ‖D p(λ)‖, ‖J p(λ)‖): q = −V (w ⊙ c), p = D⁻¹q and, on the same weights, the
        model value ‖J p‖ = ‖diag(σ) Vᵀ q‖ = ‖σ ⊙ w ⊙ c‖ (V has orthonormal columns)."""
        weights = self._weights(damping)
        wc = [w * c for w, c in zip(weights, self.coefficients)]
        q = [-sum(v * u for v, u in zip(row, wc)) for row in self.vectors]
        model = math.sqrt(sum((s * w * c) * (s * w * c) for s, w, c in zip(self.singular, weights, self.coefficients)))
        return [qi / d for qi, d in zip(q, self.scale)], math.sqrt(sum(qi * qi for qi in q)), model

    def scaled_norm(self, damping: float) -> tuple[float, float]:
        norm2 = slope = 0.0
        for sigma, weight, c in zip(self.singular, self._weights(damping), self.coefficients):
            w = weight * c
            norm2 += w * w
            if weight > 0:
                slope += w * w * weight / sigma
        return math.sqrt(norm2), slope

    def scaled_gradient_norm(self) -> float:
        return math.sqrt(sum((s * c) * (s * c) for s, c in zip(self.singular, self.coefficients)))


def levenberg_marquardt_parameter(jac: ScaledJacobian | ScaledSpectrum, radius: torch.Tensor | float,
                                  previous: torch.Tensor | float, iterations: int = 10,
                                  dtype: torch.dtype = torch.float64) -> torch.Tensor | float:
    """λ ≥ 0 with ‖D p(λ)‖ ≤ 1.1 Δ, and λ = 0 or ‖D p(λ)‖ ≥ 0.9 Δ: Moré (1978), Algorithm 5.5.

    λ = 0 when the Gauss–Newton step satisfies ‖q(0)‖ ≤ 1.1 Δ. Otherwise φ(λ) = ‖q(λ)‖ − Δ is
    convex and decreasing, and the Moré–Hebden update λ ← λ + (φ/Δ)·‖q‖²/S(λ) (Newton's method on
    1/‖q‖ − 1/Δ, which is nearly linear in λ) is kept inside a bracket [l, u]: l is the Newton
    iterate from λ = 0 (a lower bound by convexity; 0 for a rank-deficient J), u = ‖D⁻¹JᵀF‖/Δ.
    The search starts from ``previous`` (the λ of the last step, clipped to the bracket), which is
    why a rejected step's next λ usually needs one or two updates. The 10 % tolerance on ‖q‖ is
    Moré's: the trust region only needs the length roughly. Batched, every member its own λ;
    given ``radius`` and ``previous`` as Python floats, λ of one problem as a float (``dtype`` is
    then the problem's, whose smallest normal number guards the divisions).
    """
    o = ops_of(radius)
    if not o.batched and isinstance(jac, ScaledJacobian):
        jac = jac.spectrum()
    tiny = torch.finfo(jac.singular.dtype if o.batched else dtype).tiny
    zero = o.full(radius, 0.0)
    gauss_newton_norm, gauss_newton_slope = jac.scaled_norm(zero)
    phi0 = gauss_newton_norm - radius
    settled = phi0 <= 0.1 * radius
    newton_from_zero = phi0 / radius * (gauss_newton_norm * gauss_newton_norm) / o.clamp(gauss_newton_slope, min=tiny)
    lower = o.where(jac.full_rank & (gauss_newton_slope > 0), newton_from_zero, zero)
    gradient_norm = jac.scaled_gradient_norm()
    upper = gradient_norm / radius
    upper = o.where(upper > 0, upper, tiny / o.clamp(radius, max=0.1))
    lam = o.minimum(o.maximum(previous, lower), upper)
    lam = o.where(lam == 0, gradient_norm / o.clamp(gauss_newton_norm, min=tiny), lam)
    last_phi = phi0
    for iteration in range(iterations):
        if o.all(settled):
            break
        lam = o.where(lam == 0, o.clamp(1e-3 * upper, min=tiny), lam)
        norm, slope = jac.scaled_norm(lam)
        phi = norm - radius
        # rank-deficient J with lower = 0: when φ went negative and keeps decreasing, λ is already
        # past the root and the step is short enough; stop there (MINPACK's lmpar does the same)
        settled = settled | (abs(phi) <= 0.1 * radius) | ((lower == 0) & (phi <= last_phi) & (last_phi < 0))
        settled = settled | (iteration == iterations - 1)
        correction = phi / radius * (norm * norm) / o.clamp(slope, min=tiny)
        lower = o.where(phi > 0, o.maximum(lower, lam), lower)
        upper = o.where(phi < 0, o.minimum(upper, lam), upper)
        lam = o.where(settled, lam, o.maximum(lower, lam + correction))
        last_phi = phi
    return o.where(phi0 <= 0.1 * radius, zero, lam)
