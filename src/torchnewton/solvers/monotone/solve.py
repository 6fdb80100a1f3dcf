"""``torchnewton.monotone_inclusion``: solve 0 ∈ F(x) + G(x) for a finite sum F = (1/n) Σᵢ Fᵢ."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ...core.counters import Counters
from ...core.result import Result
from ...core.validate import check_method, check_options, check_positive, check_tensor
from ..entry import build_result, check_callable
from ..loop import iterate
from .extragradient import ExtraAnchoredGradient, Extragradient
from .operator import FiniteSumOperator, OracleCounter, Resolvent
from .state import MonotoneTermination
from .vr_halpern import VarianceReducedHalpern

METHODS = ("vr-halpern", "halpern", "extragradient")
_OPTIONS = {
    "vr-halpern": ("restart", "resolvent_step", "batch_size", "snapshot_probability", "inner_step",
                   "inner_scale", "seed", "generator"),
    "halpern": ("restart", "step"),
    "extragradient": ("step",),
}


def monotone_inclusion(operator: FiniteSumOperator, x0: torch.Tensor, *, method: str = "vr-halpern",
                       resolvent: Resolvent | None = None, tol: float = 1e-6, max_oracle_calls: int = 10 ** 8,
                       max_iter: int = 10 ** 7, options: dict[str, Any] | None = None,
                       callback: Callable[[Any], Any] | None = None, record_history: bool = False) -> Result:
    """Find x with 0 ∈ F(x) + G(x), F = (1/n) Σᵢ Fᵢ monotone and Lipschitz, G maximally monotone
    given by ``resolvent(x, step)`` = J_{step·G}(x) = (I + step·G)⁻¹(x) (a proximal map or a
    projection; None for G = 0). Stops when the natural residual ‖x − J_G(x − F(x))‖₂ ≤ ``tol``
    (≤ dist(0, F(x) + G(x)); equal to ‖F(x)‖₂ without G).

    Methods (cost in single-component oracle calls; a full evaluation of F costs n):

    * ``"vr-halpern"`` (default): the variance-reduced Halpern iteration of Cai, Alacaoglu &
      Diakonikolas (ICLR 2024, Algorithm 2), Halpern on the resolvent of η(F + G) computed by
      variance-reduced forward-reflected-backward steps on minibatches, Õ(n + √n L D/ε) calls
      (see :mod:`.vr_halpern`). Options: ``resolvent_step`` η (√n/L), ``batch_size`` b (⌈√n⌉),
      ``snapshot_probability`` p (b/n, at most 1/2), ``inner_step`` θ (1.0, the fraction of the
      inner step bound), ``inner_scale`` (1.0, the constant of the inner schedule), ``restart``
      (False), ``seed`` (0) or ``generator`` (a ``torch.Generator``);
    * ``"halpern"``: the deterministic Halpern method for monotone Lipschitz F, the
      extra-anchored gradient (Halpern anchoring on extragradient steps), O(n L D/ε) calls.
      Options ``step`` τ (1/(8 L_F), the bound of its analysis), ``restart`` (False);
    * ``"extragradient"``: the baseline, 2n calls per step. Option ``step`` τ (1/(2 L_F)).

    With ``restart`` a Halpern method moves its anchor to the current point whenever the
    residual has halved since the anchor was set (linear convergence on sharp problems: strongly
    monotone F, polyhedral games). D = ‖x₀ − x*‖; L is ``operator.lipschitz``, L_F
    ``operator.full_lipschitz``.

    The Result: ``x`` the best point (smallest residual), ``fun`` its natural residual vector,
    ``success`` iff ``residual_norm`` ≤ tol, ``status`` ``MAX_ITER`` when ``max_oracle_calls`` or
    ``max_iter`` (outer steps) ran out, ``NONFINITE`` on NaN/Inf; ``oracle_calls`` (also
    ``nfev``) the single-component calls spent, including the full evaluations that measure the
    residual; ``nit`` the (outer) steps.

    Example:
        >>> import torch, torchnewton
        >>> from torchnewton.solvers.monotone.operator import FiniteSumOperator
        >>> M = torch.tensor([[0.1, 1.0], [-1.0, 0.1]], dtype=torch.float64)   # x·y + 0.05(x² − y²)
        >>> op = FiniteSumOperator(lambda z, idx: M @ z - 1.0, n=1, lipschitz=1.01)
        >>> res = monotone_inclusion(op, torch.zeros(2, dtype=torch.float64), method="extragradient", tol=1e-9)
        >>> bool(res.success), torch.allclose(M @ res.x, torch.ones(2, dtype=torch.float64), atol=1e-8)
        (True, True)
    """
    if not isinstance(operator, FiniteSumOperator):
        raise TypeError(f"operator must be a FiniteSumOperator, got {type(operator).__name__}")
    key = check_method(method, METHODS)
    check_callable(resolvent, "resolvent")
    check_callable(callback, "callback")
    check_positive(tol, "tol")
    check_positive(max_oracle_calls, "max_oracle_calls", integer=True)
    check_positive(max_iter, "max_iter", integer=True, allow_zero=True)
    opts = check_options(options, _OPTIONS[key])
    check_tensor(x0, "x0", ndim=1)
    if x0.numel() == 0:
        raise ValueError("x0 must not be empty")
    x = x0.detach().clone()
    _check_oracles(operator, resolvent, x)
    oracle = OracleCounter(operator, resolvent, x.device)
    termination = MonotoneTermination(float(tol), int(max_oracle_calls))
    solver = _make(key, opts, operator, termination, x.device)
    with torch.no_grad():
        loop = iterate(solver, oracle, x.unsqueeze(0), max_iter=max_iter, callback=callback,
                       record_history=record_history)
        state = loop.state
        fun = oracle.residual(state.best_x, state.best_fun)
    calls = torch.tensor([oracle.calls])
    return build_result(loop, Counters(nfev=oracle.calls), False, state.best_x, fun=fun,
                        extras={"residual_norm": state.best_residual, "oracle_calls": calls})


def _check_oracles(operator: FiniteSumOperator, resolvent: Resolvent | None, x: torch.Tensor) -> None:
    """One component at x0 and one resolvent step must return finite (d,) tensors of x0's dtype."""
    with torch.no_grad():
        try:
            out = operator.components(x, torch.zeros(1, dtype=torch.long, device=x.device))
        except (RuntimeError, IndexError) as err:
            raise ValueError(f"operator.components failed on x0 of shape {tuple(x.shape)}: {err}") from err
        _check_value(out, "operator.components", x)
        if resolvent is not None:
            _check_value(resolvent(x, 1.0), "resolvent", x)


