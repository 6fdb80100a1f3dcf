"""``LayerParallelResidualStack``: evaluate h_l = h_{l−1} + g_l(h_{l−1}), l = 1..L, over all
layers at once by Newton-type sweeps over depth (SNLP: Han, Xu, Wang & Srivastava 2026,
"Layer-Parallel Inference via Structured Newton Corrections"; DEER over depth).

The blocks are same-shaped modules whose parameters this module stacks along a leading layer
dimension (``torch.func.stack_module_state``); a sweep evaluates every block once, in one
vmapped ``functional_call`` (:mod:`.residual_stack_problem`), then corrects the whole trace:

* ``"identity-newton"`` (IDN): the Jacobian I + ∂g_l/∂h of each layer is replaced by I, so the
  correction is the prefix sum δ_l = Σ_{j≤l} r_j of the residuals r_l = h_{l−1} + g_l(h_{l−1}) − h_l;
  from h_l⁰ = x the first sweep gives h_l = x + Σ_{j≤l} g_j(x);
* ``"newton"``: exact Newton with the Jacobians from JVPs and a dense linear scan over depth;
* ``"sequential"``: the plain loop, the reference.

Both sweeps run on :mod:`torchnewton.recurrence`'s solver (``LinearizedNewton`` in the shared
loop, the parallel scans), so like every such method they are exact after at most L sweeps (after
sweep i the first i layers are exact). Gradients of a solved stack come from the adjoint
recurrence at the solution (:class:`torchnewton.recurrence.implicit.ImplicitStates`), the
gradients of the sequential forward. :meth:`snlp_regularizer` is the paper's training term that
makes a few IDN sweeps match the sequential forward.

Example:
    >>> import torch
    >>> from torch import nn
    >>> blocks = [nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8)) for _ in range(12)]
    >>> stack = LayerParallelResidualStack(blocks).double()
    >>> x = torch.randn(4, 8, dtype=torch.float64)
    >>> out = stack(x)                                # IDN sweeps until the trace solves the stack
    >>> torch.allclose(out, stack(x, method="sequential")), stack.last_stats.sweeps <= 12
    (True, True)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..core.status import Status
from ..core.tolerances import eps
from ..core.validate import check_method, check_positive, check_tensor
from ..recurrence.implicit import ImplicitStates
from ..recurrence.newton import LinearizedNewton
from ..solvers.loop import iterate
from .residual_stack_problem import DepthProblem

METHODS = ("identity-newton", "newton", "sequential")
_JACOBIAN = {"identity-newton": "diagonal", "newton": "full"}


@dataclass
class StackStats:
    """Statistics of the last forward: ``sweeps`` done (the most over the batch; L for the
    sequential loop), per-sample ``residual`` max_l |h_l − h_{l−1} − g_l(h_{l−1})| and ``status``,
    ``nfev`` whole-stack evaluations."""

    sweeps: int
    residual: torch.Tensor
    status: torch.Tensor
    nfev: int

    @property
    def success(self) -> torch.Tensor:
        return self.status == int(Status.SUCCESS)


class LayerParallelResidualStack(nn.Module):
    """h_L for h_0 = x and h_l = h_{l−1} + g_l(h_{l−1}), evaluated layer-parallel.

    Args:
        blocks: L ≥ 1 modules g_l of identical structure mapping (B, d) to (B, d) (their
            parameters are copied and stacked; buffers too).
        method: default method of :meth:`forward`: ``"identity-newton"``, ``"newton"`` or
            ``"sequential"``.
        tol: absolute tolerance on the residual max_l |r_l| (default eps^(3/4) of the dtype).

    ``forward(x, sweeps=None, method=None)``: x (B, d) or (d,); with ``sweeps=None`` the sweeps
    go on until the residual is at most ``tol`` (at most L: exact); with ``sweeps=k`` at most k
    (a possibly approximate output, the paper's inference mode; ``last_stats`` says how far).
    """

    def __init__(self, blocks: Sequence[nn.Module], *, method: str = "identity-newton", tol: float | None = None):
        super().__init__()
        blocks = list(blocks)
        if not blocks or not all(isinstance(b, nn.Module) for b in blocks):
            raise TypeError("blocks must be a non-empty sequence of nn.Module")
        shapes = [[(k, v.shape) for k, v in b.state_dict().items()] for b in blocks]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("blocks must have identical structure (same parameter names and shapes)")
        self.method = check_method(method, METHODS)
        if tol is not None:
            check_positive(tol, "tol")
        self.tol = tol
        params, buffers = torch.func.stack_module_state(blocks)
        self.names = list(params)
        self.buffer_names = list(buffers)
        for i, name in enumerate(self.names):
            self.register_parameter(f"stacked_{i}", nn.Parameter(params[name].detach().clone()))
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"stacked_buffer_{i}", buffers[name].detach().clone())
        # the structure without weights: functional_call supplies them
        self.template = [copy.deepcopy(blocks[0]).to("meta")]
        self.last_stats: StackStats | None = None

    @property
    def depth(self) -> int:
        return self.stacked_0.shape[0]

    def stacked(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers, each with a leading layer dimension L."""
        out = {name: getattr(self, f"stacked_{i}") for i, name in enumerate(self.names)}
        out.update({name: getattr(self, f"stacked_buffer_{i}") for i, name in enumerate(self.buffer_names)})
        return out

    def layer_call(self, params: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        """g(h) with one layer's parameters."""
        return torch.func.functional_call(self.template[0], params, (h,))

    def sequential(self, x: torch.Tensor) -> torch.Tensor:
        """The trace (h_1, ..., h_L), (B, L, d), by the sequential loop."""
        params, h, trace = self.stacked(), x, []
        for layer in range(self.depth):
            h = h + self.layer_call({k: v[layer] for k, v in params.items()}, h)
            trace.append(h)
        return torch.stack(trace, 1)

    def forward(self, x: torch.Tensor, sweeps: int | None = None, method: str | None = None) -> torch.Tensor:
        h = self.trace(x, sweeps=sweeps, method=method)
        return h[..., -1, :]

    def trace(self, x: torch.Tensor, sweeps: int | None = None, method: str | None = None) -> torch.Tensor:
        """All hidden states (h_1, ..., h_L): (B, L, d), or (L, d) for x of shape (d,)."""
        key = self.method if method is None else check_method(method, METHODS)
        check_tensor(x, "x", ndim=(1, 2))
        if sweeps is not None:
            check_positive(sweeps, "sweeps", integer=True)
        batched = x.dim() == 2
        h0 = x if batched else x.unsqueeze(0)
        if key == "sequential":
            h = self.sequential(h0)
            with torch.no_grad():
                problem = DepthProblem.build(self.layer_call, self.stacked(), h0.detach(), 0.0)
                residual = problem.residual_and_jacobian(h.detach(), "none")[2]
            status = torch.where(torch.isfinite(residual), int(Status.SUCCESS), int(Status.NONFINITE))
            self.last_stats = StackStats(self.depth, residual, status, self.depth)
        else:
            h = self._solve(h0, key, sweeps)
        return h if batched else h[0]

    def _solve(self, h0: torch.Tensor, key: str, sweeps: int | None) -> torch.Tensor:
        tol = eps(h0.dtype) ** 0.75 if self.tol is None else self.tol
        params = self.stacked()
        detached = {k: v.detach() for k, v in params.items()}
        problem = DepthProblem.build(self.layer_call, detached, h0.detach(), tol)
        # start from h_l = x: the first IDN sweep is then x + Σ_{j≤l} g_j(x)
        guess = h0.detach().unsqueeze(1).expand(-1, self.depth, -1).contiguous()
        with torch.no_grad():
            out = iterate(LinearizedNewton(_JACOBIAN[key]), problem, guess,
                          max_iter=self.depth if sweeps is None else min(sweeps, self.depth))
        state = out.state
        self.last_stats = StackStats(int(out.nit.max()), state.residual, out.status, problem.counters.nfev)
        trainable = [p for p in self.parameters() if p.requires_grad]
        if torch.is_grad_enabled() and (h0.requires_grad or trainable):
            # gradients of the solved trace: the adjoint recurrence with the live parameters
            live = DepthProblem.build(self.layer_call, params, h0.detach(), tol)
            return ImplicitStates.apply(live, state.h, h0, live.us, *trainable)
        return state.h

    def identity_newton_sweeps(self, x: torch.Tensor, sweeps: int) -> torch.Tensor:
        """The trace after ``sweeps`` IDN sweeps from h_l = x, differentiable through the sweeps
        (what :meth:`snlp_regularizer` trains): h ← h + cumsum_l(h_{l−1} + g_l(h_{l−1}) − h_l)."""
        check_positive(sweeps, "sweeps", integer=True)
        problem = DepthProblem.build(self.layer_call, self.stacked(), x, 0.0)
        h = x.unsqueeze(1).expand(-1, self.depth, -1)
        for _ in range(sweeps):
            prev = problem.previous(h)
            residual = (prev + problem.blocks(prev)).transpose(0, 1) - h
            h = h + residual.cumsum(1)
        return h

    def snlp_regularizer(self, x: torch.Tensor, sweeps: int = 1, detach_target: bool = True) -> torch.Tensor:
        """SNLP-aware regularization: the mean squared distance between the trace after ``sweeps``
        Identity-Newton sweeps and the sequential trace (the target detached by default), added
        to the task loss so that a few sweeps reproduce the sequential forward (the paper's
        hidden-state matching; its inference then stops after those few sweeps).

        What it can and cannot buy: with e⁽ᵏ⁾ = h⁽ᵏ⁾ − h the error of the trace after k sweeps and
        J_l = ∂g_l/∂h, one sweep maps it to e⁽ᵏ⁺¹⁾_l = Σ_{j≤l} J_j e⁽ᵏ⁾_{j−1} (exactly for linear
        blocks, to first order otherwise), from e⁽⁰⁾_l = x − h_l. The term lowers the first
        error, which the drift h_l − x and the Jacobians along it set; reaching a tight tolerance
        (1e-5 of the sequential output) in few sweeps needs the operator itself small, i.e. blocks
        blind to what earlier blocks wrote: a network whose depth does nothing sequential. A large
        weight finds that degenerate minimizer (saturated, input-independent blocks: exact in two
        sweeps, chance accuracy); a moderate one raises the accuracy after 1–3 sweeps but leaves
        the sweeps to a tight tolerance near the plain model's (``torchnewton bench fixed_point``,
        part (e))."""
        target = self.sequential(x)
        if detach_target:
            target = target.detach()
        return (self.identity_newton_sweeps(x, sweeps) - target).square().mean()

    def extra_repr(self) -> str:
        return f"depth={self.depth}, method={self.method!r}"
