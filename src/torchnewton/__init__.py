"""torchnewton: batched, differentiable Newton-type methods for PyTorch.

Families: :func:`root`, :func:`least_squares`, :func:`minimize` (functional, scipy-shaped; with
``constraints=``/``bounds=`` a constrained solve by SQP or an interior point),
:mod:`torchnewton.linalg` (matrix Newton iterations), :mod:`torchnewton.ot` (entropic optimal
transport with Sinkhorn–Newton), :mod:`torchnewton.recurrence` (parallel-in-time Newton),
:mod:`torchnewton.optim` (training optimizers: the Muon family, second-order methods) and
:mod:`torchnewton.curvature` (Hessian, Gauss–Newton and Fisher operators of an ``nn.Module``),
:func:`fixed_point` (Picard, Anderson, Halpern, Newton on z = T(z)), :func:`monotone_inclusion`
(Halpern and variance-reduced Halpern for finite sums), :mod:`torchnewton.nn` (the deep-equilibrium
layer ``DEQ``, layer-parallel residual stacks) and :mod:`torchnewton.linear` (Krylov solvers,
recycling across sequences of systems, bandit-tuned SOR).
"""
from . import curvature, linalg, linear, nn, optim, ot, recurrence
from .core.result import Result
from .core.status import Status
from .solvers.constrained.spec import NonlinearConstraint
from .solvers.fixed_point.solve import fixed_point
from .solvers.monotone.operator import FiniteSumOperator
from .solvers.monotone.solve import monotone_inclusion
from .solvers.residual.least_squares import least_squares
from .solvers.objective.minimize import minimize
from .solvers.residual.root import root

__all__ = ["FiniteSumOperator", "NonlinearConstraint", "Result", "Status", "curvature", "fixed_point", "least_squares",
           "linalg", "linear", "minimize", "monotone_inclusion", "nn", "optim", "ot", "recurrence", "root"]
__version__ = "0.1.0"
