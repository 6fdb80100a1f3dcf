"""Termination statuses shared by every solver in torchnewton."""
from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """Why an iterative method stopped. Stored per problem as an int tensor under batching."""

    SUCCESS = 0
    MAX_ITER = 1
    NONFINITE = 2
    SINGULAR = 3
    STALLED = 4
    LINESEARCH_FAILED = 5
    INFEASIBLE = 6
    BREAKDOWN = 7
    NEGATIVE_CURVATURE = 8
    RUNNING = 9
    CALLBACK_STOP = 10
    LOCALLY_INFEASIBLE = 11
    UNBOUNDED = 12

    def __str__(self) -> str:
        return self.name

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.SUCCESS: "converged to the requested tolerance",
    Status.MAX_ITER: "iteration limit reached before convergence",
    Status.NONFINITE: "non-finite values encountered and the method could not recover",
    Status.SINGULAR: "linear system singular; the last steps were regularized and did not converge",
    Status.STALLED: "no further progress possible (step or decrease below machine precision)",
    Status.LINESEARCH_FAILED: "line search could not find an acceptable step",
    Status.INFEASIBLE: "no feasible point found",
    Status.BREAKDOWN: "iterative linear solver broke down",
    Status.NEGATIVE_CURVATURE: "negative curvature direction found",
    Status.RUNNING: "not yet terminated",
    Status.CALLBACK_STOP: "stopped by the callback before convergence",
    Status.LOCALLY_INFEASIBLE: "converged to a stationary point of the constraint violation that is not feasible "
                               "(locally infeasible)",
    Status.UNBOUNDED: "the objective appears unbounded below on the feasible set",
}
