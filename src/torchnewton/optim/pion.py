"""Pion: Muon with a spectral high-pass filter in place of the orthogonalization.

Fan, Liu, Hong, Kompella, Liu, "Rethinking Muon Beyond Pretraining: Spectral Failures and
High-Pass Remedies for VLA and RLVR" (2026). Muon maps every singular value of the momentum to 1,
so a noisy tail of small singular values gets the same step as the signal; Pion maps the leading
ones to 1 and the tail to 0:

    O = U F(S / s) V^T,   F ≈ step function (0 below the cut, 1 above),   W <- (1 - lr wd) W - lr s(m, n) O,

with F a composition of odd polynomials (matrix products only, Muon's cost).

- ``threshold=tau`` (default 0.5): singular values >= tau sigma_1 go to 1 and those
  <= transition tau sigma_1 to 0, within the design error (3e-5 for the defaults; the
  response crosses 1/2 at 0.87 tau and is below 0.01 under 0.75 tau); s is the largest
  singular value sigma_1, estimated (``spectral_filters.spectral_normalization``: s within 11%
  below sigma_1 on the Gaussian, decaying, low-rank and flat spectra of the tests, never below
  sigma_1 / 1.5, above sigma_1 only for a flat top with m > 656) and the polynomials are
  designed for this target by ``torchnewton.linalg.highpass_coefficients`` (Polar Express
  promotion steps, then two-band minimax suppression steps).
- ``threshold=None``: the paper's own filter, s = ||M||_F, ``promotion_steps`` (k_p, default 1)
  steps of the promotion quintic (15x - 10x^3 + 3x^5) / 8, then ``steps - k_p`` of the
  suppression quintic (5x^3 - 3x^5) / 2; its cut is wherever k_p promotion steps put the
  pre-image of the suppression's repelling point sqrt(2/3): 0.52 ||M||_F for k_p = 1 (with 4
  suppression steps: F(0.4) < 0.01, F(0.6) > 0.99), 0.30 for k_p = 2, 0.16 for k_p = 3 (the
  paper's "filter strength": more promotion, lower cut). Since ||M||_F >= sigma_1, this cut
  keeps at most 1 / 0.52^2 < 4 directions for k_p = 1.

``per_head=k`` filters each of k row blocks on its own (the paper's per-head mode, which keeps
the heads' own spectra apart, to preserve pretrained per-head specialization).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from ..linalg.coefficients import newton_schulz_limit
from ..linalg.highpass import highpass_coefficients, suppression_limit
from .distributed import ProcessGroupOption
from .pipeline import MatrixOptimizer
from .spectral_filters import (
    apply_odd_polynomials,
    check_dtype,
    frobenius_normalization,
    spectral_normalization,
)
from .validate import check_positive_int

# The designed filter's pass band reaches 1.5 sigma_1-estimates: the normalization guarantees
# sigma_1 / s <= 1.5 (see spectral_filters), and above the pass band the polynomials diverge.
PASS_BAND_UPPER = 1.5
PAPER_PROMOTION = newton_schulz_limit(5)
PAPER_SUPPRESSION = suppression_limit(5)


def paper_highpass_coefficients(steps: int, promotion_steps: int) -> tuple[tuple[float, ...], ...]:
    """The paper's schedule: k_p promotion quintics, then suppression quintics up to ``steps``.

    Example:
        >>> paper_highpass_coefficients(3, 1)
        ((1.875, -1.25, 0.375), (0.0, 2.5, -1.5), (0.0, 2.5, -1.5))
    """
    return (PAPER_PROMOTION,) * promotion_steps + (PAPER_SUPPRESSION,) * (steps - promotion_steps)


class Pion(MatrixOptimizer):
    """Pion: the momentum's leading singular directions at unit size, its spectral tail removed.

    Args:
        params, lr, momentum, nesterov, weight_decay, adjust_lr, per_head, adamw_*: as for
            :class:`torchnewton.optim.Muon`.
        threshold: the cut tau relative to the largest singular value, in (0, 1); None selects
            the paper's fixed polynomials (Frobenius-relative cut set by ``promotion_steps``).
        transition: the stop band ends at ``transition * threshold`` (designed filter only).
        steps: polynomial steps (matrix products: about three per step, as Muon).
        promotion_steps: Polar Express (designed) or promotion (paper) steps among ``steps``;
            None: the design's best count (designed), 1 (paper).
        power_iterations: iterations of the largest-singular-value estimate (designed filter).
        dtype: precision of the iteration; default bfloat16 on CUDA, float32 elsewhere.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> opt = Pion(model.parameters(), lr=0.02, threshold=0.3, adamw_lr=1e-3)
        >>> model(torch.randn(4, 8)).square().mean().backward(); opt.step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.02, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, *, threshold: float | None = 0.5,
                 transition: float = 0.5, steps: int = 5, promotion_steps: int | None = None,
                 power_iterations: int = 8, dtype: torch.dtype | None = None,
                 adjust_lr: str = "original", per_head: int = 1, adamw_lr: float = 3e-4,
                 adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_wd: float = 0.0, process_group: ProcessGroupOption = None) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         adjust_lr=adjust_lr, per_head=per_head, adamw_lr=adamw_lr,
                         adamw_betas=adamw_betas, adamw_eps=adamw_eps, adamw_wd=adamw_wd,
                         process_group=process_group, threshold=threshold, transition=transition,
                         steps=steps, promotion_steps=promotion_steps,
                         power_iterations=power_iterations, dtype=dtype)

    def _check_family(self, h: dict[str, Any]) -> None:
        check_positive_int("steps", h["steps"])
        check_positive_int("power_iterations", h["power_iterations"])
        check_dtype(h["dtype"])
        kp = h["promotion_steps"]
        if kp is not None and (isinstance(kp, bool) or not isinstance(kp, int) or not 0 <= kp < h["steps"]):
            raise ValueError(f"promotion_steps must be None or an integer in [0, steps={h['steps']}), got {kp!r}")
        if h["threshold"] is not None:
            _check_open_unit_interval("threshold", h["threshold"])
        _check_open_unit_interval("transition", h["transition"])
        # Design now (cached), so an infeasible combination fails before any step.
        self._schedule(h)

    def _schedule(self, group: dict[str, Any]) -> tuple[tuple[float, ...], ...]:
        if group["threshold"] is None:
            kp = 1 if group["promotion_steps"] is None else group["promotion_steps"]
            return paper_highpass_coefficients(group["steps"], kp)
        return highpass_coefficients(float(group["threshold"]), group["steps"], 5, float(group["transition"]),
                                     PASS_BAND_UPPER, group["promotion_steps"])

    def _transform(self, M: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if group["threshold"] is None:
            # On a flat spectrum the paper's cut removes everything; see ``flush_vanishing``.
            return apply_odd_polynomials(M, self._schedule(group), frobenius_normalization(1.0), group["dtype"],
                                         flush_vanishing=True)
        normalize = spectral_normalization(PASS_BAND_UPPER, group["power_iterations"])
        return apply_odd_polynomials(M, self._schedule(group), normalize, group["dtype"])


def _check_open_unit_interval(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
