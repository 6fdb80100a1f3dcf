"""Modules whose forward pass is an equation solve: :class:`DEQ` (deep-equilibrium layers) and
:class:`LayerParallelResidualStack` (a residual stack evaluated by Newton over its depth)."""
from .deq import DEQ, DEQStats
from .residual_stack import LayerParallelResidualStack, StackStats

__all__ = ["DEQ", "DEQStats", "LayerParallelResidualStack", "StackStats"]
