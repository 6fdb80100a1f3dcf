"""A new iterate state from the last one: the shallow copy every method's step makes."""
from __future__ import annotations

from typing import TypeVar

S = TypeVar("S")


def evolve(state: S, **changes) -> S:
    """``dataclasses.replace(state, **changes)`` for the iterate dataclasses (plain fields, no
    ``__post_init__``): a shallow copy with the changed fields set, without running ``__init__``
    over every field again, which on a small solve costs as much as a torch call per iteration.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class State:
        ...     x: float
        ...     f: float
        >>> evolve(State(1.0, 2.0), f=0.5)
        State(x=1.0, f=0.5)
    """
    fields = state.__dict__
    if not changes.keys() <= fields.keys():
        raise TypeError(f"{type(state).__name__} has no field {sorted(changes.keys() - fields.keys())}")
    new = object.__new__(type(state))
    new.__dict__.update(fields)
    new.__dict__.update(changes)
    return new
