"""The trust-radius update and the gain ratio, per member: on (B,) tensors or one problem's floats.

The same rules as ``globalize.trust_region`` (``gain_ratio``, ``update_radius``), written against
``globalize.members`` so that a single solve on the CPU (the loop's lean path) takes its
accept/shrink/grow decisions on Python floats. In float64 both backends give bitwise the same
numbers (the arithmetic is the same sequence of IEEE operations).

Example:
    >>> import torch
    >>> update_radius(1.0, 0.9, 1.0)  # a good step on the boundary doubles Δ
    2.0
    >>> update_radius(torch.tensor([1.0]), torch.tensor([0.1]), torch.tensor([1.0]))
    tensor([0.2500])
"""
from __future__ import annotations

import math
from typing import Any

from .members import ops_of


def gain_ratio(actual: Any, predicted: Any) -> Any:
    """ρ = actual / predicted reduction; a non-positive prediction gives −1 and a non-finite
    ratio −inf (reject)."""
    o = ops_of(predicted)
    rho = o.where(predicted > 0, o.divide(actual, o.where(predicted > 0, predicted, 1.0)), -1.0)
    return o.where(o.isfinite(rho), rho, -math.inf)


def update_radius(radius: Any, rho: Any, step_norm: Any, *, max_radius: float = math.inf,
                  shrink_below: float = 0.25, expand_above: float = 0.75) -> Any:
    """Nocedal & Wright Alg. 4.1: shrink to ¼‖s‖ on a poor model fit, double on a good fit whose
    step reached the boundary, else keep."""
    o = ops_of(radius)
    on_boundary = step_norm >= 0.99 * radius
    shrunk = 0.25 * o.minimum(step_norm, radius)
    grown = o.clamp(2 * radius, max=max_radius)
    return o.where(rho < shrink_below, shrunk, o.where((rho > expand_above) & on_boundary, grown, radius))
