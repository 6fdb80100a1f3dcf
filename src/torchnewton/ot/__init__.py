"""Entropic optimal transport: log-domain Sinkhorn, ε-scaling and Sinkhorn–Newton–Sparse.

>>> from torchnewton.ot import sinkhorn, squared_euclidean
>>> res = sinkhorn(a, b, squared_euclidean(x, y), reg=1e-2)  # doctest: +SKIP
"""
from .costs import grid_cost, grid_points, pnorm_cost, squared_euclidean
from .result import OTResult
from .sinkhorn import EpsilonScalingSinkhorn, LogSinkhorn
from .solve import METHODS, sinkhorn
from .sparse_newton import SinkhornNewtonSparse
from .wasserstein import wasserstein

__all__ = ["METHODS", "EpsilonScalingSinkhorn", "LogSinkhorn", "OTResult", "SinkhornNewtonSparse", "grid_cost",
           "grid_points", "pnorm_cost", "sinkhorn", "squared_euclidean", "wasserstein"]
