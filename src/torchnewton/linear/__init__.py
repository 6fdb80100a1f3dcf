"""Linear operators and the solvers of the Newton system."""
from .direct import CholeskyFactor, solve_dense
from .krylov import boundary_step, cg, gmres, minres
from .operator import (DenseOperator, DiagonalOperator, LinearOperator, LowRankPlusDiagonal,
                       MatrixFreeOperator, ShiftedOperator, as_operator)
from .precond import jacobi
from .solution import LinearSolution

__all__ = ["CholeskyFactor", "DenseOperator", "DiagonalOperator", "LinearOperator", "LinearSolution",
           "LowRankPlusDiagonal", "MatrixFreeOperator", "ShiftedOperator", "as_operator", "boundary_step",
           "cg", "gmres", "jacobi", "minres", "solve_dense"]
