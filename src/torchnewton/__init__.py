"""torchnewton: batched, differentiable Newton-type methods for PyTorch.

Families: :func:`root`, :func:`least_squares`, :func:`minimize` (functional, scipy-shaped),
:mod:`torchnewton.linalg` (matrix Newton iterations), :mod:`torchnewton.ot` (entropic optimal
transport with Sinkhorn–Newton) and :mod:`torchnewton.recurrence` (parallel-in-time Newton).
"""
from . import linalg, ot, recurrence
from .core.result import Result
from .core.status import Status
from .solvers.least_squares import least_squares
from .solvers.minimize import minimize
from .solvers.root import root

__all__ = ["Result", "Status", "least_squares", "linalg", "minimize", "ot", "recurrence", "root"]
__version__ = "0.1.0"
