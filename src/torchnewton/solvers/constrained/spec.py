"""What a constrained problem is made of, normalized from the scipy-shaped arguments and checked.

A problem reads  min f(x)  s.t.  c_l ≤ c(x) ≤ c_u,  x_l ≤ x ≤ x_u,  where c stacks every given
constraint in order: a dict ``{"type": "eq", "fun": c}`` is c(x) = 0, ``{"type": "ineq", ...}`` is
c(x) ≥ 0 (the scipy convention), a :class:`NonlinearConstraint` is lower ≤ c(x) ≤ upper (rows with
lower == upper are equalities). Bounds are ``(lower, upper)`` tensors or scalars with ±inf
allowed; a variable whose two bounds coincide becomes the equality x_j = l_j.

Everything is checked on x0 before the solver starts: callables, output shapes, lower ≤ upper,
finite values of f and c at x0.

Example:
    >>> import torch
    >>> con = NonlinearConstraint(lambda x: x[0] ** 2 + x[1] ** 2, 0.0, 1.0)
    >>> spec = build_spec([con, {"type": "eq", "fun": lambda x: x[0] - x[1]}], None,
    ...                   torch.zeros(1, 2, dtype=torch.float64), (), batch=False)
    >>> spec.m, spec.equality.tolist()
    (2, [[False, True]])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ...core.fusion import Same

BatchFunction = Callable[..., torch.Tensor]


@dataclass
class NonlinearConstraint:
    """lower ≤ fun(x) ≤ upper, entries of ``lower``/``upper`` scalars or tensors, ±inf allowed.

    ``jac(x)`` (m, n) and ``hess(x, v)`` = Σᵢ vᵢ∇²cᵢ(x) (n, n) are optional (autodiff otherwise).
    Under ``batch=True`` every callable takes the batch: (B, n) → (B, m), (B, m, n), (B, n, n).
    """

    fun: Callable[..., torch.Tensor]
    lower: Any = -float("inf")
    upper: Any = float("inf")
    jac: Callable[..., torch.Tensor] | None = None
    hess: Callable[..., torch.Tensor] | None = None


@dataclass
class Block:
    """One user constraint in batched form: c_b (B, n) → (B, m_b), with its optional derivatives."""

    fun: BatchFunction
    size: int
    jac: BatchFunction | None = None
    hess: BatchFunction | None = None  # (x, v) → Σ vᵢ∇²cᵢ
    rebind: Callable[[tuple], BatchFunction] | None = None  # c_b with other ``args`` (implicit gradients)
    # what identifies fun/jac/hess across solves (the user's callables and arguments, by identity):
    # the key of their compiled graphs (``options={"compile": True}``); None: this solve's own block
    source: tuple | None = None


@dataclass
class ConstraintSpec:
    """The stacked constraints c = (c_1, ..., c_k) with (B, m) limits, and (B, n) variable bounds."""

    blocks: list[Block]
    lower: torch.Tensor  # (B, m) c_l
    upper: torch.Tensor  # (B, m) c_u
    x_lower: torch.Tensor  # (B, n)
    x_upper: torch.Tensor  # (B, n)
    values: torch.Tensor | None = None  # (B, m) c(x0) from the checks, reused by the solvers' first step

    @property
    def m(self) -> int:
        return sum(b.size for b in self.blocks)

    @property
    def equality(self) -> torch.Tensor:
        return self.lower == self.upper

    @property
    def has_inequalities(self) -> bool:
        ineq = ~self.equality & (torch.isfinite(self.lower) | torch.isfinite(self.upper))
        return bool(ineq.any()) or bool(torch.isfinite(self.x_lower).any() | torch.isfinite(self.x_upper).any())

    def sizes(self) -> list[int]:
        return [b.size for b in self.blocks]


def _batched(fun: Callable | None, args: tuple, batch: bool, *, vector: bool = False,
             matrix: bool = False) -> BatchFunction | None:
    """A user function of (n,) (or the batch (B, n)) as a function of the batch."""
    if fun is None:
        return None
    if batch:
        return lambda x, *v: fun(x, *v, *args)
    if vector:  # hess(x, v)
        return lambda x, v: fun(x[0], v[0], *args).unsqueeze(0)
    if matrix:  # jac(x): (m, n), or (n,) for a single constraint
        return lambda x: fun(x[0], *args).reshape(1, -1, x.shape[-1])
    return lambda x: torch.as_tensor(fun(x[0], *args)).reshape(1, -1)


def _limits(value: Any, name: str, shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """A scalar, (k,) or (B, k) limit broadcast to ``shape`` in the dtype of x0."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() and value.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be a real tensor or a number, got dtype {value.dtype}")
        tensor = value.to(dtype=like.dtype, device=like.device)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        tensor = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    else:
        try:
            tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}") from None
    if torch.isnan(tensor).any():
        raise ValueError(f"{name} contains NaN")
    try:
        return torch.broadcast_to(tensor, shape).clone()
    except RuntimeError:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, which does not broadcast to {shape} "
                         f"(expected a scalar, ({shape[1]},) or {shape})") from None


