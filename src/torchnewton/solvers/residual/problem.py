"""A residual system F(x) = 0 (or min ½‖F(x)‖²) in batched form, with counted derivatives."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ...core.counters import Counters
from ...derivatives import autodiff
from ...derivatives.compiled import CompiledFunctions
from ...globalize.members import lean
from ...linear.batched import matvec, rmatvec

BatchFunction = Callable[[torch.Tensor], torch.Tensor]


class ResidualProblem:
    """F: (B, n) → (B, m), its Jacobian (autodiff unless the user gave ``jac``) and products.

    ``njev`` counts Jacobian evaluations and, for matrix-free methods, Jacobian-vector products.
    ``jac_mode="auto"`` takes one batched reverse pass over the m rows for a single problem on the
    CPU whatever its shape: measured there (torch 2.13, one thread) it beats the forward mode that
    ``autodiff.jacobian`` picks for tall Jacobians by 2.5–6x (a 40 × 3 exponential fit 0.46 ms
    against 1.1 ms, MGH's Osborne 2, 65 × 11, 0.6 ms against 2.5 ms); batches keep that rule.

    With ``compiled`` (``options={"compile": True}``, see :mod:`torchnewton.derivatives.compiled`)
    (F, J) and J·v come from compiled ``torch.func`` transforms where no ``jac`` is given, and the
    user's ``jac`` and F itself (``fun`` then dispatches to it) from the user's callables traced and
    fused the same way (counted the same); products with a given J stay eager.
    """

    def __init__(self, fun: BatchFunction, jac: BatchFunction | None = None, *, jac_mode: str = "auto",
                 compiled: CompiledFunctions | None = None):
        self.fun = fun if compiled is None else _fused_value(fun, compiled)
        self.jac, self.jac_mode, self.compiled = jac, jac_mode, compiled
        self.counters = Counters()

    def _compiled(self, kind: str, *inputs: torch.Tensor):
        return None if self.compiled is None else self.compiled(kind, *inputs)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        self.counters.nfev += 1
        return self.fun(x)

    def linearize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(x), J(x)) with J of shape (B, m, n)."""
        self.counters.njev += 1
        if self.jac is not None:
            self.counters.nfev += 1
            return self.fun(x), self._supplied_jacobian(x)
        self.counters.nfev += 1
        if (out := self._compiled("linearize", x)) is not None:
            return out
        return autodiff.jacobian(self.fun, x, mode=self._mode(x))

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        self.counters.njev += 1
        if self.jac is not None:
            return self._supplied_jacobian(x)
        if (out := self._compiled("linearize", x)) is not None:
            return out[1]
        return autodiff.jacobian(self.fun, x, mode=self._mode(x))[1]

    def _supplied_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        out = self._compiled("jac", x)
        return self.jac(x) if out is None else out

    def _mode(self, x: torch.Tensor) -> str:
        return "reverse" if self.jac_mode == "auto" and lean(x) else self.jac_mode

    def jvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.counters.njev += 1
        if self.jac is not None:
            return matvec(self._supplied_jacobian(x), v)
        if (out := self._compiled("jvp", x, v)) is not None:
            return out
        return autodiff.jvp(self.fun, x, v)[1]

    def jvp_at(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """v ↦ J(x)v for many v at one x (a Krylov solve): the linearization is recorded once."""
        if self.jac is not None:
            J = self.jacobian(x)
            self.counters.njev -= 1  # counted per product below, as for autodiff
            return lambda v: self._count_product(matvec(J, v))
        if self.compiled is not None and not torch.is_grad_enabled():
            self.counters.nfev += 1  # as the eager linearization below: F evaluated inside each product

            def product(v: torch.Tensor) -> torch.Tensor:
                out = self._compiled("jvp", x, v)
                return self._count_product(autodiff.jvp(self.fun, x, v)[1] if out is None else out)

            return product
        _, product = autodiff.linearize(self.fun, x)
        self.counters.nfev += 1
        return lambda v: self._count_product(product(v))

    def _count_product(self, Jv: torch.Tensor) -> torch.Tensor:
        self.counters.njev += 1
        return Jv

    def jvp_finite_difference(self, x: torch.Tensor, F: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """J v ≈ (F(x + h v) − F(x)) / h with h = √eps·(1 + ‖x‖)/‖v‖: one function evaluation
        instead of a forward-mode pass, accurate to about √eps (as scipy's newton_krylov)."""
        eps = torch.finfo(x.dtype).eps
        v_norm = v.norm(dim=-1, keepdim=True)
        h = eps**0.5 * (1 + x.norm(dim=-1, keepdim=True)) / torch.where(v_norm > 0, v_norm, torch.ones_like(v_norm))
        return (self.residual(x + h * v) - F) / h

    def vjp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        self.counters.njev += 1
        if self.jac is not None:
            return rmatvec(self._supplied_jacobian(x), u)
        return autodiff.vjp(self.fun, x, u)[1]


def _fused_value(fun: BatchFunction, compiled: CompiledFunctions) -> BatchFunction:
    """F, computed by its compiled graph where that applies (outside autodiff's transforms and grad
    mode: inside them ``compiled`` answers None and F runs eagerly, differentiable)."""

    def value(x: torch.Tensor) -> torch.Tensor:
        out = compiled("value", x)
        return fun(x) if out is None else out

    return value


def batch_function(fun: Callable[..., torch.Tensor], args: tuple[Any, ...], batch: bool,
                   *, scalar: bool = False) -> BatchFunction:
    """Turn a user function into the batched form the solvers use.

    With ``batch=True`` the user function already takes (B, n); otherwise it takes (n,) and the
    solver works on a batch of one. ``scalar`` marks objectives (output (B,) instead of (B, m)).
    """
    shape = (1,) if scalar else (1, -1)

    def unbatched(x: torch.Tensor) -> torch.Tensor:
        out = fun(x[0], *args)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"fun must return a torch.Tensor, got {type(out).__name__}")
        return out.reshape(shape)

    return (lambda x: fun(x, *args)) if batch else unbatched


def batch_jacobian(jac: Callable[..., torch.Tensor], args: tuple, batch: bool) -> BatchFunction:
    """A user Jacobian callable in batched form: (B, n) → (B, m, n)."""
    if batch:
        return lambda x: jac(x, *args)
    return lambda x: jac(x[0], *args).unsqueeze(0)


def compiled_residuals(fun: Callable[..., torch.Tensor], args: tuple, batch: bool,
                       jac_mode: str = "auto", jac: Callable[..., torch.Tensor] | None = None) -> CompiledFunctions:
    """Compiled residuals and Jacobians of a user ``fun`` in the form of :func:`batch_function`
    (``options={"compile": True}``), and of the user's ``jac`` in that of :func:`batch_jacobian`
    where given; ``root`` and ``least_squares`` share the forms, so one compilation of a function
    serves both."""
    return CompiledFunctions(fun, args, lambda f, a: batch_function(f, a, batch), tag=("residual", batch),
                             outputs=2, jac_mode=jac_mode,
                             supplied={"jac": (jac, lambda j, a: batch_jacobian(j, a, batch))})
