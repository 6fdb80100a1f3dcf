"""``torchnewton.root``: solve F(x) = 0 by Newton-type methods."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ...core.result import Result
from ...core.status import Status
from ...core.tolerances import default_tol
from ...core.validate import check_method, check_options, check_positive
from ...derivatives.compiled import check_compile_option
from .broyden import Broyden
from .homotopy import Homotopy
from ..entry import build_result, check_callable, check_output, prepare_x0
from ..implicit import differentiate_solution
from .hybrid import PowellHybrid, check_scaling
from .levenberg_marquardt import LevenbergMarquardt
from ..loop import LoopOutput, iterate
from .newton import NewtonLineSearch
from .newton_krylov import NewtonKrylov
from .problem import ResidualProblem, batch_function, batch_jacobian, compiled_residuals
from .termination import RootTermination

METHODS = ("newton", "newton-krylov", "broyden", "levenberg-marquardt", "dogleg", "homotopy", "auto")
_OPTIONS = {
    "newton": ("c1", "max_backtracks", "jac_mode"),
    "newton-krylov": ("c1", "max_backtracks", "inner_restart", "inner_max_iter", "max_forcing", "preconditioner",
                      "jvp", "max_step", "max_escapes", "min_step", "scaled_forcing", "recycle"),
    "broyden": ("c1", "max_backtracks", "jac_mode"),
    "levenberg-marquardt": ("initial_radius", "jac_mode"),
    "dogleg": ("jac_mode", "factor", "diag"),
    "homotopy": ("homotopy", "initial_step", "max_corrector", "corrector_tol", "min_lambda", "jac_mode"),
}
_OPTIONS = {key: names + ("compile",) for key, names in _OPTIONS.items()}

# method="auto": the chain tried in order, each from where the one before stopped. Powell's hybrid
# first (it solves most of the MGH and S2MPJ systems in the fewest evaluations), Levenberg–Marquardt
# where it stops for slow progress, and last Newton–Krylov, whose non-monotone steps can leave the
# local minimum of ‖F‖ where the other two stopped
AUTO_CHAIN = ("dogleg", "levenberg-marquardt", "newton-krylov")
# the endings after which the next method of a chain is tried (not SUCCESS, NONFINITE, CALLBACK_STOP)
RETRIED = (Status.MAX_ITER, Status.STALLED, Status.LINESEARCH_FAILED, Status.SINGULAR, Status.BREAKDOWN)


def root(fun: Callable[..., torch.Tensor], x0: torch.Tensor, *, method: str = "newton", args: tuple = (),
         jac: Callable[..., torch.Tensor] | None = None, tol: float | None = None, max_iter: int | None = None,
         options: dict[str, Any] | None = None, callback: Callable[[Any], Any] | None = None,
         batch: bool = False, record_history: bool = False, fallback: Sequence[str] | None = None) -> Result:
    """Find x with F(x) = 0, F: Rⁿ → Rⁿ, stopping when ‖F(x)‖∞ ≤ tol.

    Methods (case-insensitive):

    * ``"newton"``: Newton's method, J d = −F by LU (regularized where J is singular), with an
      Armijo backtracking search on ½‖F‖²;
    * ``"newton-krylov"``: Jacobian-free Newton–Krylov, GMRES on JVPs with Eisenstat–Walker
      forcing terms (Knoll & Keyes 2004), an Armijo search on ½‖F‖² and, where it fails,
      non-monotone full steps as scipy's ``krylov`` (see ``newton_krylov.NewtonKrylov``); options
      ``inner_restart``, ``inner_max_iter``, ``preconditioner`` (a callable r ↦ M⁻¹r on (B, n)),
      ``jvp`` ("autodiff" or "finite-difference"), ``max_forcing``, ``scaled_forcing``,
      ``max_step``, ``min_step``, ``max_escapes``, ``c1``, ``max_backtracks``, ``recycle`` (k > 0:
      one GCRO-DR solver recycling a k-dimensional subspace across the Newton iterations, for a
      batch of one); ``Result.krylov_iterations`` counts the GMRES/GCRO-DR iterations;
    * ``"broyden"``: Broyden's good method, refreshed from the true Jacobian when it fails;
    * ``"levenberg-marquardt"``: LM on ½‖F‖² with Moré's scaling;
    * ``"dogleg"``: Powell's hybrid method with MINPACK hybrj's rules (scipy's ``hybr``): a scaled
      dogleg trust region, Broyden updates of J between evaluations; options ``factor`` (initial
      step bound, default 100) and ``diag`` (fixed positive scale factors instead of Jacobian
      column norms);
    * ``"homotopy"``: pseudo-arclength continuation of H(x, λ) = F(x) − (1 − λ)F(x₀) (or the
      fixed-point homotopy, option ``homotopy="fixed-point"``) from λ = 0 to 1 with Newton
      correctors, past turning points, then Newton at λ = 1 (see ``homotopy.Homotopy``): for
      starts where Newton and the trust-region methods fail;
    * ``"auto"``: the chain ``AUTO_CHAIN`` = dogleg → levenberg-marquardt → newton-krylov, as with
      ``fallback``.

    ``fallback`` names methods tried in order after ``method`` for every member of the batch that
    ended MAX_ITER, STALLED, LINESEARCH_FAILED, SINGULAR or BREAKDOWN, each from the point where the
    previous method stopped (its best point: every method here decreases ½‖F‖² monotonically);
    members that succeeded, hit NaN/Inf or were stopped by the callback keep their result.
    ``max_iter`` applies to each try; ``nit``, ``nfev``, ``njev`` count all tries; ``options`` go
    to every method of the chain that accepts them. ``Result.method`` names the method that
    produced each answer (a list under batching).

    ``max_iter`` (per try of a chain) defaults to 100, for ``"dogleg"`` to MINPACK's budget
    100·(n + 1) (one iteration is one trial point there, and badly scaled systems such as MGH's
    Powell function need about 170).

    ``fun(x, *args)`` maps (n,) to (n,); with ``batch=True`` it maps (B, n) to (B, n), row i
    depending only on row i, and every Result field gets a leading batch dimension. ``jac(x, *args)``
    returns the (n, n) (or (B, n, n)) Jacobian; by default autodiff provides it. If a tensor in
    ``args`` requires grad, the returned x carries gradients by implicit differentiation.

    ``options={"compile": True}`` (every method; default False) computes the autodiff Jacobian
    (with F) and its products by compiled ``torch.func`` transforms, and F and a given ``jac`` by
    the user's callables themselves, each traced once and fused by Inductor (see
    :mod:`torchnewton.derivatives.compiled`): faster per iteration on small systems after a
    compilation of seconds per function and shape, reused by later solves of the same functions
    and shapes (``least_squares`` shares them). The tensors in ``args`` are inputs of the compiled
    graphs; what the callables close over is frozen at the first compilation. The Result then adds
    ``compiled`` (False where a callable could not be traced into one graph and the eager path was
    used, with a ``CompileFallbackWarning``) and ``compile_seconds`` (spent in this solve).

    Example:
        >>> import torch, torchnewton
        >>> res = torchnewton.root(lambda x: x**3 - torch.tensor([8.0, 27.0]), torch.ones(2, dtype=torch.float64))
        >>> res.x, res.success
        (tensor([2., 3.], dtype=torch.float64), True)
        >>> torchnewton.root(lambda x: x**3 - 8, torch.ones(1, dtype=torch.float64), method="auto").method
        'dogleg'
    """
    key = check_method(method, METHODS)
    chain = _chain(key, fallback)
    check_callable(fun, "fun")
    check_callable(jac, "jac")
    check_callable(callback, "callback")
    if max_iter is not None:
        check_positive(max_iter, "max_iter", integer=True, allow_zero=True)
    if tol is not None:
        check_positive(tol, "tol")
    opts = _split_options(options, chain)
    x = prepare_x0(x0, batch, args)
    if "diag" in opts.get("dogleg", {}):
        opts["dogleg"]["diag"] = check_scaling(opts["dogleg"]["diag"], x)
    batched_fun = batch_function(fun, args, batch)
    batched_jac = None if jac is None else batch_jacobian(jac, args, batch)
    jac_mode = next((o.pop("jac_mode") for o in opts.values() if "jac_mode" in o), "auto")
    compile_ = check_compile_option(next((o.pop("compile") for o in opts.values() if "compile" in o), False))
    for o in opts.values():
        o.pop("jac_mode", None)
        o.pop("compile", None)
    compiled = compiled_residuals(fun, args, batch, jac_mode, jac) if compile_ else None
    problem = ResidualProblem(batched_fun, batched_jac, jac_mode=jac_mode, compiled=compiled)
    with torch.no_grad():
        F0 = problem.residual(x)
    check_output(F0, "fun", tuple(x.shape))
    termination = RootTermination(tol if tol is not None else default_tol(x.dtype))
    with torch.no_grad():
        loop, producer, jacobian = _run_chain(chain, opts, termination, problem, x, max_iter, callback, record_history)
    state = loop.state
    x_star = differentiate_solution(state.x, fun, args, batch, condition="residual")
    extras = {"krylov_iterations": state.krylov_iterations} if hasattr(state, "krylov_iterations") else {}
    if problem.compiled is not None:
        extras.update(problem.compiled.info())
    result = build_result(loop, problem.counters, batch, x_star, fun=state.F, jac=jacobian, extras=extras)
    result.method = producer if batch else producer[0]
    return result


def _chain(key: str, fallback: Sequence[str] | None) -> tuple[str, ...]:
    """The methods to try in order; ``fallback`` names are checked like ``method``."""
    if fallback is None:
        return AUTO_CHAIN if key == "auto" else (key,)
    if key == "auto":
        raise ValueError(f"fallback cannot be combined with method='auto' (its chain is {AUTO_CHAIN})")
    if isinstance(fallback, str) or not isinstance(fallback, Sequence):
        raise TypeError(f"fallback must be a sequence of method names, got {type(fallback).__name__}")
    rest = tuple(check_method(name, [m for m in METHODS if m != "auto"], "fallback method") for name in fallback)
    return (key,) + rest


def _split_options(options: dict[str, Any] | None, chain: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each method of the chain gets the options it accepts; a name no method accepts is an error."""
    opts = check_options(options, {name for m in chain for name in _OPTIONS[m]})
    return {m: {k: v for k, v in opts.items() if k in _OPTIONS[m]} for m in chain}


