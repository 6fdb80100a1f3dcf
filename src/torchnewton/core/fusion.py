"""Fusing a pure tensor function into one compiled kernel: trace once, compile once, cache by signature.

Why: a batched iteration of a small problem (256 members × n = 4) is hundreds of tiny tensor
operations, each paying microseconds of dispatch for nanoseconds of arithmetic. A piece of it that
is a pure function of tensors — no host read, no Python branch on a tensor's value — can be traced
into an aten graph once (``make_fx``) and fused by Inductor into one C++ kernel on the CPU
(``torch._inductor.compile``, Inductor's entry for graphs captured without TorchDynamo), after which
a call costs one dispatch and a cache look-up. ``torch.compile`` would re-check its guards at every
call, which on such data costs more than the arithmetic; here the cache key — the shapes, strides,
dtypes and devices of the tensor arguments and the values of the others — plays their part.

:class:`Fusion` is the switch a solve carries: disabled, ``fusion(fn, *args)`` is ``fn(*args)``
(the very same operations: one implementation for both modes); enabled, it runs the compiled
graph of ``fn`` for that signature, compiling it on the first call (seconds), and keeps
``compile_seconds`` and whether everything compiled. Compiled graphs live in a process-wide cache
keyed by the function object (weakly: a dropped function takes its graphs with it), so a second
solve of the same shapes compiles nothing. A compiled graph's arithmetic is fused and may round
differently from the eager one (reassociated reductions, fused multiply-adds): results agree to
round-off, not bitwise.

Rules for ``fn``: it takes tensors and hashable constants (numbers, strings, tuples, None) and
returns a tensor or a (nested) tuple/list of tensors; the constants are baked into the graph and
part of the key. It must not read tensor values on the host (``.item()``, ``bool(t)``): tracing
then fails and the call falls back to eager with a :class:`CompileFallbackWarning` (once per key).
The compiled path is taken only with grad mode off and no ``torch.func`` transform active;
otherwise ``fn`` runs eagerly.

Example:
    >>> import torch
    >>> def scaled_norm(x, w, p):
    ...     return (w * x.abs() ** p).sum(-1), x.amax(-1)
    >>> fusion = Fusion(enabled=True)
    >>> x, w = torch.rand(8, 3, dtype=torch.float64), torch.rand(8, 3, dtype=torch.float64)
    >>> with torch.no_grad():
    ...     value, peak = fusion(scaled_norm, x, w, 2)   # compiles (seconds) on the first call
    >>> torch.allclose(value, (w * x * x).sum(-1)) and fusion.compiled
    True
"""
from __future__ import annotations

import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree


class CompileFallbackWarning(RuntimeWarning):
    """A function asked to be compiled could not be; the eager path is used instead."""


@dataclass
class CompiledGraph:
    """One compiled graph: ``function`` (inputs -> list of outputs; None where compiling failed),
    the seconds its compilation took and, on failure, the reason."""

    function: Callable[..., list[torch.Tensor]] | None
    compile_seconds: float
    reason: str | None = None
    spec: Any = None  # the pytree structure of the outputs (:class:`Fusion`)


def signature(t: torch.Tensor) -> tuple:
    """What a compiled kernel assumes of an input: shape, strides, dtype, device."""
    return t.shape, t.stride(), t.dtype, t.device


def split_arguments(args: Sequence[Any]) -> tuple[tuple, list[torch.Tensor]]:
    """(key, tensors): tensors are graph inputs, keyed by :func:`signature`; other values are
    constants of the graph, keyed by value, or by identity where unhashable."""
    key, tensors = [], []
    for a in args:
        if isinstance(a, torch.Tensor):
            key.append(("tensor",) + signature(a))
            tensors.append(a)
            continue
        try:
            hash(a)
            key.append(("value", type(a), a))
        except TypeError:
            key.append(("id", id(a)))
    return tuple(key), tensors