def _evaluate(fun: BatchFunction, x: torch.Tensor, name: str) -> torch.Tensor:
    with torch.no_grad():
        out = fun(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"{name} returned shape {tuple(out.shape)}, expected (B, m) = ({x.shape[0]}, m)")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} is not finite (NaN or Inf) at x0")
    return out


def _one_constraint(item: Any, index: int, x: torch.Tensor, args: tuple, batch: bool
                    ) -> tuple[Block, torch.Tensor, torch.Tensor, torch.Tensor]:
    name = f"constraints[{index}]"
    if isinstance(item, NonlinearConstraint):
        fun, jac, hess, lower, upper = item.fun, item.jac, item.hess, item.lower, item.upper
    elif isinstance(item, dict):
        unknown = set(item) - {"type", "fun", "jac", "hess", "args"}
        if unknown:
            raise ValueError(f"{name} has unknown keys {sorted(unknown)}; valid keys: type, fun, jac, hess, args")
        kind = item.get("type")
        if kind not in ("eq", "ineq"):
            raise ValueError(f"{name}['type'] must be 'eq' or 'ineq', got {kind!r}")
        if "fun" not in item:
            raise ValueError(f"{name} needs a 'fun' entry")
        fun, jac, hess = item["fun"], item.get("jac"), item.get("hess")
        lower, upper = (0.0, 0.0) if kind == "eq" else (0.0, float("inf"))
        args = tuple(item.get("args", ())) + tuple(args)
    else:
        raise TypeError(f"{name} must be a dict {{'type', 'fun'}} or a NonlinearConstraint, "
                        f"got {type(item).__name__}")
    for part, value in (("fun", fun), ("jac", jac), ("hess", hess)):
        if value is not None and not callable(value):
            raise TypeError(f"{name} {part} must be callable, got {type(value).__name__}")
    own = tuple(item.get("args", ())) if isinstance(item, dict) else ()
    block_fun = _batched(fun, args, batch)
    values = _evaluate(block_fun, x, f"{name} fun")
    size = values.shape[-1]
    block = Block(fun=block_fun, size=size, jac=_batched(jac, args, batch, matrix=True),
                  hess=_batched(hess, args, batch, vector=True),
                  rebind=lambda new_args: _batched(fun, own + tuple(new_args), batch),
                  source=(Same(fun), Same(jac), Same(hess), batch, tuple(Same(a) for a in args)))
    shape = (x.shape[0], size)
    low, up = _limits(lower, f"{name} lower", shape, x), _limits(upper, f"{name} upper", shape, x)
    if bool((low > up).any()):
        raise ValueError(f"{name}: lower > upper in some entries")
    return block, low, up, values


def build_spec(constraints: Any, bounds: Any, x: torch.Tensor, args: tuple, *, batch: bool) -> ConstraintSpec:
    """Normalize and check ``constraints`` and ``bounds`` against x0 (B, n); raises before any work."""
    if constraints is None:
        items: Sequence[Any] = []
    elif isinstance(constraints, (dict, NonlinearConstraint)):
        items = [constraints]
    elif isinstance(constraints, (list, tuple)):
        items = list(constraints)
    else:
        raise TypeError(f"constraints must be a dict, a NonlinearConstraint or a list of them, "
                        f"got {type(constraints).__name__}")
    blocks, lowers, uppers, values = [], [], [], []
    for i, item in enumerate(items):
        block, low, up, value = _one_constraint(item, i, x, args, batch)
        blocks.append(block)
        lowers.append(low)
        uppers.append(up)
        values.append(value)
    batch_size, n = x.shape
    if bounds is None:
        xl = torch.full_like(x, -float("inf"))
        xu = torch.full_like(x, float("inf"))
    else:
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise TypeError("bounds must be a pair (lower, upper) of tensors or numbers")
        xl = _limits(bounds[0], "bounds lower", (batch_size, n), x)
        xu = _limits(bounds[1], "bounds upper", (batch_size, n), x)
        if bool((xl > xu).any()):
            raise ValueError("bounds: lower > upper in some entries")
    fixed = (xl == xu) & torch.isfinite(xl)
    if bool(fixed.any()):
        # x_j = l_j as a linear equality: an interior point cannot live strictly inside l_j < x_j < l_j
        columns = fixed.any(0).nonzero().flatten()
        selector = torch.zeros(columns.numel(), n, dtype=x.dtype, device=x.device)
        selector[torch.arange(columns.numel()), columns] = 1.0
        blocks.append(Block(fun=lambda y, s=selector: y @ s.T, size=columns.numel(),
                            jac=lambda y, s=selector: s.expand(y.shape[0], -1, -1),
                            rebind=lambda new_args, s=selector: (lambda y: y @ s.T)))
        # the column's bounds move into the constraint for every member (an equality where fixed)
        values.append(x[:, columns].clone())
        lowers.append(xl[:, columns].clone())
        uppers.append(xu[:, columns].clone())
        xl[:, columns] = -float("inf")
        xu[:, columns] = float("inf")
    empty = x.new_zeros(batch_size, 0)
    return ConstraintSpec(blocks=blocks, lower=torch.cat(lowers, -1) if lowers else empty,
                          upper=torch.cat(uppers, -1) if uppers else empty.clone(), x_lower=xl, x_upper=xu,
                          values=torch.cat(values, -1).to(x.dtype) if values else empty.clone())
