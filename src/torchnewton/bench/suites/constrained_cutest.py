"""Constrained CUTEst (S2MPJ) problems: torchnewton against scipy SLSQP / trust-constr and Ipopt.

Every solver runs from S2MPJ's x0 with the problem's analytic derivatives and is judged at the x
it returns by one KKT checker (:mod:`.constrained_kkt`: scaled optimality and violation ≤ 1e-6,
least-squares multipliers).  Quick mode runs :data:`QUICK_PROBLEMS`, a fixed subset of 15
equality-constrained problems of the paper's list; full mode runs the paper's list, every
Hock–Schittkowski problem and every bound- or linearly-constrained problem with n ≤ 50
(:mod:`..problems.s2mpj_constrained`), each run capped at :data:`TIME_CAP_SECONDS` (quick: :data:`QUICK_TIME_CAP_SECONDS`).

torchnewton entries: the paper's SQP (``tn:sqp``) and its variants (:data:`.constrained_solvers.TN_VARIANTS`:
ℓ₁ merit, damped BFGS Hessian, both); quick mode runs ``tn:sqp`` and the cheapest variant on the quick
set, full mode all of them. The goal is judged for every torchnewton entry separately (:func:`goal_check`)
and the report names the best.
"""
from __future__ import annotations

import statistics
from typing import Any

from ..performance_profile import plot_profile
from ..problems import s2mpj_constrained
from ..suite import BenchContext, markdown_table
from .constrained_solvers import COUNTS, SOLVERS, run_solver

QUICK_PROBLEMS = ("HS6", "HS7", "HS26", "HS27", "HS28", "HS39", "HS40", "HS42", "HS47", "HS56", "HS77", "HS79",
                  "BT4", "BT11", "MWRIGHT")
QUICK_SOLVERS = ("tn:sqp", "tn:sqp (damped BFGS, ℓ1 merit)", "scipy:SLSQP", "scipy:trust-constr", "ipopt:exact",
                 "ipopt:lbfgs")
TIME_CAP_SECONDS = 30.0
QUICK_TIME_CAP_SECONDS = 5.0  # every quick run that succeeds takes under 1.5 s here
MAX_ITER = 500


def problem_names(quick: bool) -> list[str]:
    """The problems a mode runs, paper list first."""
    if quick:
        return list(QUICK_PROBLEMS)
    names = s2mpj_constrained.list_problems("paper")
    for which in ("hock_schittkowski", "bound_linear"):
        names += [n for n in s2mpj_constrained.list_problems(which) if n not in names]
    return names


