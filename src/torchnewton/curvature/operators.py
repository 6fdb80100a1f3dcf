"""Curvature matrices of a network as linear operators: Hessian, Gauss–Newton, Fisher.

For a model f(x; θ), a loss L(θ) = Σ_b w_b ℓ_b(f(X_b; θ), Y_b) over one batch or all batches of
a loader (w_b = N_b/N for reduction 'mean', 1 for 'sum'), each operator is the n×n symmetric
matrix over the trainable parameters θ ∈ ℝⁿ:

* ``HessianOperator``: H = ∇²_θ L;
* ``GaussNewtonOperator``: the generalized Gauss–Newton matrix G = Σ_b w_b J_bᵀ (∇²_f ℓ_b) J_b,
  exact, with the loss Hessian in closed form (Schraudolph 2002, "Fast curvature matrix-vector
  products for second-order gradient descent");
* ``EmpiricalFisherOperator``: F̃ = Σ_b w_b (1/R_b) Σ_n ∇ℓ_n ∇ℓ_nᵀ, the per-sample gradients of
  the unreduced loss at the data's targets, R_b the 'mean' divisor (1 for 'sum'), so that F̃ has
  the scale of G (Kunstner, Hennig, Balles 2019, "Limitations of the empirical Fisher");
* ``MonteCarloFisherOperator``: the same with targets drawn from the model's predictive
  distribution, averaged over ``samples`` draws; its expectation is the Fisher = G for MSE and
  cross-entropy (Martens 2020, §9.2).

They are ``torchnewton.linear.LinearOperator`` s of shape (1, n, n) whose ``matvec`` takes any
block (B, n) of row vectors, so ``linear.cg`` / ``minres`` and the spectral tools of this package
apply; ``op @ v`` takes a vector (n,), a matrix (n, k) or a list of tensors shaped like the
parameters. Parameters with ``requires_grad=False`` are constants; the model's train/eval mode
is used as it is, never changed.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> G = GaussNewtonOperator(model, torch.nn.CrossEntropyLoss(), (X, y))
    >>> v = [torch.randn_like(p) for p in model.parameters()]
    >>> Gv = G @ v                      # a list shaped like the parameters
    >>> G.to_dense().shape
    torch.Size([1, 67, 67])
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.validate import check_method, check_positive
from ..linear.operator import LinearOperator
from .data import Batches
from .losses import OutputLoss, output_loss
from .params import flatten, trainable_parameters, unflatten
from .products import (FunctionalModel, forward_elements, hessian_double_backward, hessian_forward_over_reverse,
                       hessian_reverse_over_reverse, jacobian_sandwich, outer_product_operator, scalar_loss)

Vectors = list[torch.Tensor]


class CurvatureOperator(LinearOperator):
    """Common part: parameters, data, product accumulation over batches and conversions."""

    def __init__(self, model: torch.nn.Module, loss_function: Callable[..., torch.Tensor], data: Any,
                 *, reduction: str | None = None):
        self.names, self.params = trainable_parameters(model)
        if not callable(loss_function):
            raise TypeError(f"loss_function must be callable, got {type(loss_function).__name__}")
        self.model, self.loss_function = model, loss_function
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.num_parameters = sum(p.numel() for p in self.params)
        self.shape = (1, self.num_parameters, self.num_parameters)
        self.batches = Batches(data, dtype=self.dtype, device=self.device)
        self.reduction = self._reduction(reduction)
        self.function = FunctionalModel(model, self.names)
        self._check_data()
        if model.training and any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
                                   for m in model.modules()):
            warnings.warn("model is in training mode with dropout: every product draws new dropout "
                          "masks, so the operator is random; call model.eval() for a fixed matrix",
                          stacklevel=3)

    def _reduction(self, reduction: str | None) -> str:
        attribute = getattr(self.loss_function, "reduction", None)
        if reduction is None:
            reduction = attribute
        elif attribute is not None and attribute != reduction:
            raise ValueError(f"reduction={reduction!r} contradicts loss_function.reduction={attribute!r}")
        if reduction is None:
            if self.batches.num_batches > 1:
                raise ValueError("loss_function has no .reduction attribute: pass reduction='mean' or "
                                 "'sum' to say how the batches of data combine")
            return "mean"
        if reduction not in ("mean", "sum"):
            raise ValueError(f"the loss must reduce to a scalar (reduction 'mean' or 'sum'), got {reduction!r}")
        return reduction

    def _check_data(self) -> None:
        """One forward pass over the data before any product: shapes, targets, finite losses."""
        with torch.no_grad():
            for index, (inputs, targets, _) in enumerate(self.batches.weighted(self.reduction)):
                outputs = self.function(self.params, inputs)
                self._check_batch(outputs, targets, f"batch {index} of data")
                loss = scalar_loss(self.loss_function, outputs, targets)
                if not bool(torch.isfinite(loss)):
                    raise ValueError(f"the loss is not finite ({float(loss)}) on batch {index} of data")

    def _check_batch(self, outputs: torch.Tensor, targets: torch.Tensor, where: str) -> None:
        """Subclasses that need more than a scalar loss check the outputs here."""

    def _batch_products(self, inputs: torch.Tensor, targets: torch.Tensor, vectors: Vectors) -> Vectors:
        raise NotImplementedError

    def _begin_product(self) -> None:
        """Hook run once per ``matvec`` before the pass over the batches."""

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """A vᵢ for every row of v (B, n), returned as (B, n); one pass over the data for the block."""
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"v must be a torch.Tensor of shape (B, {self.num_parameters}), got {type(v).__name__}")
        if v.dim() != 2 or v.shape[1] != self.num_parameters:
            raise ValueError(f"v must have shape (B, {self.num_parameters}), got {tuple(v.shape)}")
        if v.dtype != self.dtype:
            raise TypeError(f"v has dtype {v.dtype}, the operator {self.dtype}")
        if v.device != self.device:
            raise ValueError(f"v is on {v.device}, the model's parameters on {self.device}")
        if v.shape[0] == 0:
            return v.clone()
        vectors = unflatten(v, self.params)
        self._begin_product()
        total: torch.Tensor | None = None
        for inputs, targets, weight in self.batches.weighted(self.reduction):
            part = flatten(self._batch_products(inputs, targets, vectors), batch_dims=1).detach()
            total = part * weight if total is None else total.add_(part, alpha=weight)
        assert total is not None
        return total

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        return self.matvec(u)  # curvature matrices are symmetric

    def __matmul__(self, v: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | Vectors:
        """A v for a vector (n,), A V for a matrix (n, k), or a list of parameter-shaped tensors."""
        if isinstance(v, (list, tuple)):
            if len(v) != len(self.params) or any(t.shape != p.shape for t, p in zip(v, self.params)):
                raise ValueError("v must be a list of tensors shaped like the trainable parameters "
                                 f"{[tuple(p.shape) for p in self.params]}")
            return unflatten(self.matvec(flatten(v).unsqueeze(0))[0], self.params)
        if isinstance(v, torch.Tensor) and v.dim() == 1:
            return self.matvec(v.unsqueeze(0))[0]
        if isinstance(v, torch.Tensor) and v.dim() == 2:
            # the rows of a transposed (n, k) matrix are strided: the products want them contiguous
            return self.matvec(v.T.contiguous()).T
        raise TypeError("v must be a tensor (n,) or (n, k) or a list of parameter-shaped tensors")

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Parameter-shaped tensors → one vector (n,)."""
        return flatten(tensors)

    def unflatten(self, vector: torch.Tensor) -> Vectors:
        """A vector (n,) (or block (B, n)) → tensors shaped like the parameters."""
        return unflatten(vector, self.params)

    def to_dense(self, block_size: int = 64) -> torch.Tensor:
        """The matrix (1, n, n) from products with the identity's columns, ``block_size`` at a time."""
        check_positive(block_size, "block_size", integer=True)
        n = self.num_parameters
        eye = torch.eye(n, dtype=self.dtype, device=self.device)
        rows = [self.matvec(eye[start:start + block_size]) for start in range(0, n, block_size)]
        return torch.cat(rows).T.unsqueeze(0)

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` (n×n, float64 numpy in and out)."""
        from scipy.sparse.linalg import LinearOperator as ScipyLinearOperator

        def matmat(X: np.ndarray) -> np.ndarray:
            block = torch.as_tensor(np.asarray(X).T, dtype=self.dtype, device=self.device)
            return self.matvec(block.reshape(-1, self.num_parameters)).T.cpu().numpy().astype(np.float64)

        def matvec(x: np.ndarray) -> np.ndarray:
            return matmat(np.asarray(x).reshape(-1, 1)).reshape(np.shape(x))

        n = self.num_parameters
        return ScipyLinearOperator((n, n), matvec=matvec, rmatvec=matvec, matmat=matmat, rmatmat=matmat,
                                   dtype=np.float64)


class HessianOperator(CurvatureOperator):
    """H = ∇²_θ L for any loss returning a scalar.

    Every ``mode`` gives the exact product; they differ in speed only:

    * ``'auto'`` (default): double backward for one vector, and for a block (B, n) the vmapped
      reverse-over-reverse route in near-equal chunks of at most ⌊8 MiB / (E · itemsize)⌋
      vectors, E the number of elements one forward pass on the batch produces; when fewer than
      2 vectors fit, double backward. Past a few MiB per chunk the batched intermediates outgrow
      the caches: on a small CNN (5794 parameters, 512 digits images, E = 1.3·10⁶) a 64-vector
      block in one piece took about twice as long as one backward per vector, while on small
      MLPs a whole block of 16–64 in one piece was fastest. ``route(block, inputs)`` says which
      route a product takes and with how many vectors per chunk;
    * ``'double-backward'``: one backward of ⟨∇L, vᵢ⟩ per vector through a gradient graph built
      once per batch of data and shared by the whole block (cheapest for one vector);
    * ``'reverse-over-reverse'``: the pullback of the gradient function (``torch.func.vjp``),
      built once per batch, vmapped over the whole block;
    * ``'forward-over-reverse'``: ``torch.func.jvp`` of the gradient, vmapped over the block.

    In every mode, for a plain ``MSELoss`` / ``CrossEntropyLoss`` (no class weights, no label
    smoothing, targets in range) the gradient is the model's pullback of the loss's closed-form
    output gradient, which spares differentiating autograd's generic loss backward. ``reduction``
    is needed only for a plain function without a ``.reduction`` attribute when data has several
    batches.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> H = HessianOperator(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> H.route(16, X)
        ('reverse-over-reverse', 16)
        >>> H.matvec(torch.randn(16, H.num_parameters)).shape
        torch.Size([16, 67])
    """

    MODES = ("auto", "double-backward", "reverse-over-reverse", "forward-over-reverse")
    CHUNK_BYTES = 2**23

    def __init__(self, model: torch.nn.Module, loss_function: Callable[..., torch.Tensor], data: Any, *,
                 mode: str = "auto", reduction: str | None = None):
        self.mode = check_method(mode, self.MODES, "mode")
        self.output_loss: OutputLoss | None = None
        self._elements: dict[tuple[int, ...], int] = {}
        if type(loss_function) in (torch.nn.MSELoss, torch.nn.CrossEntropyLoss):
            # exact types only: a subclass may compute something else in its forward
            try:
                self.output_loss = output_loss(loss_function)
            except ValueError:  # class weights, label smoothing: autograd's backward of the loss
                pass
        super().__init__(model, loss_function, data, reduction=reduction)

    def route(self, block: int, inputs: torch.Tensor) -> tuple[str, int]:
        """(route, vectors per chunk) that a product with ``block`` vectors on a batch ``inputs`` takes."""
        check_positive(block, "block", integer=True)
        if self.mode == "double-backward" or (self.mode == "auto" and block == 1):
            return "double-backward", 1
        if self.mode != "auto":
            return self.mode, block
        key = tuple(inputs.shape)
        if key not in self._elements:  # one forward pass without graph per batch shape
            self._elements[key] = forward_elements(self.function, self.params, inputs)
        per_vector = max(self._elements[key], 1) * self.params[0].element_size()
        chunk = min(block, self.CHUNK_BYTES // per_vector)
        return ("double-backward", 1) if chunk < 2 else ("reverse-over-reverse", chunk)

    def _check_batch(self, outputs: torch.Tensor, targets: torch.Tensor, where: str) -> None:
        if self.output_loss is None:
            return
        try:
            self.output_loss.check(outputs, targets, where)
        except (TypeError, ValueError):  # e.g. ignore_index targets: the loss's own backward handles them
            self.output_loss = None

    def _batch_products(self, inputs: torch.Tensor, targets: torch.Tensor, vectors: Vectors) -> Vectors:
        loss_gradient = self.output_loss.reduced_gradient if self.output_loss is not None else None
        route, chunk = self.route(vectors[0].shape[0], inputs)
        if route == "double-backward":
            return hessian_double_backward(self.function, self.loss_function, inputs, targets, self.params,
                                           vectors, loss_gradient)
        if route == "reverse-over-reverse":
            return hessian_reverse_over_reverse(self.function, self.loss_function, inputs, targets, self.params,
                                                vectors, loss_gradient, chunk)
        return hessian_forward_over_reverse(self.function, self.loss_function, inputs, targets, self.params,
                                            vectors, loss_gradient)


class _OutputLossOperator(CurvatureOperator):
    """Operators Jᵀ M J built from a closed-form loss on the outputs (MSE, cross-entropy)."""

    def __init__(self, model: torch.nn.Module, loss_function: torch.nn.Module, data: Any):
        self.output_loss: OutputLoss = output_loss(loss_function)
        super().__init__(model, loss_function, data)

    def _check_batch(self, outputs: torch.Tensor, targets: torch.Tensor, where: str) -> None:
        self.output_loss.check(outputs, targets, where)

    def _middle(self, outputs: torch.Tensor, targets: torch.Tensor) -> Callable[..., torch.Tensor]:
        raise NotImplementedError

    def _batch_products(self, inputs: torch.Tensor, targets: torch.Tensor, vectors: Vectors) -> Vectors:
        def middle(outputs: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
            return self._middle(outputs, targets)(outputs, tangents)

        return jacobian_sandwich(self.function, inputs, self.params, vectors, middle)


class GaussNewtonOperator(_OutputLossOperator):
    """The exact generalized Gauss–Newton matrix Jᵀ (∇²_f L) J for MSELoss / CrossEntropyLoss."""

    def _middle(self, outputs: torch.Tensor, targets: torch.Tensor) -> Callable[..., torch.Tensor]:
        return self.output_loss.hessian_product


class EmpiricalFisherOperator(_OutputLossOperator):
    """(1/R) Σ_n ∇ℓ_n ∇ℓ_nᵀ over the samples n of the data (per-sample gradients at the data's targets).

    A sample is one row of the batch (with per-pixel outputs, ℓ_n sums its pixels). The product is
    Jᵀ[e_n ⟨e_n, J_n v⟩]_n with e_n = ∂ℓ_n/∂f_n, no per-sample gradient is stored; this equals the
    outer-product sum when sample n's output depends only on input n (not with BatchNorm in
    training mode).
    """

    def _middle(self, outputs: torch.Tensor, targets: torch.Tensor) -> Callable[..., torch.Tensor]:
        gradients = self.output_loss.gradients(outputs, targets).unsqueeze(0)
        return outer_product_operator(gradients, self.output_loss.scale(outputs))


class MonteCarloFisherOperator(_OutputLossOperator):
    """(1/(R·S)) Σ_s Σ_n ∇ℓ(f_n, ỹ_sn) ∇ℓ(f_n, ỹ_sn)ᵀ with ỹ_sn ~ q(·|f_n), S = ``samples``.

    The draws are fixed when the operator is made (a seed taken from ``generator``, or from the
    global generator): every product uses the same targets, so the operator is one symmetric
    positive semi-definite matrix that CG and Lanczos can work with. ``sampled_targets()``
    returns those targets.
    """

    def __init__(self, model: torch.nn.Module, loss_function: torch.nn.Module, data: Any, *,
                 samples: int = 1, generator: torch.Generator | None = None):
        check_positive(samples, "samples", integer=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.samples = samples
        self.seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device
                                      if generator is not None else "cpu"))
        self._generator: torch.Generator | None = None
        super().__init__(model, loss_function, data)

    def _begin_product(self) -> None:
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def _draw(self, outputs: torch.Tensor) -> torch.Tensor:
        assert self._generator is not None
        return self.output_loss.sample_targets(outputs, self.samples, self._generator)

    def _middle(self, outputs: torch.Tensor, targets: torch.Tensor) -> Callable[..., torch.Tensor]:
        gradients = self.output_loss.gradients(outputs, self._draw(outputs))
        return outer_product_operator(gradients, self.output_loss.scale(outputs))

    def sampled_targets(self) -> list[torch.Tensor]:
        """The targets (samples, *target shape) every product uses, one tensor per batch of data."""
        self._begin_product()
        with torch.no_grad():
            return [self._draw(self.function(self.params, inputs))
                    for inputs, _, _ in self.batches.weighted(self.reduction)]
