"""A batched objective f: (B, n) → (B,) with counted derivatives and a choice of curvature.

Derivatives come from the user's callables where given (``jac``, ``hess``, ``hessp``) and from
autodiff otherwise. The curvature a method sees is one of

* ``"exact"``: ∇²f (the user's ``hess``, else n ``hessp`` products, else reverse-over-reverse
  autodiff);
* ``"hvp"``: ∇²f known only through products ∇²f(x)v (``hessp``, else ``hess``·v, else
  forward-over-reverse autodiff); dense methods form the matrix from n products;
* ``"gauss-newton"``: JᵀJ for f = ½‖r(x)‖² with the residual function r given;
* ``"hutchinson"``: the diagonal of ∇²f estimated from Rademacher probes of ∇²f·z.

Counters: ``nfev`` objective values, ``njev`` gradients, ``nhev`` Hessians (one dense Hessian or
one Hessian-vector product each); every batched call counts once.

With ``compiled`` (``options={"compile": True}``, see :mod:`torchnewton.derivatives.compiled`) the
autodiff gradients (with their values), Hessians and Hessian-vector products of f come from
compiled ``torch.func`` transforms (counted the same; Hutchinson's probes are such products), and
the plain values of f and the user's ``jac``/``hess``/``hessp`` from the user's callables traced
and fused the same way (a gradient at a trial point as one call with its value, counted only if
used); Gauss–Newton curvature stays eager.
"""
from __future__ import annotations

from typing import Callable

import torch

from ...core.counters import Counters
from ...derivatives import autodiff, hutchinson_diagonal
from ...derivatives.compiled import CompiledFunctions
from ...linear import DenseOperator, DiagonalOperator, LinearOperator, MatrixFreeOperator
from ...linear.batched import matvec

BatchFunction = Callable[..., torch.Tensor]


def _checked(fun: BatchFunction, name: str, trailing: tuple[int, ...]) -> BatchFunction:
    """Wrap a batched user function so a wrong output type or shape is a clear error.

    The output is checked on the first call for each batch size (the first call happens before
    the loop: validation once, not at every iteration of a small solve).
    """
    checked: set[int] = set()

    def call(*inputs: torch.Tensor) -> torch.Tensor:
        out = fun(*inputs)
        batch = inputs[0].shape[0]
        if batch in checked:
            return out
        expected = (batch,) + trailing
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
        if tuple(out.shape) != expected:
            raise ValueError(f"{name} returned shape {tuple(out.shape)}, expected {expected}")
        checked.add(batch)
        return out

    return call