def evaluations(record: dict[str, Any]) -> float:
    """Every counted call: values, gradients and Hessians of f and of c."""
    return sum(record[k] for k in COUNTS)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(results: dict[str, dict[str, dict[str, Any]]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per solver: solved count, medians over its solved problems and over the problems all solve."""
    everyone = [n for n in names if all(runs[n]["success"] for runs in results.values())]
    summary = {}
    for solver, runs in results.items():
        ok = [runs[n] for n in names if runs[n]["success"]]
        summary[solver] = {
            "solved": len(ok), "attempted": len(names),
            "median_nfev": _median([r["nfev"] for r in ok]),
            "median_evaluations": _median([evaluations(r) for r in ok]),
            "median_evaluations_all_solved": _median([evaluations(runs[n]) for n in everyone]),
            "median_ms": _median([1e3 * r["seconds"] for r in ok]),
            "median_ms_all_solved": _median([1e3 * runs[n]["seconds"] for n in everyone]),
            "solved_by_all": len(everyone),
            "total_seconds": sum(runs[n]["seconds"] for n in names),
        }
    return summary


def goal_check(results: dict[str, dict[str, dict[str, Any]]], names: list[str], entry: str,
               peers: list[str]) -> dict[str, Any]:
    """The goal for one torchnewton entry: solved ≥ the best peer's, and median evaluations below
    each scipy method's on the problems the entry and every peer solve (one set for all medians)."""
    common = [n for n in names if results[entry][n]["success"] and all(results[p][n]["success"] for p in peers)]
    mine = _median([evaluations(results[entry][n]) for n in common])
    scipy_medians = {p: _median([evaluations(results[p][n]) for n in common]) for p in peers if p.startswith("scipy:")}
    solved = sum(results[entry][n]["success"] for n in names)
    best_peer = max(sum(results[p][n]["success"] for n in names) for p in peers) if peers else 0
    met = (solved >= best_peer and mine is not None
           and all(m is not None and mine < m for m in scipy_medians.values()))
    return {"met": met, "solved": solved, "common": len(common), "median_evaluations": mine,
            "scipy_medians": scipy_medians}


def cutest_comparison(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    names = problem_names(ctx.quick)
    solvers = QUICK_SOLVERS if ctx.quick else SOLVERS
    time_cap = QUICK_TIME_CAP_SECONDS if ctx.quick else TIME_CAP_SECONDS
    problems, failed = s2mpj_constrained.load_problems(names)
    results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in solvers}
    for problem in ctx.track(problems, desc="constrained CUTEst"):
        for solver in solvers:  # interleaved: every solver on a problem before the next problem
            results[solver][problem.name] = run_solver(solver, problem, max_iter=MAX_ITER, time_cap=time_cap)
    loaded = [p.name for p in problems]
    return report(results, loaded, failed, quick=ctx.quick, time_cap=time_cap, ctx=ctx)


def report(results: dict[str, dict[str, dict[str, Any]]], names: list[str], failed: dict[str, str], *,
           quick: bool, time_cap: float, ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    """Summary table, goal line, per-problem table and two performance profiles."""
    solvers = list(results)
    summary = summarize(results, names)
    rows = [[s, f"{v['solved']}/{v['attempted']}", v["median_nfev"], v["median_evaluations"],
             v["median_evaluations_all_solved"], v["median_ms"], v["median_ms_all_solved"], v["total_seconds"]]
            for s, v in summary.items()]
    plots = []
    for metric, label in (("evaluations", "all calls (f, ∇f, ∇²f, c, J, Σvᵢ∇²cᵢ)"), ("seconds", "wall time")):
        costs = {s: [(evaluations(results[s][n]) if metric == "evaluations" else results[s][n]["seconds"])
                     if results[s][n]["success"] else float("inf") for n in names] for s in solvers}
        plots.append(plot_profile(costs, ctx.out_dir / f"constrained_profile_{metric}.png",
                                  title=f"constrained S2MPJ ({len(names)} problems): {label}"))
    ours = [s for s in solvers if s.startswith("tn:")]
    peers = [s for s in solvers if not s.startswith("tn:")]
    best_peer = max(peers, key=lambda s: summary[s]["solved"])
    goals = {s: goal_check(results, names, s, peers) for s in ours}
    best_tn = min(ours, key=lambda s: (not goals[s]["met"], -summary[s]["solved"],
                                      goals[s]["median_evaluations"] if goals[s]["median_evaluations"] is not None
                                      else float("inf")))
    goal = goals[best_tn]["met"]
    goal_rows = [[s, f"{summary[s]['solved']}/{summary[s]['attempted']}", g["common"], g["median_evaluations"],
                  ", ".join(f"{p} {m}" for p, m in g["scipy_medians"].items()), "met" if g["met"] else "not met"]
                 for s, g in goals.items()]
    subset = ("quick subset of 15 equality-constrained problems of the paper's list" if quick else
              "the paper's list, all Hock–Schittkowski problems and the bound/linearly constrained problems with n ≤ 50")
    detail_rows = [[n] + [f"{evaluations(results[s][n]):.0f}" if results[s][n]["success"]
                          else f"✗ {results[s][n]['message'][:40]} (opt {results[s][n]['optimality']:.1e}, "
                               f"viol {results[s][n]['violation']:.1e})" for s in solvers] for n in names]
    markdown = "\n".join([
        f"S2MPJ constrained problems, {len(names)} run ({subset}; not loadable: "
        f"{', '.join(f'{k} ({v})' for k, v in failed.items()) or 'none'}; left out for wrong S2MPJ derivatives: "
        f"{', '.join(s2mpj_constrained.WRONG_DERIVATIVES)}; missing from S2MPJ: "
        f"{', '.join(s2mpj_constrained.PAPER_MISSING)}).",
        "Solved = the returned x passes the shared KKT check (scaled optimality and violation ≤ 1e-6, "
        "least-squares multipliers with signs), whatever the solver reports; analytic derivatives for all, "
        f"each solver's own tolerance 1e-8 (SLSQP: ftol 1e-12 and stopped once the shared check accepts its "
        f"iterate, since its own test is on the change of f), at most {MAX_ITER} iterations and "
        f"{time_cap:g} s per run. Evaluations = every counted call of f, ∇f, ∇²f, c, J, Σvᵢ∇²cᵢ. "
        "tn:sqp sends problems with inequalities or bounds to torchnewton's interior-point method.",
        "",
        markdown_table(["solver", "solved", "median nfev", "median evaluations",
                        f"median evaluations on the {summary[solvers[0]]['solved_by_all']} solved by all",
                        "median ms", "median ms (solved by all)", "total s"], rows),
        "",
        "Goal, judged for each torchnewton entry: it solves at least as many as the best peer, and its median "
        "evaluations are below each scipy method's on the same problems (those this entry and every peer solve).",
        "",
        markdown_table(["torchnewton entry", "solved", "problems compared", "median evaluations",
                        "scipy medians on them", "goal"], goal_rows),
        "",
        f"Best torchnewton entry **{best_tn}** solves {summary[best_tn]['solved']}, best peer **{best_peer}** "
        f"{summary[best_peer]['solved']}. Goal: **{'met' if goal else 'not met'}**.",
        "",
        "<details><summary>Per problem: evaluations, or why the run failed</summary>",
        "",
        markdown_table(["problem"] + solvers, detail_rows),
        "",
        "</details>",
    ])
    figures = {"summary": summary, "goal_met": goal, "goal_by_entry": goals, "best_torchnewton": best_tn,
               "failed_to_load": failed,
               "per_problem": {s: {n: results[s][n] for n in names} for s in solvers}}
    return markdown, figures, plots
