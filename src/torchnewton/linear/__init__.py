"""Linear systems: scipy-shaped Krylov solvers, preconditioners, Krylov recycling across sequences
of systems, bandit-tuned SOR — and the batched operators and solvers the Newton methods use.

Public, scipy-shaped (one matrix, (n,) or (B, n) right-hand sides): :func:`cg`, :func:`minres`,
:func:`gmres`, :func:`bicgstab` on dense tensors, ``torch.sparse_csr`` tensors, ``scipy.sparse``
matrices and callables (:func:`aslinearoperator`). The batched per-member solvers of the Newton
engine (one operator per batch member, trust-region CG) are in :mod:`.krylov`.
"""
from .direct import CholeskyFactor, solve_dense
from .krylov import boundary_step
from .operator import (DenseOperator, DiagonalOperator, LinearOperator, LowRankPlusDiagonal,
                       MatrixFreeOperator, ShiftedOperator, as_operator)
from .precond import jacobi
from .solution import LinearSolution
from .bandit import ChebyshevContextualBandit, RelaxationSequence, TsallisINF, play_table, regret, solve_sor_sequence
from .iterative import KrylovResult, bicgstab, cg, gmres, minres
from .matrix import CallableOperator, MatrixOperator, SquareOperator, aslinearoperator
from .preconditioners import (Preconditioner, amg_preconditioner, ilu_preconditioner, jacobi_preconditioner,
                              ssor_preconditioner)
from .recycling import RecyclingSolver, ReusedPreconditioner, skr_order
from .relaxation import sor, young_optimal_omega
from .relaxation_table import sor_iteration_table
from .sketch import KKTOperator, projected_cg, sketch_solve
from .unimodal_bandit import UnimodalThompsonSampling

__all__ = ["CholeskyFactor", "DenseOperator", "DiagonalOperator", "LinearOperator", "LinearSolution",
           "LowRankPlusDiagonal", "MatrixFreeOperator", "ShiftedOperator", "as_operator", "boundary_step",
           "cg", "gmres", "jacobi", "minres", "solve_dense",
           "CallableOperator", "ChebyshevContextualBandit", "KKTOperator", "KrylovResult", "MatrixOperator", "Preconditioner",
           "RecyclingSolver", "RelaxationSequence", "ReusedPreconditioner", "SquareOperator", "TsallisINF", "UnimodalThompsonSampling", "amg_preconditioner",
           "aslinearoperator", "bicgstab", "ilu_preconditioner", "jacobi_preconditioner", "regret", "skr_order",
           "play_table", "projected_cg", "sketch_solve", "solve_sor_sequence", "sor", "sor_iteration_table", "ssor_preconditioner", "young_optimal_omega"]
