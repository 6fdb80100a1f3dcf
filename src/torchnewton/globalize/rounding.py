"""A gain ratio that stays meaningful when the decrease is at the level of rounding errors.

Near a solution f(x) − f(x+s) and the model's predicted decrease both fall below ε|f|, where the
computed difference is noise and the plain ratio ρ rejects good steps until the radius (or the
cubic weight σ) degenerates. Shifting numerator and denominator by δ = 10ε·max(1, |f|) makes
ρ → 1 in that regime and leaves it unchanged when the decreases are large (Conn, Gould & Toint,
Trust-Region Methods, SIAM 2000, §17.4.2). Per member: (B,) tensors, or one problem's floats
(``dtype`` then gives ε).
"""
from __future__ import annotations

from typing import Any

import torch

from .members import ops_of
from .radius import gain_ratio


def rounding_safe_ratio(f: Any, f_trial: Any, predicted: Any, dtype: torch.dtype = torch.float64) -> Any:
    """ρ = (f − f_trial + δ) / (predicted + δ); −inf for a non-finite trial (reject).

    Example:
        >>> f = torch.tensor([1.0]); rounding_safe_ratio(f, f - 1e-17, torch.tensor([1e-18]))
        tensor([1.])
        >>> round(rounding_safe_ratio(1.0, 1.0 - 1e-17, 1e-18), 3)  # δ from float64's eps here
        1.0
    """
    o = ops_of(f)
    eps = torch.finfo(f.dtype if o.batched else dtype).eps
    delta = 10 * eps * o.clamp(abs(f), min=1.0)
    return gain_ratio(f - f_trial + delta, predicted + delta)
