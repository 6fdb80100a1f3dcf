"""Krylov subspace recycling for sequences of related linear systems (GCRO-DR, deflated CG, SKR ordering)."""
from .ordering import skr_order
from .solver import RecyclingSolver

__all__ = ["RecyclingSolver", "skr_order"]
