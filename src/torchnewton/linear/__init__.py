"""Linear operators and the solvers of the Newton system."""
from .direct import CholeskyFactor, solve_dense
from .krylov import boundary_step, cg, gmres, minres
from .operator import (DenseOperator, DiagonalOperator, LinearOperator, LowRankPlusDiagonal,
                       MatrixFreeOperator, ShiftedOperator, as_operator)
from .precond import jacobi
from .solution import LinearSolution
# public scipy-shaped layer (one matrix, (n,) or (B, n) right-hand sides); cg/minres/gmres of that
# layer live in torchnewton.linear.iterative while the names above stay the internal batched ones
from .bandit import ChebyshevContextualBandit, RelaxationSequence, TsallisINF, play_table, regret, solve_sor_sequence
from .iterative import KrylovResult, bicgstab
from .matrix import CallableOperator, MatrixOperator, SquareOperator, aslinearoperator
from .preconditioners import (Preconditioner, amg_preconditioner, ilu_preconditioner, jacobi_preconditioner,
                              ssor_preconditioner)
from .recycling import RecyclingSolver, skr_order
from .relaxation import sor, young_optimal_omega
from .relaxation_table import sor_iteration_table

__all__ = ["CholeskyFactor", "DenseOperator", "DiagonalOperator", "LinearOperator", "LinearSolution",
           "LowRankPlusDiagonal", "MatrixFreeOperator", "ShiftedOperator", "as_operator", "boundary_step",
           "cg", "gmres", "jacobi", "minres", "solve_dense",
           "CallableOperator", "ChebyshevContextualBandit", "KrylovResult", "MatrixOperator", "Preconditioner",
           "RecyclingSolver", "RelaxationSequence", "SquareOperator", "TsallisINF", "amg_preconditioner",
           "aslinearoperator", "bicgstab", "ilu_preconditioner", "jacobi_preconditioner", "regret", "skr_order",
           "play_table", "solve_sor_sequence", "sor", "sor_iteration_table", "ssor_preconditioner", "young_optimal_omega"]
