"""Per-member arithmetic, written once, run on a batch tensor or on one problem's Python floats.

The globalization rules (Armijo backtracking, the strong-Wolfe search) are state machines over
per-member scalars: step lengths, values, slopes, flags. Written against the small vocabulary
here, one implementation serves both

* a batch: (B,) tensors, masks combined with ``torch.where`` (no Python branching per member);
* a single problem on the CPU: Python floats and bools, where a branch costs nanoseconds and a
  torch call on a one-element tensor costs microseconds — the lean path of the loop.

Both follow IEEE double arithmetic in the same order, so in float64 the two paths take bitwise
the same decisions (in float32 the float path rounds less often: round-off apart, the same).
Divisions are always guarded by the callers (a Python float raises on division by zero), and
squares are written ``v * v`` (``**`` on a Python float raises on overflow where a tensor gives inf).
A method's step reads its per-member scalars with ``ops.value`` (a (B,) tensor as is; the one
member's Python number on the lean path) and stores them back with ``ops.pack``.

Example:
    >>> ops = ops_of(2.0); ops.where(ops.isfinite(2.0) & (2.0 > 1.0), 1.0, 0.0)
    1.0
    >>> ops = ops_of(torch.tensor([2.0, float("nan")])); ops.where(ops.isfinite(torch.tensor([2.0, float("nan")])), 1.0, 0.0)
    tensor([1., 0.])
"""
from __future__ import annotations

import math
from typing import Any

import torch


def lean(x: torch.Tensor) -> bool:
    """Whether the batch ``x`` (B, ...) takes the lean path: one problem on the CPU, where reading
    a scalar back costs no device synchronization."""
    # ``is_cpu``, not ``device.type``: the test runs several times per iteration, and building the
    # device object costs a few microseconds each time
    return x.shape[0] == 1 and x.is_cpu


class FloatOps:
    """One problem: Python floats and bools."""

    batched = False

    @staticmethod
    def where(condition: bool, a: Any, b: Any) -> Any:
        return a if condition else b

    @staticmethod
    def not_(m: bool) -> bool:
        return not m

    @staticmethod
    def any(m: bool) -> bool:
        return bool(m)

    @staticmethod
    def all(m: bool) -> bool:
        return bool(m)

    @staticmethod
    def isfinite(v: float) -> bool:
        return math.isfinite(v)

    @staticmethod
    def minimum(a: float, b: float) -> float:
        return a if a <= b or math.isnan(a) else b

    @staticmethod
    def maximum(a: float, b: float) -> float:
        return a if a >= b or math.isnan(a) else b

    @staticmethod
    def clamp(v: float, min: float | None = None, max: float | None = None) -> float:
        if min is not None and v < min:
            v = min
        if max is not None and v > max:
            v = max
        return v

    @staticmethod
    def sqrt(v: float) -> float:
        return math.sqrt(v) if v >= 0 else math.nan

    @staticmethod
    def sign(v: float) -> float:
        return 1.0 if v > 0 else (-1.0 if v < 0 else 0.0 * v)

    @staticmethod
    def power(a: float, b: float) -> float:
        """a ** b with IEEE semantics (inf on overflow, nan for a negative base and fractional b)
        where Python would raise or return a complex number."""
        try:
            return math.pow(a, b)
        except OverflowError:
            return math.inf
        except ValueError:
            return math.nan

    @staticmethod
    def full(like: Any, value: Any) -> Any:
        return value

    @staticmethod
    def copy(v: Any) -> Any:
        return v

    @staticmethod
    def column(v: Any) -> Any:
        return v

    @staticmethod
    def divide(a: float, b: float) -> float:
        """a / b with IEEE semantics (±inf, nan) where Python would raise on b = 0."""
        if b != 0:
            return a / b
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)

    @staticmethod
    def value(t: torch.Tensor) -> Any:
        """The one member's entry of a (1,) tensor, as a Python float, int or bool."""
        return t.item()

    @staticmethod
    def values(*ts: torch.Tensor) -> list[Any]:
        """``value`` of several (1,) tensors: one read each, which on the CPU costs less than the
        new tensor a ``cat`` allocates to read them at once."""
        return [t.item() for t in ts]

    @staticmethod
    def pack(v: Any, like: torch.Tensor) -> torch.Tensor:
        """A member's scalar back into a (1,) tensor of ``like``'s dtype (for the state)."""
        return like.new_full((1,), v)

    # reductions of a member's vector (1, n): one read-back, then a loop over a few floats, which
    # costs less than two torch calls and an ``item``

    @staticmethod
    def max_abs(v: torch.Tensor) -> float:
        """maxᵢ |vᵢ| (NaN if any entry is NaN)."""
        out = 0.0
        for a in v.tolist()[0]:
            a = abs(a)
            if not a <= out:
                out = a
                if a != a:
                    break
        return out

    @staticmethod
    def norm(v: torch.Tensor) -> float:
        """‖v‖₂, summed in order (equal to the batch's to round-off)."""
        return math.sqrt(sum(a * a for a in v.tolist()[0]))

    @staticmethod
    def all_finite(v: torch.Tensor) -> bool:
        return all(map(math.isfinite, v.tolist()[0]))


