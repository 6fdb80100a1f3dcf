"""Evaluation counters shared by a problem and the loop that reports them in the Result."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    """Numbers of (batched) calls. One call on a (B, n) batch counts once."""

    nfev: int = 0
    njev: int = 0
    nhev: int = 0
    nlinsolve: int = 0