class ObjectiveProblem:
    """The batched objective the minimizers iterate on (see the module docstring)."""

    def __init__(self, fun: BatchFunction, n: int, *, jac: BatchFunction | None = None,
                 hess: BatchFunction | None = None, hessp: BatchFunction | None = None,
                 curvature: str = "exact", residuals: BatchFunction | None = None,
                 hutchinson_samples: int = 16, generator: torch.Generator | None = None,
                 compiled: CompiledFunctions | None = None):
        self.fun = _checked(fun, "fun", ())
        self.jac = None if jac is None else _checked(jac, "jac", (n,))
        self.hess = None if hess is None else _checked(hess, "hess", (n, n))
        self.hessp = None if hessp is None else _checked(hessp, "hessp", (n,))
        self.curvature, self.residuals = curvature, residuals
        self.hutchinson_samples, self.generator = hutchinson_samples, generator
        self.counters = Counters()
        self.compiled = compiled
        # ∇f with its own graph at the last accepted trial point: the next Newton step's curvature
        self._graph: autodiff.GradientGraph | None = None

    def _fused(self, kind: str, *inputs: torch.Tensor):
        """The compiled ``kind`` (:mod:`torchnewton.derivatives.compiled`), None on the eager path."""
        return None if self.compiled is None else self.compiled(kind, *inputs)

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        out = self._fused("value", x)
        return self.fun(x) if out is None else out

    def _supplied(self, name: str, *inputs: torch.Tensor) -> torch.Tensor:
        """The user's ``jac``, ``hess`` or ``hessp`` at ``inputs``, compiled where it can be."""
        out = self._fused(name, *inputs)
        return getattr(self, name)(*inputs) if out is None else out

    def value(self, x: torch.Tensor) -> torch.Tensor:
        self.counters.nfev += 1
        return self._value(x)

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.counters.nfev += 1
        self.counters.njev += 1
        if self.jac is not None:
            out = self._fused("value_and_jac", x)
            return (self.fun(x), self.jac(x)) if out is None else out
        if (out := self._fused("value_and_grad", x)) is not None:
            return out
        return autodiff.gradient(self.fun, x)

    def value_then_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        """f(x) and a function giving ∇f(x) (counted when called), for a trial point whose
        gradient is needed only if it is accepted: autodiff then reuses the value's graph."""
        self.counters.nfev += 1
        out = self._fused("value_and_grad" if self.jac is None else "value_and_jac", x)
        if out is None and self.jac is not None:
            return self.fun(x), lambda: self.gradient(x)
        if out is not None:
            # one fused call gives both: the gradient of a rejected trial costs next to nothing
            def counted() -> torch.Tensor:
                self.counters.njev += 1
                return out[1]

            return out[0], counted
        value, pull = autodiff.value_then_gradient(self.fun, x)

        def grad() -> torch.Tensor:
            self.counters.njev += 1
            graph = pull(keep_graph=self._autodiff_curvature)
            if self._autodiff_curvature:
                self._graph = graph
            return graph.gradient()

        return value, grad

    @property
    def _autodiff_curvature(self) -> bool:
        """Whether the curvature comes from differentiating f's gradient (no user hess/hessp)."""
        return self.hess is None and self.hessp is None and self.curvature in ("exact", "hvp")

    def _gradient_graph(self, x: torch.Tensor) -> autodiff.GradientGraph:
        """∇f's graph at x: the one kept from x's acceptance when x is that tensor, else recorded."""
        graph, self._graph = self._graph, None
        return graph if graph is not None and graph.x is x else autodiff.GradientGraph.record(self.fun, x)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        self.counters.njev += 1
        if self.jac is not None:
            return self._supplied("jac", x)
        if (out := self._fused("value_and_grad", x)) is not None:
            return out[1]
        return autodiff.gradient(self.fun, x)[1]

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """∇²f(x)v, or JᵀJv for Gauss–Newton."""
        self.counters.nhev += 1
        if self.curvature == "gauss-newton":
            return autodiff.gauss_newton_product(self.residuals, x, v)
        if self.hessp is not None:
            return self._supplied("hessp", x, v)
        if self.hess is not None:
            return matvec(self._supplied("hess", x), v)
        if (out := self._fused("hvp", x, v)) is not None:
            return out
        return autodiff.hvp(self.fun, x, v)[1]

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        """The dense curvature matrix (B, n, n) of the chosen strategy."""
        if self.curvature == "hutchinson":
            return torch.diag_embed(self._diagonal(x))
        if self.curvature == "gauss-newton":
            self.counters.nhev += 1
            J = autodiff.jacobian(self.residuals, x)[1]
            return J.transpose(-1, -2) @ J
        if self.hess is not None and self.curvature == "exact":
            self.counters.nhev += 1
            return self._supplied("hess", x)
        if self.hessp is not None or self.curvature == "hvp":
            return self.operator(x).to_dense()
        self.counters.nhev += 1
        if (out := self._fused("hessian", x)) is not None:
            return out
        return self._gradient_graph(x).hessian()

    def operator(self, x: torch.Tensor) -> LinearOperator:
        """The curvature at x as an operator for Krylov solvers (products only where possible).

        All products at one x share work: autodiff records f and ∇f once and each product is one
        backward pass through that graph; a user ``hess`` without ``hessp`` is called once, on the
        first product, and multiplied thereafter (counted as one Hessian).
        """
        batch, n = x.shape
        if self.curvature == "hutchinson":
            return DiagonalOperator(self._diagonal(x))
        if self.hess is not None and self.hessp is None and self.curvature == "exact":
            return DenseOperator(self.hessian(x))
        if self.curvature == "gauss-newton" or self.hessp is not None:
            return MatrixFreeOperator(lambda v: self.hvp(x, v), (batch, n, n), dtype=x.dtype, device=x.device)
        return MatrixFreeOperator(self._products(x), (batch, n, n), dtype=x.dtype, device=x.device)

    def _products(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """v ↦ ∇²f(x)v from ``hess`` or autodiff, its one-time work done on the first product."""
        apply: list[Callable[[torch.Tensor], torch.Tensor]] = []

        def product(v: torch.Tensor) -> torch.Tensor:
            if not apply:
                if self.hess is not None:
                    self.counters.nhev += 1
                    H = self._supplied("hess", x)
                    # bmm, the kernel ``@`` reaches on (B, n, n) operands, without its broadcasting
                    # views: the same products, a few microseconds less each in a small solve
                    apply.append(lambda u: torch.bmm(H, u.unsqueeze(-1)).squeeze(-1))
                elif torch.is_grad_enabled():  # products that may be differentiated
                    apply.append(autodiff.hvp_linearized(self.fun, x))
                elif (first := self._fused("hvp", x, v)) is not None:
                    # each product one fused call (f and ∇f recomputed inside it, at no dispatch cost)
                    apply.append(lambda u: self.compiled("hvp", x, u))
                    self.counters.nhev += 1
                    return first
                else:
                    apply.append(self._gradient_graph(x).product)
            if self.hess is None:
                self.counters.nhev += 1
            return apply[0](v)

        return product

    def _diagonal(self, x: torch.Tensor) -> torch.Tensor:
        return hutchinson_diagonal(lambda v: self.hvp(x, v), x, samples=self.hutchinson_samples,
                                   generator=self.generator)


def batch_objective(fun: BatchFunction, args: tuple, batch: bool) -> BatchFunction:
    """f as a batched function (B, n) → (B,); without ``batch`` the user's f takes (n,) → ()."""
    if batch:
        return lambda x: fun(x, *args)

    def single(x: torch.Tensor) -> torch.Tensor:
        # the one row as a view whose derivative is a view too (``x[0]``'s would scatter into zeros)
        out = fun(x.squeeze(0), *args)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise ValueError(f"fun must return a scalar tensor, got {getattr(out, 'shape', type(out).__name__)}")
        return out.reshape(1)

    return single


def batch_derivative(fun: BatchFunction | None, args: tuple, batch: bool, *, vector: bool = False) -> BatchFunction | None:
    """A user jac/hess (x) or hessp (x, v) in batched form."""
    if fun is None or batch:
        return None if fun is None else (lambda x, *v: fun(x, *v, *args))
    if vector:
        return lambda x, v: fun(x[0], v[0], *args).unsqueeze(0)
    return lambda x: fun(x[0], *args).unsqueeze(0)