def _solver(key: str, termination: Any, opts: dict[str, Any]) -> Any:
    return {
        "newton": lambda: NewtonLineSearch(termination, direction="dense", **opts),
        "newton-krylov": lambda: NewtonKrylov(termination, **opts),
        "broyden": lambda: Broyden(termination, **opts),
        "levenberg-marquardt": lambda: LevenbergMarquardt(termination, **opts),
        "dogleg": lambda: PowellHybrid(termination, **opts),
        "homotopy": lambda: Homotopy(termination, termination.tol, **opts),
    }[key]()


@dataclass
class _KeepSettled:
    """A termination rule under which the members ``settled`` by an earlier try of a chain are
    done from the start with their earlier status (the loop then never steps them)."""

    termination: Any
    settled: torch.Tensor
    status: torch.Tensor

    def __getattr__(self, name: str) -> Any:  # the wrapped rule's parameters (e.g. ``tol``)
        if name == "termination":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.termination, name)

    def __call__(self, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
        done, code = self.termination(state)
        return done | self.settled, torch.where(self.settled, self.status, code)


def _run_chain(chain: tuple[str, ...], opts: dict[str, dict[str, Any]], termination: RootTermination,
               problem: ResidualProblem, x: torch.Tensor, max_iter: int | None, callback: Any,
               record_history: bool) -> tuple[LoopOutput, list[str], torch.Tensor | None]:
    """Run the chain; returns the combined loop output, the producing method of each member and
    the Jacobian of the final iterates (None where one came from a matrix-free method)."""
    retried = torch.tensor([int(s) for s in RETRIED], device=x.device)
    loop, producer, jacobian, nit, history = None, [chain[0]] * x.shape[0], None, None, []
    for attempt, key in enumerate(chain):
        if loop is None:
            rule = termination
        else:
            retry = torch.isin(loop.status, retried)
            if not bool(retry.any()):
                break
            rule = _KeepSettled(termination, ~retry, loop.status)
            x = loop.state.x
        limit = max_iter if max_iter is not None else 100 * (x.shape[-1] + 1) if key == "dogleg" else 100
        output = iterate(_solver(key, rule, opts[key]), problem, x, max_iter=limit, callback=callback,
                         record_history=record_history)
        J = getattr(output.state, "J", None) if key != "newton-krylov" else None
        if loop is None:
            jacobian, nit = J, output.nit
        else:
            jacobian = None if jacobian is None or J is None else torch.where(retry.view(-1, 1, 1), J, jacobian)
            producer = [key if r else p for r, p in zip(retry.tolist(), producer)]
            nit = nit + output.nit
        history += output.history
        loop = output
    return LoopOutput(state=loop.state, status=loop.status, nit=nit, history=history), producer, jacobian
