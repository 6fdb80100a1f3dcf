"""CUTEst (S2MPJ) unconstrained problems: torchnewton.minimize against scipy.optimize.minimize.

Every solver gets the problem's own derivatives (``jac=``, ``hess=`` or ``hessp=``), the same
stopping rule ‖∇f‖∞ ≤ 10⁻⁶·max(1, |f|) and the same iteration budget. Quick mode runs every
twelfth problem with n ≤ 10 (a fixed, alphabetical-stride subset of 15 problems); full mode
runs all problems with n ≤ 100 whose S2MPJ Hessian is exact.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from ...solvers.minimize import minimize
from ..peers.scipy_minimize import SECOND_ORDER, converged, run_scipy
from ..performance_profile import plot_profile
from ..problems import s2mpj
from ..suite import BenchContext, markdown_table

TOL = 1e-6
OURS = {"trust-exact": "hess", "newton": "hess", "cubic": "hess", "trust-ncg": "hessp", "newton-cg": "hessp",
        "bfgs": None}
# Quick mode leaves out the Newton-CG pair: both hit the iteration cap on the slowest pure-Python
# S2MPJ problems, which alone took minutes; full mode runs every method.
QUICK_OURS = ("trust-exact", "newton", "cubic")
QUICK_SCIPY = ("trust-exact", "trust-ncg", "BFGS")


def _problem_names(quick: bool) -> list[str]:
    if quick:
        return s2mpj.list_problems("unconstrained", max_n=10)[::12]
    return s2mpj.list_problems("unconstrained", max_n=100)


def _run_ours(method: str, problem: Any, max_iter: int) -> dict[str, Any]:
    second = OURS[method]
    kwargs = {second: {"hess": problem.hessian, "hessp": problem.hessp}[second]} if second else {}
    start = time.perf_counter()
    try:
        res = minimize(problem.objective, problem.x0.clone(), method=method, jac=problem.gradient, tol=TOL,
                       max_iter=max_iter, **kwargs)
        x = res.x.numpy()
        counts = (res.nfev, res.njev, res.nhev)
    except (ValueError, RuntimeError, OverflowError) as error:  # problem code failing at a wild iterate
        x, counts = problem.x0.numpy(), (0, 0, 0)
        print(f"{problem.name} {method}: {type(error).__name__}")
    seconds = time.perf_counter() - start
    f, g = problem.objective_np(x), problem.gradient_np(x)
    return {"success": converged(f, g, TOL), "fun": f, "nfev": counts[0], "njev": counts[1], "nhev": counts[2],
            "seconds": seconds}


def _run_scipy(method: str, problem: Any, max_iter: int) -> dict[str, Any]:
    run = run_scipy(method, problem.objective_np, problem.gradient_np, problem.hessian_np, problem.hessp_np,
                    problem.x0.numpy(), tol=TOL, max_iter=max_iter)
    return {"success": run.success, "fun": run.fun, "nfev": run.nfev, "njev": run.njev, "nhev": run.nhev,
            "seconds": run.seconds}


def cutest_comparison(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    max_iter = 300 if ctx.quick else 1000
    names = _problem_names(ctx.quick)
    ours = QUICK_OURS if ctx.quick else tuple(OURS)
    peers = QUICK_SCIPY if ctx.quick else tuple(SECOND_ORDER)
    solvers = [f"tn:{m}" for m in ours] + [f"scipy:{m}" for m in peers]
    results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in solvers}
    skipped: dict[str, str] = {}
    for name in ctx.track(names, desc="CUTEst minimize"):
        try:
            problem = s2mpj.load_problem(name, "unconstrained")
            if not problem.hessian_exact or not np.isfinite(problem.objective_np(problem.x0.numpy())):
                skipped[name] = "inexact S2MPJ Hessian" if not problem.hessian_exact else "not finite at x0"
                continue
        except Exception as error:  # noqa: BLE001 - third-party problem code
            skipped[name] = f"{type(error).__name__}"
            continue
        for method in ours:
            results[f"tn:{method}"][name] = _run_ours(method, problem, max_iter)
        for method in peers:
            results[f"scipy:{method}"][name] = _run_scipy(method, problem, max_iter)
    solved_names = [n for n in names if n in results[solvers[0]]]
    rows, summary = [], {}
    for s in solvers:
        runs = [results[s][n] for n in solved_names]
        ok = [r for r in runs if r["success"]]
        summary[s] = {"solved": len(ok), "attempted": len(runs),
                      "median_nfev": statistics.median([r["nfev"] for r in ok]) if ok else None,
                      "median_njev": statistics.median([r["njev"] for r in ok]) if ok else None,
                      "median_nhev": statistics.median([r["nhev"] for r in ok]) if ok else None,
                      "median_evals": statistics.median([r["nfev"] + r["njev"] + r["nhev"] for r in ok]) if ok else None,
                      "median_ms": 1e3 * statistics.median([r["seconds"] for r in ok]) if ok else None}
        rows.append([s, f"{len(ok)}/{len(runs)}", summary[s]["median_nfev"], summary[s]["median_njev"],
                     summary[s]["median_nhev"], summary[s]["median_evals"], summary[s]["median_ms"]])
    best_tn = max((s for s in solvers if s.startswith("tn:")), key=lambda s: (summary[s]["solved"], -(summary[s]["median_evals"] or 0)))
    best_sp = max((s for s in solvers if s.startswith("scipy:")), key=lambda s: (summary[s]["solved"], -(summary[s]["median_evals"] or 0)))
    common = [n for n in solved_names if results[best_tn][n]["success"] and results[best_sp][n]["success"]]
    total = lambda s, n: results[s][n]["nfev"] + results[s][n]["njev"] + results[s][n]["nhev"]
    head_to_head = {
        "torchnewton": best_tn, "scipy": best_sp, "common_solved": len(common),
        "tn_median_evals_common": statistics.median([total(best_tn, n) for n in common]) if common else None,
        "scipy_median_evals_common": statistics.median([total(best_sp, n) for n in common]) if common else None,
        "tn_median_ms_common": 1e3 * statistics.median([results[best_tn][n]["seconds"] for n in common]) if common else None,
        "scipy_median_ms_common": 1e3 * statistics.median([results[best_sp][n]["seconds"] for n in common]) if common else None,
    }
    costs = {s: [total(s, n) if results[s][n]["success"] else float("inf") for n in solved_names] for s in solvers}
    plot = plot_profile(costs, ctx.out_dir / "minimize_cutest_profile.png",
                        title=f"CUTEst unconstrained ({len(solved_names)} problems): f+g+H evaluations")
    goal = (summary[best_tn]["solved"] >= summary[best_sp]["solved"]
            and head_to_head["tn_median_evals_common"] is not None
            and head_to_head["tn_median_evals_common"] < head_to_head["scipy_median_evals_common"])
    subset = ("quick subset: every twelfth problem with n ≤ 10" if ctx.quick else "all problems with n ≤ 100")
    markdown = "\n".join([
        f"CUTEst via S2MPJ, {len(solved_names)} problems ({subset}; {len(skipped)} skipped: "
        f"{', '.join(f'{k} ({v})' for k, v in skipped.items()) or 'none'}). Stopping rule ‖∇f‖∞ ≤ 1e-6·max(1, |f|), "
        f"at most {max_iter} iterations, problems' own derivatives. Medians over each solver's solved problems.",
        "",
        markdown_table(["solver", "solved", "median nfev", "median njev", "median nhev", "median f+g+H", "median ms"], rows),
        "",
        f"Best torchnewton method **{best_tn}** ({summary[best_tn]['solved']} solved) vs best scipy method "
        f"**{best_sp}** ({summary[best_sp]['solved']} solved); on the {len(common)} problems both solve, median "
        f"f+g+H evaluations {head_to_head['tn_median_evals_common']} vs {head_to_head['scipy_median_evals_common']}, "
        f"median time {head_to_head['tn_median_ms_common']:.3g} ms vs {head_to_head['scipy_median_ms_common']:.3g} ms. "
        f"Goal (solve at least as many, fewer median evaluations): **{'met' if goal else 'not met'}**.",
    ])
    figures = {"summary": summary, "head_to_head": head_to_head, "goal_met": goal, "skipped": skipped,
               "per_problem": {s: {n: results[s][n] for n in solved_names} for s in solvers}}
    return markdown, figures, [plot]