class TensorOps:
    """A batch: (B,) tensors and bool masks."""

    batched = True

    @staticmethod
    def where(condition: torch.Tensor, a: Any, b: Any) -> torch.Tensor:
        if isinstance(a, torch.Tensor) and a.dim() > condition.dim():
            condition = condition.view(condition.shape + (1,) * (a.dim() - condition.dim()))
        return torch.where(condition, a, b)

    not_ = staticmethod(torch.logical_not)
    isfinite = staticmethod(torch.isfinite)
    minimum = staticmethod(torch.minimum)
    maximum = staticmethod(torch.maximum)
    clamp = staticmethod(torch.clamp)
    sign = staticmethod(torch.sign)
    power = staticmethod(torch.pow)

    @staticmethod
    def sqrt(v: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(v)

    @staticmethod
    def any(m: torch.Tensor) -> bool:
        return bool(m.any())

    @staticmethod
    def all(m: torch.Tensor) -> bool:
        return bool(m.all())

    @staticmethod
    def full(like: torch.Tensor, value: Any) -> torch.Tensor:
        return torch.full_like(like, value)

    @staticmethod
    def copy(v: torch.Tensor) -> torch.Tensor:
        return v.clone()

    @staticmethod
    def column(v: torch.Tensor) -> torch.Tensor:
        """A per-member scalar (B,) broadcast against per-member vectors (B, n)."""
        return v.unsqueeze(-1)

    @staticmethod
    def divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a / b

    @staticmethod
    def value(t: torch.Tensor) -> torch.Tensor:
        return t

    @staticmethod
    def values(*ts: torch.Tensor) -> list[torch.Tensor]:
        return list(ts)

    @staticmethod
    def pack(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v

    @staticmethod
    def max_abs(v: torch.Tensor) -> torch.Tensor:
        return v.abs().amax(-1)

    @staticmethod
    def norm(v: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(v, dim=-1)

    @staticmethod
    def all_finite(v: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(v).all(-1)


# the largest n whose (n, n) matrix one problem's lean path reads back as Python floats (its exact
# reductions and small sums; above it, the n² floats cost more than the torch calls they replace)
FLOAT_MATRIX_MAX_N = 16


def identity(n: int, dtype: torch.dtype) -> torch.Tensor:
    """I (n, n) on the CPU for the lean path, made once per size and dtype; read only (shared)."""
    eye = _IDENTITIES.get((n, dtype))
    if eye is None:
        eye = _IDENTITIES[(n, dtype)] = torch.eye(n, dtype=dtype)
    return eye


_IDENTITIES: dict[tuple[int, torch.dtype], torch.Tensor] = {}


def ops_for(x: torch.Tensor) -> type[FloatOps] | type[TensorOps]:
    """The arithmetic of the members of the batch ``x`` (B, ...): floats on the lean path."""
    return FloatOps if lean(x) else TensorOps


def ops_of(value: Any) -> type[FloatOps] | type[TensorOps]:
    """The arithmetic matching ``value``: a Python number is one problem, a tensor a batch."""
    return TensorOps if isinstance(value, torch.Tensor) else FloatOps
