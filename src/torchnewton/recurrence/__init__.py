"""Parallel-in-time Newton methods for nonlinear recurrences ``h_t = f(h_{t-1}, x_t)``.

* :func:`linear_scan`: associative and chunked scans for ``h_t = A_t h_{t-1} + b_t``
  (diagonal, block and dense ``A_t``), differentiable.
* :func:`solve`: DEER (newton), quasi-DEER (quasi-newton), quasi-ELK (damped), jacobi and the
  sequential reference, with gradients by implicit differentiation.
* :class:`DiagonalGRUCell`, :class:`DiagonalCIFGLSTMCell`: cells with structured Jacobians.
* :class:`ParallelRNN`: an ``nn.Module`` layer.
"""
from .cells import DiagonalCIFGLSTMCell, DiagonalGRUCell
from .module import ParallelRNN
from .scan import linear_scan
from .solve import RecurrenceResult, run_sequential, solve

__all__ = ["linear_scan", "solve", "RecurrenceResult", "run_sequential", "DiagonalGRUCell",
           "DiagonalCIFGLSTMCell", "ParallelRNN"]
