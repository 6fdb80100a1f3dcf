"""scipy.optimize.minimize as a peer: counted calls, and the shared stopping rule via a callback.

scipy's methods stop on different internal tests (‖g‖₂ for the trust-region methods, a step
test for Newton-CG); for a like-for-like comparison their own tolerances are set tight and a
callback stops them (StopIteration, scipy ≥ 1.11) as soon as ‖∇f‖∞ ≤ tol·max(1, |f|), the rule
torchnewton uses. Success is then judged by that rule at the returned point.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize as scipy_minimize

NumpyFunction = Callable[..., np.ndarray]
# scipy method -> which second-order callable it takes
SECOND_ORDER = {"trust-exact": "hess", "trust-ncg": "hessp", "Newton-CG": "hessp", "BFGS": None}


@dataclass
class PeerRun:
    success: bool
    fun: float
    grad_inf: float
    nit: int
    nfev: int
    njev: int
    nhev: int
    seconds: float
    x: np.ndarray


def converged(f: float, g: np.ndarray, tol: float) -> bool:
    return bool(np.isfinite(f) and np.all(np.isfinite(g)) and np.max(np.abs(g)) <= tol * max(1.0, abs(f)))


def run_scipy(method: str, fun: NumpyFunction, grad: NumpyFunction, hess: NumpyFunction, hessp: NumpyFunction,
              x0: np.ndarray, *, tol: float, max_iter: int) -> PeerRun:
    counts = {"f": 0, "g": 0, "h": 0}

    def counted(key: str, fn: NumpyFunction) -> NumpyFunction:
        def call(*a):
            counts[key] += 1
            return fn(*a)
        return call

    def stop(intermediate_result):  # scipy passes the OptimizeResult only under this name
        # the harness's own check: not counted as an evaluation of the method
        x = intermediate_result.x
        if converged(float(fun(x)), grad(x), tol):
            raise StopIteration

    kwargs = {"jac": counted("g", grad), "callback": stop, "options": {"maxiter": max_iter}}
    second = SECOND_ORDER[method]
    if second == "hess":
        kwargs["hess"] = counted("h", hess)
    elif second == "hessp":
        kwargs["hessp"] = counted("h", hessp)
    if method in ("trust-exact", "trust-ncg", "BFGS"):
        kwargs["options"]["gtol"] = 1e-14
    else:
        kwargs["options"]["xtol"] = 1e-14
    start = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            res = scipy_minimize(counted("f", fun), x0, method=method, **kwargs)
            x, nit = res.x, int(res.nit)
        except (ValueError, np.linalg.LinAlgError, OverflowError, FloatingPointError):
            x, nit = x0, max_iter
    seconds = time.perf_counter() - start
    f, g = float(fun(x)), grad(x)
    return PeerRun(success=converged(f, g, tol), fun=f, grad_inf=float(np.max(np.abs(g))), nit=nit,
                   nfev=counts["f"], njev=counts["g"], nhev=counts["h"], seconds=seconds, x=x)
