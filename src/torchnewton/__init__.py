"""torchnewton: batched, differentiable Newton-type methods for PyTorch.

Families: :func:`root`, :func:`least_squares`, :func:`minimize` (functional, scipy-shaped),
:mod:`torchnewton.linalg` (matrix Newton iterations), :mod:`torchnewton.ot` (entropic optimal
transport with Sinkhorn–Newton), :mod:`torchnewton.recurrence` (parallel-in-time Newton),
:mod:`torchnewton.optim` (training optimizers: the Muon family, second-order methods) and
:mod:`torchnewton.curvature` (Hessian, Gauss–Newton and Fisher operators of an ``nn.Module``),
:func:`fixed_point` (Picard, Anderson, Halpern, Newton on z = T(z)) and :mod:`torchnewton.nn` (the
deep-equilibrium layer ``DEQ``).
"""
from . import curvature, linalg, nn, optim, ot, recurrence
from .core.result import Result
from .core.status import Status
from .solvers.fixed_point.solve import fixed_point
from .solvers.residual.least_squares import least_squares
from .solvers.objective.minimize import minimize
from .solvers.residual.root import root

__all__ = ["Result", "Status", "curvature", "fixed_point", "least_squares", "linalg", "minimize", "nn", "optim",
           "ot", "recurrence", "root"]
__version__ = "0.1.0"
