"""Opt-in compiled derivatives: the ``torch.func`` transforms of one function, or the user's own
derivative callables, traced and fused.

Why: a small problem (n ≤ 10) spends its time in Python and in the dispatcher, not in arithmetic.
An eager gradient of Rosenbrock n = 2 is a few dozen tensor ops, each costing microseconds of
dispatch, wrapping and autograd bookkeeping for nanoseconds of work; a Hessian by reverse over
reverse is several times that. Compiling the derivative graph removes that per-op cost: the
transform (``grad_and_value``, forward-over-reverse Hessian, ``vmap``-ed Jacobian) is traced once
into an aten graph (``make_fx``) and fused by Inductor into one C++ kernel on the CPU
(``torch._inductor.compile``, Inductor's entry for graphs captured without TorchDynamo).
Measured (CPU time, one thread, float64, Rosenbrock n = 2, torch 2.13): value and gradient 80 µs
by this library's eager autodiff, 7 µs compiled; Hessian 391 µs against 10 µs; the residual
Jacobian 178 µs against 10 µs. ``torch.compile`` of the same transforms gave 36, 48 and 42 µs a
call: its guards and runtime wrappers, checked at every call, cost more than the arithmetic of a
small problem, so the graph is compiled here without them (the cache key of
:mod:`torchnewton.core.fusion` plays their part, once per call, for a few microseconds).

The price is a compilation of seconds per function, kind, shape, dtype and device (several
seconds for the first one in a process, which also loads Inductor; 1–3 s for each further one),
so it pays only for repeated solves of one shape: it is off by default and turned on by
``options={"compile": True}`` of ``minimize``, ``least_squares`` and ``root``. On a GPU the same
path would emit Triton kernels (not measured here); CUDA graphs, which would also remove the
per-kernel launch cost there, are not used.

What is compiled, per batched function F (the solvers' form: x (B, n) ↦ f (B,) or F (B, m), row
i depending only on row i of x, derivatives of the batch sum):

* objectives: ``value_and_grad`` (f, ∇f), ``hessian`` ∇²f (B, n, n) by forward over reverse
  along the n basis vectors (``vmap``), symmetrized, ``hvp`` ∇²f·v;
* residuals: ``linearize`` (F, J) with J (B, m, n) by forward mode over the n basis vectors for
  tall Jacobians (m ≥ 2n) and reverse mode over the m rows otherwise (``jac_mode`` picks one),
  ``jvp`` J·v.

The user's own callables are compiled the same way, traced as they are (nothing rewritten):

* ``value``: f or F alone (a trial point of a line search or trust region). Its eager call is a
  handful of tiny ops too: measured (CPU time per call through the solvers' problem classes, one
  thread, on a loaded machine; Rosenbrock n = 2 written as the latency bench's sum of squared
  residuals) 21–27 µs eager against 9–11 µs compiled for f, 15–16 µs against 7–8 µs for F;
* ``jac``, ``hess``, ``hessp`` (x, v): the derivatives given as ``jac=``/``hess=``/``hessp=``; and
  ``value_and_jac``, (f, jac) in one call, for an objective's trial point. Measured as above:
  ∇f from an analytic ``jac`` 47–50 µs against 11–14 µs, ∇²f from an analytic ``hess`` (``stack``s
  and a 2 × 2 product) 80–104 µs against 17 µs, the residuals' J 21–24 µs against 7 µs.

Like ``jax.jit``, compilation freezes the functions as they are at their first call: the tensors
in ``args`` (top-level entries) are inputs of the compiled graph (new data of the same shape
reuses it), while Python numbers, other ``args`` and tensors the functions close over are
constants of the graph. Pass what changes between solves in ``args``, as tensors. Each kind is
compiled on first use, once per key (the user's function object, the batched form, the kind, for
a user-supplied kind the identity of the derivative callables it calls, the shapes, strides,
dtypes and devices of the inputs and of the tensors in ``args``, the values of the other
``args``) and kept in a process-wide cache for as long as the function lives (its entries hold the
derivative callables alive with it): a second solve with the same functions and shapes compiles
nothing. A new ``lambda`` per solve is a new function and compiles again.

Fallback: where the function cannot be traced into one graph (Python control flow on tensor
values, ``.item()``, calls torch cannot trace) or Inductor fails, the error becomes a
:class:`CompileFallbackWarning` naming the reason, the key is remembered as not compilable, and
the problem takes the eager path (autodiff, or the user's callables called as they are): the
solve goes on with the same iterates to round-off, and its Result says ``compiled=False``. The
compiled path is used only where the outputs need not themselves be differentiated (grad mode off
and no ``torch.func`` transform active, as inside the solvers' loop); elsewhere the eager path is
taken.

Example:
    >>> import torch
    >>> rosenbrock = lambda x: (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2
    >>> functions = CompiledFunctions(rosenbrock, (), lambda fun, args: fun, tag="objective")
    >>> x = torch.tensor([[-1.2, 1.0]], dtype=torch.float64)
    >>> with torch.no_grad():
    ...     value, grad = functions("value_and_grad", x)   # compiles (seconds) on the first call
    >>> grad
    tensor([[-215.6000,  -88.0000]], dtype=torch.float64)
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Hashable

import torch
from torch.func import grad, grad_and_value, jvp, vjp, vmap

from ..core import fusion
from ..core.fusion import CompileFallbackWarning, CompiledGraph
from .autodiff import batched_basis

BatchFunction = Callable[..., torch.Tensor]
# (user function, args) -> the batched function the solvers differentiate
Form = Callable[[Callable[..., Any], tuple], BatchFunction]

AUTODIFF_KINDS = ("value_and_grad", "hessian", "hvp", "linearize", "jvp")
# the user's own callables: f or F alone, and the derivatives given as ``jac=``/``hess=``/``hessp=``
SUPPLIED_KINDS = ("value", "jac", "hess", "hessp", "value_and_jac")
KINDS = AUTODIFF_KINDS + SUPPLIED_KINDS
_PAIRS = ("value_and_grad", "linearize", "value_and_jac")  # the kinds with two outputs
# the user's callables each supplied kind calls besides ``fun``
_USES = {"value": (), "jac": ("jac",), "hess": ("hess",), "hessp": ("hessp",), "value_and_jac": ("jac",)}
JACOBIAN_MODES = ("auto", "forward", "reverse")


def check_compile_option(value: Any) -> bool:
    """``options["compile"]`` must be a bool (``True`` turns compiled derivatives on)."""
    if not isinstance(value, bool):
        raise ValueError(f"options['compile'] must be True or False, got {value!r}")
    return value


# ---- the transforms ----------------------------------------------------------------------------

def _summed(fun: BatchFunction) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    def total(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        value = fun(z)
        return value.sum(), value
    return total


def _gradient_of(fun: BatchFunction) -> BatchFunction:
    return grad(lambda z: fun(z).sum())


def _transform(kind: str, F: BatchFunction, jac_mode: str) -> Callable[..., Any]:
    """The uncompiled transform of ``kind`` of the batched function F: (x, *vectors) -> outputs."""

    def value_and_grad(x):
        g, (_, f) = grad_and_value(_summed(F), has_aux=True)(x)
        return f, g

    def hessian(x):
        gradient = _gradient_of(F)
        columns = vmap(lambda t: jvp(gradient, (x,), (t,))[1])(batched_basis(x.shape[-1], x))  # (n, B, n)
        H = columns.permute(1, 2, 0)
        return 0.5 * (H + H.transpose(-1, -2))

    def hvp(x, v):
        return jvp(_gradient_of(F), (x,), (v,))[1]

    def linearize(x):
        value, pull = vjp(F, x)
        m, n = value.shape[-1], x.shape[-1]
        if jac_mode == "forward" or (jac_mode == "auto" and m >= 2 * n):
            columns = vmap(lambda t: jvp(F, (x,), (t,))[1])(batched_basis(n, x))  # (n, B, m)
            return value, columns.permute(1, 2, 0)
        rows = vmap(lambda u: pull(u)[0])(batched_basis(m, value))  # (m, B, n)
        return value, rows.transpose(0, 1)

    def jacobian_vector(x, v):
        return jvp(F, (x,), (v,))[1]

    return {"value_and_grad": value_and_grad, "hessian": hessian, "hvp": hvp, "linearize": linearize,
            "jvp": jacobian_vector}[kind]


def _supplied(kind: str, F: BatchFunction, derivatives: dict[str, BatchFunction]) -> Callable[..., Any]:
    """The user's own callables of ``kind`` in batched form, called as they are (nothing rewritten):
    F, a user derivative (x) or (x, v), or (F, jac) together (one fused call at a trial point)."""
    if kind == "value":
        return F
    if kind == "value_and_jac":
        jac = derivatives["jac"]
        return lambda x: (F(x), jac(x))
    return derivatives[kind]


# Inductor lowers ``cat``/``stack`` on the CPU to one copy kernel per input into a buffer of its
# own (its pointwise lowering, which fuses the pieces into their consumer, is off there, as slower
# on large tensors); analytic derivatives are mostly ``stack``s of scalars, so on small problems
# the pointwise lowering is forced. Measured (CPU time, one thread, torch 2.13): the latency
# bench's analytic Hessian of Rosenbrock 30 → 9 µs a call, Beale's 47 → 12 µs, the residuals'
# Jacobians 11–12 → 5 µs; autodiff kinds 0–2 µs faster. Above this n a stack may have many inputs
# and one pointwise kernel selecting among all of them would be large: Inductor's default then.
POINTWISE_CAT_MAX_N = 32


def _inductor_options(x: torch.Tensor):
    """Inductor's configuration for compiling a problem of x's size (see POINTWISE_CAT_MAX_N)."""
    from torch._inductor import config

    small = x.device.type == "cpu" and x.shape[-1] <= POINTWISE_CAT_MAX_N
    return config.patch(force_pointwise_cat=True) if small else contextlib.nullcontext()


# ---- the cache (the graphs of one user function, :func:`.fusion.entries`) -----------------------

def clear_cache() -> None:
    """Forget every compiled derivative (the next solve compiles again)."""
    fusion.clear_cache()


class CompiledFunctions:
    """The compiled derivatives of one user function in one batched form, for one solve.

    ``fun`` is the user's function (its identity keys the cache), ``args`` its extra arguments,
    ``form(fun, args)`` the batched function (B, n) → (B,) or (B, m) the solvers differentiate,
    ``tag`` a hashable name of that form (two forms of one function must have different tags).
    ``outputs`` is 1 for an objective (f of shape (B,)) and 2 for residuals ((B, m)); the output
    is checked by one eager evaluation before each compilation. ``jac_mode`` chooses the
    Jacobian's mode for ``linearize``. ``supplied`` maps ``"jac"``, ``"hess"``, ``"hessp"`` to the
    user's derivative callables and their batched forms, ``(callable, form)`` with
    ``form(callable, args)`` taking (B, n) (and a (B, n) vector for ``hessp``); each is keyed by its
    identity and its output shape checked by one eager call before its compilation, as ``fun``.

    ``functions(kind, x, *vectors)`` (a kind of :data:`KINDS`) gives the outputs, or None where the
    compiled path does not apply (grad mode on, a ``torch.func`` transform active) or a function
    could not be compiled (a :class:`CompileFallbackWarning` said so when it was tried): the caller
    then takes its eager path. ``compile_seconds`` adds up the compilations this object caused (0
    where every kind came from the cache); ``captured`` turns False at a fallback.
    """

    def __init__(self, fun: Callable[..., Any], args: tuple, form: Form, *, tag: Hashable, outputs: int = 1,
                 jac_mode: str = "auto", supplied: dict[str, tuple[Callable[..., Any], Form]] | None = None):
        if jac_mode not in JACOBIAN_MODES:
            raise ValueError(f"jac_mode must be one of {', '.join(JACOBIAN_MODES)}, got {jac_mode!r}")
        self.fun, self.args, self.form, self.tag = fun, tuple(args), form, tag
        self.outputs, self.jac_mode = outputs, jac_mode
        self.supplied = {name: pair for name, pair in (supplied or {}).items() if pair[0] is not None}
        self.compile_seconds = 0.0
        self.captured = True
        args_key, self._tensor_args = fusion.split_arguments(self.args)
        self._key = (tag, jac_mode, args_key)
        # per supplied kind, the identities of the user callables it calls (part of its key)
        self._callables = {kind: tuple(fusion.Same(self.supplied[name][0]) for name in names)
                           for kind, names in _USES.items() if all(name in self.supplied for name in names)}
        self._entries = fusion.entries(fun)

    def info(self) -> dict[str, Any]:
        """What a Result reports: ``compiled`` (False after a fallback) and ``compile_seconds``."""
        return {"compiled": self.captured, "compile_seconds": self.compile_seconds}

    def __call__(self, kind: str, x: torch.Tensor, *vectors: torch.Tensor) -> Any:
        if not self.captured or not fusion.compilable_now():
            return None  # after one fallback the whole solve is eager: one warning, no further attempts
        inputs = [x, *vectors, *self._tensor_args]
        key = (kind, self._key, self._callables.get(kind, ()), tuple(fusion.signature(t) for t in (x, *vectors)))
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._compile(kind, inputs, len(vectors))
            self.compile_seconds += entry.compile_seconds
        if entry.function is None:
            self.captured = False
            return None
        out = entry.function(*inputs)
        return (out[0], out[1]) if kind in _PAIRS else out[0]

    def _compile(self, kind: str, inputs: list[torch.Tensor], vectors: int) -> CompiledGraph:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind in SUPPLIED_KINDS and kind not in self._callables:
            raise ValueError(f"kind {kind!r} needs the user's {' and '.join(_USES[kind])}, which was not given")
        constants = self.args

        def flat(x: torch.Tensor, *rest: torch.Tensor) -> Any:
            # the non-tensor arguments from the closure, the tensors from the graph's inputs
            tensors = iter(rest[vectors:])
            args = tuple(next(tensors) if isinstance(a, torch.Tensor) else a for a in constants)
            F = self.form(self.fun, args)
            if kind in SUPPLIED_KINDS:
                derivatives = {name: form(callable_, args) for name, (callable_, form) in self.supplied.items()}
                out = _supplied(kind, F, derivatives)(x, *rest[:vectors])
            else:
                out = _transform(kind, F, self.jac_mode)(x, *rest[:vectors])
            return out if isinstance(out, tuple) else (out,)  # one structure for every kind

        # one eager evaluation first: a user error (an exception, a wrong output) surfaces as itself
        self._check_outputs(kind, inputs[0], flat(*inputs) if kind in _USES and kind != "value" else None)
        with _inductor_options(inputs[0]):
            entry = fusion.compile_graph(flat, inputs)
        if entry.function is None:
            names = " and ".join(getattr(c, "__name__", n) for n, c in
                                 [("fun", self.fun)] + [(n, self.supplied[n][0]) for n in _USES.get(kind, ())])
            warnings.warn(f"options['compile']: {names} could not be compiled for {kind!r} ({entry.reason}); "
                          f"using the eager path instead", CompileFallbackWarning, stacklevel=4)
        return entry

    def _check_outputs(self, kind: str, x: torch.Tensor, supplied: tuple[torch.Tensor, ...] | None) -> None:
        """The shape of f or F (always) and of a user derivative's output (``supplied``, the eager
        outputs of a supplied kind): a wrong one is a clear error, as on the eager path."""
        out = self.form(self.fun, self.args)(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"fun must return a torch.Tensor, got {type(out).__name__}")
        if out.dim() != self.outputs or out.shape[0] != x.shape[0]:
            expected = f"({x.shape[0]},)" if self.outputs == 1 else f"({x.shape[0]}, m)"
            raise ValueError(f"fun returned shape {tuple(out.shape)}, expected {expected}")
        if supplied is None:
            return
        batch, n = x.shape
        trailing = {"jac": (n,) if self.outputs == 1 else (out.shape[-1], n), "hess": (n, n), "hessp": (n,)}
        name = _USES[kind][0]
        derivative = supplied[-1]
        if not isinstance(derivative, torch.Tensor):
            raise TypeError(f"{name} must return a torch.Tensor, got {type(derivative).__name__}")
        if tuple(derivative.shape) != (batch,) + trailing[name]:
            raise ValueError(f"{name} returned shape {tuple(derivative.shape)}, expected {(batch,) + trailing[name]}")
