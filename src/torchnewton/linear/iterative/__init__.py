"""Public scipy-shaped Krylov solvers for one (sparse) matrix and one or a batch of right-hand sides."""
from .common import KrylovResult
from .nonsymmetric import bicgstab, gmres
from .symmetric import cg, minres

__all__ = ["KrylovResult", "bicgstab", "cg", "gmres", "minres"]
