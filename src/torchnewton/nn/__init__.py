"""Modules whose forward pass is an equation solve: :class:`DEQ` (deep-equilibrium layers)."""
from .deq import DEQ, DEQStats

__all__ = ["DEQ", "DEQStats"]