class Same:
    """A cache-key part equal only to itself's object (``is``), holding it alive: for tensors and
    other values whose ``==`` is not a truth value, keyed by identity without the risk of a reused id."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj


def compilable_now() -> bool:
    """The compiled path applies: grad mode off and no ``torch.func`` transform active (a compiled
    graph has no backward)."""
    return not torch.is_grad_enabled() and torch._C._functorch.peek_interpreter_stack() is None


def compile_graph(flat: Callable[..., Sequence[torch.Tensor]], inputs: list[torch.Tensor]) -> CompiledGraph:
    """Trace ``flat`` (tensors -> a sequence of tensors) on ``inputs`` with ``make_fx`` and compile
    the graph with Inductor. A failure is returned (``function=None`` and its reason), not raised."""
    start = time.perf_counter()
    try:
        graph = make_fx(flat)(*inputs)
        function = torch._inductor.compile(graph, inputs)
    except Exception as error:  # noqa: BLE001 - any failure of tracing or compiling means: stay eager
        text = str(error).strip()
        reason = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
        return CompiledGraph(None, time.perf_counter() - start, reason)
    return CompiledGraph(function, time.perf_counter() - start)


# owner (a function) -> {key -> CompiledGraph}; weak where the owner allows it
_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_STRONG_CACHE: dict[Any, dict] = {}


def entries(owner: Any) -> dict:
    """The compiled graphs kept for ``owner`` (a dict key -> :class:`CompiledGraph`, to fill)."""
    try:
        return _CACHE.setdefault(owner, {})
    except TypeError:  # not weakly referenceable (a builtin): kept for the life of the process
        return _STRONG_CACHE.setdefault(owner, {})


def clear_cache() -> None:
    """Forget every compiled graph (the next call compiles again)."""
    _CACHE.clear()
    _STRONG_CACHE.clear()


class Fusion:
    """The per-solve switch: ``fusion(fn, *args)`` runs ``fn`` eagerly (disabled) or as its compiled
    graph (enabled); see the module docstring. ``compile_seconds`` adds up the compilations this
    object caused; ``compiled`` turns False at the first fallback, after which every call is eager."""

    def __init__(self, enabled: bool = False):
        self.enabled = enabled
        self.compile_seconds = 0.0
        self.compiled = enabled
        self.reason: str | None = None

    def info(self) -> dict[str, Any]:
        """What a Result reports: ``compiled`` and ``compile_seconds``."""
        return {"compiled": self.compiled, "compile_seconds": self.compile_seconds}

    def __call__(self, fn: Callable[..., Any], *args: Any, key: Hashable = None, owner: Any = None) -> Any:
        """``fn(*args)``, compiled where enabled. ``key``: where ``fn`` is a closure made anew for each
        solve, what identifies what it computes (with ``owner``, the object whose life bounds the cache
        entry, e.g. the user's function); by default ``fn`` itself is the identity."""
        if not self.compiled or not compilable_now():
            return fn(*args)
        args_key, tensors = split_arguments(args)
        table = entries(fn if owner is None else owner)
        args_key = args_key if key is None else (key, args_key)
        entry = table.get(args_key)
        if entry is None:
            entry = table[args_key] = self._compile(fn, args, tensors)
            self.compile_seconds += entry.compile_seconds
        if entry.function is None:
            self.compiled, self.reason = False, entry.reason
            return fn(*args)
        return _pytree.tree_unflatten(entry.function(*tensors), entry.spec)

    def _compile(self, fn: Callable[..., Any], args: tuple, tensors: list[torch.Tensor]) -> CompiledGraph:
        structure: list = []

        def flat(*inputs: torch.Tensor) -> list[torch.Tensor]:
            given = iter(inputs)
            out = fn(*(next(given) if isinstance(a, torch.Tensor) else a for a in args))
            leaves, spec = _pytree.tree_flatten(out)
            structure.append(spec)
            return leaves

        entry = compile_graph(flat, tensors)
        if entry.function is None:
            warnings.warn(f"fusion: {getattr(fn, '__qualname__', 'a function')} could not be compiled "
                          f"({entry.reason}); running it eagerly", CompileFallbackWarning, stacklevel=3)
        else:
            entry.spec = structure[-1]
        return entry
