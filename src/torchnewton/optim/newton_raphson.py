"""NewtonRaphson: damped Newton steps with the full curvature matrix, for models with few parameters.

A model with a handful to a few thousand parameters (a differentiable DSP chain, a physical model,
a small regression) can afford its whole curvature matrix C (n × n), and Newton's method then
converges in tens of steps where gradient descent takes thousands — the observation of Yu &
Fazekas, "Sound Matching an Analogue Levelling Amplifier Using the Newton-Raphson Method"
(arXiv:2509.10706, 2025), who fit a feed-forward compressor to a Teletronix LA-2A this way.

Each step solves the Levenberg–Marquardt system at the flat parameter vector x

    (C + λI) p = −g,    x ← x + lr·p,

where g is the gradient and C either the Hessian ∇²f(x) (``curvature="hessian"``) or, for a
least-squares loss f = ½‖r(x)‖², the exact Gauss–Newton matrix JᵀJ with J = ∂r/∂x
(``curvature="gauss-newton"``; positive semi-definite, needs no second derivatives of r).
The system is solved by a Cholesky factorization; when C + λI is not positive definite (an
indefinite Hessian) λ is raised until it is.

The damping is λ = μ‖g‖: proportional to the gradient norm, so that it vanishes at the solution
and the local convergence stays quadratic (the choice of Fan & Yuan 2005, "On the quadratic
convergence of the Levenberg–Marquardt method without nonsingularity assumption", Computing 74,
and of Li, Fukushima, Qi & Yamashita 2004 for regularized Newton; a λ that only shrinks by a
constant factor per step makes the convergence merely superlinear). The multiplier μ follows
the gain ratio of actual to predicted reduction by Nielsen's rule (Nielsen 1999, "Damping
parameter in Marquardt's method", IMM-REP-1999-05; Madsen, Nielsen & Tingleff 2004, "Methods
for non-linear least squares problems", §3.2):

    ρ = (f(x) − f(x + p)) / (−gᵀp − ½ pᵀCp).

A step with ρ > 0 and a finite loss is accepted and μ ← μ·max(1/3, 1 − (2ρ − 1)³), ν ← 2;
otherwise the parameters are restored bit for bit, μ ← μ·ν, ν ← 2ν, and the step is retried
with the new λ, at most ``max_trials`` times within one ``step()`` call. Near a minimum with
f ≠ 0 the predicted decrease falls below the rounding error of f (10·ε·|f|) and ρ becomes noise:
such a step is accepted unless f rises by more than that error (μ unchanged, ``gain_ratio``
None), so the iterates still converge to full precision in x. A NaN or infinite loss
at a trial point is a rejection like any other; at the current point it is an error (there is no
step to take): ``FloatingPointError``, as in every optimizer here, raised before anything changes.

``lazy=m`` reuses the curvature and its Cholesky factor (of C + λ_f I, with the λ_f of the
factorization) for m consecutive steps, each with a fresh gradient: the chord method of
Shamanskii (1967), which trades quadratic convergence per step for one curvature evaluation
per m steps. A rejected step during reuse recomputes the curvature at once.

The accepted trial point is the next step's current point, and its evaluation already carries
the autograd graph the curvature needs: when the next ``step`` gets the same closure object and
no parameter was modified in between (same storage, same version counter), that output is
reused instead of calling the closure again — one model evaluation saved per step, the iterates
unchanged (for a deterministic closure; a closure whose data change between steps should be a
new object each step, as a ``lambda`` written in the loop is). The held graph is released by the
next ``step`` and by ``load_state_dict``.

The closure: ``step(closure)`` is required. The closure re-evaluates the model with the current
parameters and returns, *with its autograd graph*, the scalar loss (``curvature="hessian"``) or
the residual tensor r of any shape (``curvature="gauss-newton"``; the loss is then ½‖r‖², which
``step`` returns). It need not call ``backward``; if it does, it must pass
``create_graph=True`` (a plain ``backward()`` frees the graph the curvature needs). The closure
is called with gradients enabled: once with curvature (or only the gradient during lazy reuse),
unless the previous step's accepted trial output is reused, and once per trial point.

Costs: n (Hessian) or min(m, n) (Gauss–Newton) extra backward passes per curvature evaluation,
O(n²) memory and an O(n³) factorization. For a few parameters and a long signal the curvature
dominates a step (for n = 6 and 4096 residuals about two thirds of it; each of the n passes
through the double-backward graph costs one to three model evaluations), so a step costs
several gradient evaluations and pays off when it replaces more than that many first-order
steps. All parameters form one Newton system, so there is one
parameter group (as in torch.optim.LBFGS).

State (``optimizer.state[first parameter]``, saved by ``state_dict``): ``step``, ``damping`` (λ of
the last factorization or rejection), ``damping_multiplier`` (μ), ``damping_growth`` (ν),
``damping_scale`` (max|Cᵢᵢ|), ``curvature``, ``cholesky``, ``reuse_left``; of the last step
``accepted``, ``gain_ratio``, ``trials`` and ``loss`` (at the parameters after it); the counts
``closure_evaluations`` and ``curvature_evaluations``. The reused trial output is not state: it
is a cache, and a resumed optimizer calls the closure once more, with the same iterates.

Example:
    >>> t = torch.linspace(0, 1, 50, dtype=torch.float64); y = 2.0 * torch.exp(-3.0 * t)
    >>> ab = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    >>> opt = NewtonRaphson([ab], curvature="gauss-newton")
    >>> for _ in range(15):
    ...     loss = opt.step(lambda: ab[0] * torch.exp(-ab[1] * t) - y)
    >>> ab.detach()
    tensor([2., 3.], dtype=torch.float64)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from ..globalize.hessian_modification import shifted_cholesky
from ..curvature.params import flatten
from .parameter_derivatives import assign_flat, gradient, hessian, jacobian
from .validate import check_choice, check_gradient, check_nonnegative, check_positive_int

CURVATURES = ("hessian", "gauss-newton")
# Doublings of λ tried to make an indefinite C + λI positive definite: enough to pass any
# eigenvalue of a finite float64 matrix from the smallest starting λ.
_MAX_SHIFTS = 2100
_TINY = 1e-300
# A predicted decrease below this many units of rounding of f cannot be told from noise by ρ.
_ROUNDING = 10.0


class NewtonRaphson(torch.optim.Optimizer):
    """Levenberg–Marquardt-damped Newton steps with the Hessian or the exact Gauss–Newton matrix.

    Args:
        params: the parameters (one group; all of one floating dtype and device). Parameters with
            ``requires_grad=False`` are left out of the Newton system.
        lr: step multiplier in (0, 1] (1: the full Newton step; the gain ratio's predicted
            reduction stays positive for lr ≤ 1).
        curvature: ``"hessian"`` (the closure returns the scalar loss) or ``"gauss-newton"``
            (the closure returns the residuals r, the loss is ½‖r‖²).
        damping: τ ≥ 0, the first λ relative to the scale of the first curvature matrix:
            λ₀ = τ·max|Cᵢᵢ| (Nielsen's rule), which sets μ = λ₀/‖g₀‖; 0 starts with the
            undamped Newton step.
        lazy: reuse the curvature factorization for this many steps (1: a fresh one every step).
        max_trials: damped steps tried per ``step()`` call before giving up on it (parameters
            then stay where they were, ``state["accepted"]`` is False).
        vectorize: compute the rows (or columns) of the curvature in one vmapped backward pass
            instead of a loop; faster when every operation of the model supports vmap.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1.0, *, curvature: str = "hessian",
                 damping: float = 1e-3, lazy: int = 1, max_trials: int = 10, vectorize: bool = False) -> None:
        check_nonnegative("lr", lr)
        if not 0.0 < float(lr) <= 1.0:
            raise ValueError(f"lr must lie in (0, 1], got {lr!r}")
        check_choice("curvature", curvature, CURVATURES)
        check_nonnegative("damping", damping)
        check_positive_int("lazy", lazy)
        check_positive_int("max_trials", max_trials)
        if not isinstance(vectorize, bool):
            raise TypeError(f"vectorize must be a bool, got {vectorize!r}")
        defaults = dict(lr=float(lr), curvature=curvature, damping=float(damping), lazy=lazy,
                        max_trials=max_trials, vectorize=vectorize)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups:
            raise ValueError("NewtonRaphson solves one Newton system for all parameters and takes one "
                             "parameter group; put every parameter in it")
        super().add_param_group(param_group)
        params = self.param_groups[0]["params"]
        first = params[0]
        for p in params:
            if not p.is_floating_point() or torch.is_complex(p):
                raise TypeError(f"params must be real floating-point tensors, got dtype {p.dtype}")
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(f"params must share one dtype and device; got {first.dtype} on {first.device} "
                                 f"and {p.dtype} on {p.device}")

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One accepted damped Newton step (or up to ``max_trials`` rejected ones); returns the
        loss at the parameters before the step."""
        if closure is None or not callable(closure):
            raise TypeError("NewtonRaphson.step requires closure: a callable that re-evaluates the model and "
                            "returns the loss (curvature='hessian') or the residuals (curvature='gauss-newton')")
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.requires_grad]
        if not params:
            raise RuntimeError("NewtonRaphson has no parameter with requires_grad=True")
        for p in params:
            check_gradient(p, "NewtonRaphson")
        state = self.state[group["params"][0]]
        if not state:
            state.update(step=0, damping=None, damping_multiplier=None, damping_growth=2.0, reuse_left=0,
                         closure_evaluations=0, curvature_evaluations=0)
        x = flatten([p.detach() for p in params])  # a copy: the step restores it on rejection
        reuse = state["reuse_left"] > 0 and state["cholesky"].shape[0] == x.numel()
        carried, self._carried = self._carried_output(closure, params), None
        loss, g, C = self._linearize(closure, params, group, state, with_curvature=not reuse, carried=carried)
        if reuse:
            state["reuse_left"] -= 1
        else:
            self._factorize(state, C, g, group)
        accepted, ratio, trial_loss, trials = False, None, loss, 0
        for trials in range(1, group["max_trials"] + 1):
            direction = -torch.cholesky_solve(g.unsqueeze(-1), state["cholesky"]).squeeze(-1)
            p = group["lr"] * direction
            predicted = float(-(g @ p + 0.5 * p @ (state["curvature"] @ p)))
            if not predicted > 0.0:  # g = 0 to working precision: nothing to gain
                trial_loss = loss
                break
            assign_flat(params, x + p)
            try:
                trial_out, trial_loss = self._evaluate(closure, group, state)
            except BaseException:  # the closure failed: leave the parameters where they were
                assign_flat(params, x)
                raise
            accepted, ratio = _gain_test(float(loss), float(trial_loss), predicted, torch.finfo(x.dtype).eps)
            if accepted:
                self._carried = (closure, _fingerprint(params), trial_out, trial_loss)
                if ratio is not None:
                    state["damping_multiplier"] *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
                    state["damping_growth"] = 2.0
                break
            assign_flat(params, x)
            trial_loss = loss
            self._raise_damping(state, g)
            state["reuse_left"] = 0
            if trials == group["max_trials"]:
                break
            if reuse:  # a stale model failed: rebuild it here before the next trial
                loss, g, C = self._linearize(closure, params, group, state, with_curvature=True)
                reuse = False
            else:
                C = state["curvature"]
            self._factorize(state, C, g, group)
        state.update(step=state["step"] + 1, accepted=accepted, gain_ratio=ratio, trials=trials,
                     loss=float(trial_loss))
        return loss

    # ------------------------------------------------------------------ parts

    _carried: tuple | None = None  # (closure, parameter fingerprint, output with graph, loss)

    def _carried_output(self, closure: Callable[[], torch.Tensor], params: list[torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The last accepted trial's (output, loss) if it was made by this closure at these very
        parameters (nothing wrote to them since), else None."""
        if self._carried is None:
            return None
        previous, fingerprint, out, loss = self._carried
        if previous is not closure or fingerprint != _fingerprint(params):
            return None
        return out, loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._carried = None
        super().load_state_dict(state_dict)

    def _evaluate(self, closure: Callable[[], torch.Tensor], group: dict[str, Any],
                  state: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the closure's checked output with its graph, the loss detached)."""
        with torch.enable_grad():
            out = _checked_output(closure(), group["curvature"] == "gauss-newton")
        state["closure_evaluations"] += 1
        loss = 0.5 * out.detach().square().sum() if group["curvature"] == "gauss-newton" else out.detach().reshape(())
        return out, loss

    def _linearize(self, closure: Callable[[], torch.Tensor], params: list[torch.Tensor], group: dict[str, Any],
                   state: dict[str, Any], *, with_curvature: bool,
                   carried: tuple[torch.Tensor, torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(loss, g, C or None) at the current parameters, all finite or an error; ``carried`` is
        the closure's (output, loss) there when already evaluated."""
        out, loss = carried if carried is not None else self._evaluate(closure, group, state)
        gauss_newton = group["curvature"] == "gauss-newton"
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"the closure returned a non-finite loss ({float(loss)}) at the current parameters; "
                               "NewtonRaphson left the parameters and its damping unchanged")
        if not out.requires_grad:
            raise RuntimeError("the closure's output has no autograd graph: evaluate it with gradients enabled and "
                               "do not detach it (NewtonRaphson differentiates it twice)")
        dtype = params[0].dtype
        C = None
        with torch.enable_grad():
            if with_curvature and gauss_newton:
                J = jacobian(out, params, vectorize=group["vectorize"]).to(dtype)
                g, C = J.T @ out.detach().reshape(-1).to(dtype), J.T @ J
            elif with_curvature:
                g, C = hessian(out.reshape(()), params, vectorize=group["vectorize"])
                g, C = g.to(dtype), C.to(dtype)
            elif gauss_newton:
                g = gradient(out, params, grad_output=out.detach()).to(dtype)
            else:
                g = gradient(out.reshape(()), params).to(dtype)
        if with_curvature:
            state["curvature_evaluations"] += 1
        if not (bool(torch.isfinite(g).all()) and (C is None or bool(torch.isfinite(C).all()))):
            raise FloatingPointError("non-finite gradient or curvature at the current parameters (the loss is finite); "
                               "NewtonRaphson left the parameters and its damping unchanged")
        return loss, g, C

    def _factorize(self, state: dict[str, Any], C: torch.Tensor, g: torch.Tensor, group: dict[str, Any]) -> None:
        """Cholesky factor of C + λI with λ = μ‖g‖, raised until C + λI is positive definite."""
        scale = float(C.diagonal().abs().max()) if C.numel() else 0.0
        state["damping_scale"] = scale if scale > 0.0 else 1.0
        gradient_norm = float(g.norm())
        if state["damping_multiplier"] is None:
            state["damping_multiplier"] = group["damping"] * state["damping_scale"] / max(gradient_norm, _TINY)
        requested = state["damping_multiplier"] * gradient_norm
        as_batch = lambda value: torch.tensor([value], dtype=C.dtype, device=C.device)
        factor, shift = shifted_cholesky(C[None], initial=as_batch(requested), max_tries=_MAX_SHIFTS - 1,
                                         floor=as_batch(self._bootstrap(state, group)))
        if not bool(factor.ok.all()):
            raise RuntimeError("no damping made the curvature positive definite")
        damping = float(shift[0])
        if damping != requested and gradient_norm > 0.0:
            state["damping_multiplier"] = damping / gradient_norm
        state.update(damping=damping, curvature=C, cholesky=factor.L[0], reuse_left=group["lazy"] - 1)

    def _raise_damping(self, state: dict[str, Any], g: torch.Tensor) -> None:
        """Nielsen's increase after a rejected step: μ ← μν, ν ← 2ν (from μ = 0: a first μ)."""
        gradient_norm = max(float(g.norm()), _TINY)
        if state["damping_multiplier"] > 0.0:
            state["damping_multiplier"] *= state["damping_growth"]
        else:
            state["damping_multiplier"] = self._bootstrap(state, self.param_groups[0]) / gradient_norm
        state["damping_growth"] *= 2.0
        state["damping"] = state["damping_multiplier"] * gradient_norm

    @staticmethod
    def _bootstrap(state: dict[str, Any], group: dict[str, Any]) -> float:
        """The smallest λ worth trying: τ·max|Cᵢᵢ| (τ = 1e-3 when the user asked for no damping)."""
        return (group["damping"] or 1e-3) * state["damping_scale"]


def _fingerprint(params: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(storage address, version counter) of each parameter: any in-place write or reassignment
    of ``.data`` changes it."""
    return [(p.data_ptr(), p._version) for p in params]


def _gain_test(loss: float, trial_loss: float, predicted: float, eps: float) -> tuple[bool, float | None]:
    """(accepted, ρ) of a trial step; ρ is None when the predicted decrease is below the rounding
    error of f, where the step is accepted unless f rose by more than that error."""
    noise = _ROUNDING * eps * abs(loss)
    if not math.isfinite(trial_loss):
        return False, None
    if predicted <= noise:
        return trial_loss <= loss + noise, None
    ratio = (loss - trial_loss) / predicted
    return ratio > 0.0, ratio


def _checked_output(out: Any, gauss_newton: bool) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        what = "the residuals" if gauss_newton else "the loss"
        raise TypeError(f"closure must return {what} as a torch.Tensor, got {type(out).__name__}")
    if not out.is_floating_point():
        raise TypeError(f"closure must return a floating-point tensor, got dtype {out.dtype}")
    if gauss_newton and out.numel() == 0:
        raise ValueError("closure returned an empty residual tensor")
    if not gauss_newton and out.numel() != 1:
        raise ValueError(f"closure must return a scalar loss for curvature='hessian', got shape {tuple(out.shape)}; "
                         "to fit residuals r with the Gauss-Newton matrix, return r with curvature='gauss-newton'")
    return out
