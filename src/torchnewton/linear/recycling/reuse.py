"""Reuse one preconditioner across a sequence of similar systems, rebuilding it only when it has aged.

In a sequence sorted so that neighbours are similar (SKR order), the preconditioner built for one
system — an AMG hierarchy, an incomplete factorization — is nearly as good for the next ones,
and its setup often costs more than the solve it accelerates (PyAMG's smoothed-aggregation
setup at n = 128² takes as long as ten of its V-cycles). The rule here is the one used for
"frozen" Jacobians in Newton–Krylov codes: keep M while a solve takes at most ``growth`` times
the iterations of the first solve with it; after a solve that took longer, build a fresh M for
the next system. The solution never depends on M, only the iteration count does.

Example:
    >>> from torchnewton.linear import jacobi_preconditioner
    >>> schedule = ReusedPreconditioner(jacobi_preconditioner, growth=2.0)
    >>> import scipy.sparse as sp
    >>> A = sp.diags([1.0, 2.0]).tocsr()
    >>> M = schedule(A); schedule.record(5); schedule(A) is M
    True
    >>> schedule.record(11); schedule(A) is M, schedule.builds
    (False, 2)
"""
from __future__ import annotations

from typing import Any, Callable


class ReusedPreconditioner:
    """``schedule(A)`` returns the current M (building it from A when there is none or it has
    aged); ``schedule.record(iterations)`` reports the iteration count of the solve that used it."""

    def __init__(self, build: Callable[[Any], Any], *, growth: float = 2.0):
        if not callable(build):
            raise TypeError(f"build must be callable A -> M, got {type(build).__name__}")
        if isinstance(growth, bool) or not isinstance(growth, (int, float)) or not growth >= 1:
            raise ValueError(f"growth must be a number >= 1, got {growth!r}")
        self.build, self.growth = build, float(growth)
        self.current: Any = None
        self.baseline: int | None = None
        self.builds = 0

    def __call__(self, A: Any) -> Any:
        if self.current is None:
            self.current, self.baseline = self.build(A), None
            self.builds += 1
        return self.current

    def record(self, iterations: int) -> None:
        """After a solve with the current M: the first count is the baseline; a count above
        ``growth`` × baseline retires M (the next call builds a new one)."""
        if self.baseline is None:
            self.baseline = max(int(iterations), 1)
        elif iterations > self.growth * self.baseline:
            self.current = None
