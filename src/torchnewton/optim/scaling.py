"""Learning-rate scaling of an orthogonalized update by the matrix shape.

An orthogonal (rows x cols) matrix has RMS entry 1 / sqrt(max(rows, cols)), so the raw update's
size depends on the shape. The rules (factor multiplying lr for a rows x cols matrix):

- "original":        sqrt(max(1, rows / cols))  (Keller Jordan's Muon);
- "match_rms_adamw": 0.2 sqrt(max(rows, cols)) (Liu et al., "Muon is Scalable for LLM Training",
  2025: RMS 0.2 like a typical AdamW update, so AdamW's lr and weight decay carry over);
- "spectral":        sqrt(rows / cols)          (the spectral-norm scaling of Bernstein & Newhouse:
  the update has operator norm sqrt(fan_out / fan_in)).
"""
from __future__ import annotations

import math

ADJUST_LR_RULES = ("original", "match_rms_adamw", "spectral")


def adjust_lr_factor(rule: str, rows: int, cols: int) -> float:
    """The factor of ``rule`` for a rows x cols matrix.

    Example:
        >>> adjust_lr_factor("match_rms_adamw", 256, 1024)
        6.4
    """
    if rule == "original":
        return math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if rule == "spectral":
        return math.sqrt(rows / cols)
    raise ValueError(f"adjust_lr must be one of {', '.join(map(repr, ADJUST_LR_RULES))}; got {rule!r}")