def _check_value(value: Any, name: str, x: torch.Tensor) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(value).__name__}")
    if value.shape != x.shape or value.dtype != x.dtype:
        raise ValueError(f"{name} returned {tuple(value.shape)} {value.dtype}, expected {tuple(x.shape)} {x.dtype}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} returned non-finite values (NaN or Inf) at x0")


def _make(key: str, opts: dict[str, Any], operator: FiniteSumOperator, termination: MonotoneTermination,
          device: torch.device) -> Any:
    """The step object of ``key``, its options checked."""
    restart = opts.pop("restart", False)
    if not isinstance(restart, bool):
        raise TypeError(f"restart must be a bool, got {type(restart).__name__}")
    if key in ("extragradient", "halpern"):
        step = opts.pop("step", (0.5 if key == "extragradient" else 0.125) / operator.full_lipschitz)
        check_positive(step, "step")
        if key == "extragradient":
            return Extragradient(termination, float(step))
        return ExtraAnchoredGradient(termination, float(step), restart=restart)
    n, L = operator.n, operator.lipschitz
    eta = opts.pop("resolvent_step", math.sqrt(n) / L)
    batch = opts.pop("batch_size", min(n, math.ceil(math.sqrt(n))))
    check_positive(eta, "resolvent_step")
    check_positive(batch, "batch_size", integer=True)
    p = opts.pop("snapshot_probability", min(0.5, batch / n))
    check_positive(p, "snapshot_probability")
    if p >= 1:
        raise ValueError(f"snapshot_probability must be in (0, 1), got {p}")
    theta, scale = opts.pop("inner_step", 1.0), opts.pop("inner_scale", 1.0)
    check_positive(theta, "inner_step")
    check_positive(scale, "inner_scale")
    generator = opts.pop("generator", None)
    if generator is None:
        seed = opts.pop("seed", 0)
        check_positive(seed, "seed", integer=True, allow_zero=True)
        generator = torch.Generator(device=device).manual_seed(seed)
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    # the mean-square Lipschitz constant of Φ_B = I − u + η F_B for a minibatch of b
    lipschitz_phi = 1.0 + eta * math.sqrt(operator.full_lipschitz ** 2 + L ** 2 / batch)
    tau = theta * math.sqrt(p * (1.0 - p)) / lipschitz_phi
    return VarianceReducedHalpern(termination, float(eta), int(batch), float(p), tau, float(scale), generator,
                                  restart=restart)
