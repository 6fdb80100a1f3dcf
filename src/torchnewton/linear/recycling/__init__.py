"""Krylov subspace recycling for sequences of related linear systems (GCRO-DR, deflated CG, SKR ordering)."""
from .ordering import skr_order
from .reuse import ReusedPreconditioner
from .solver import RecyclingSolver

__all__ = ["RecyclingSolver", "ReusedPreconditioner", "skr_order"]
