"""Constrained CUTEst (S2MPJ) problems: torchnewton against scipy SLSQP / trust-constr and Ipopt.

Every solver runs from S2MPJ's x0 with the problem's analytic derivatives and is judged at the x
it ends with by one KKT checker (:mod:`.constrained_kkt`: scaled optimality and violation ≤ 1e-6,
least-squares multipliers).  Each run is made under two protocols (:data:`.constrained_solvers.PROTOCOLS`):
(A) *to the shared tolerance* — every solver cut at the first iterate the checker accepts, the
evaluations counted up to there; (B) *own tolerance* — every solver run to its own 1e-8 test
(SLSQP, whose test is on the change of f, cut as in A).  The goal and the performance profiles
are judged on A, where every solver pays for the same accuracy; B is shown beside it.  Quick mode runs :data:`QUICK_PROBLEMS`, a fixed subset of 15
equality-constrained problems of the paper's list; full mode runs the paper's list, every
Hock–Schittkowski problem and every bound- or linearly-constrained problem with n ≤ 50
(:mod:`..problems.s2mpj_constrained`), each run capped at :data:`TIME_CAP_SECONDS` (quick: :data:`QUICK_TIME_CAP_SECONDS`).

torchnewton entries: the paper's SQP (``tn:sqp``) and its variants (:data:`.constrained_solvers.TN_VARIANTS`:
ℓ₁ merit, damped BFGS Hessian, both); quick mode runs ``tn:sqp`` and the cheapest variant on the quick
set, full mode all of them. The goal is judged for every torchnewton entry separately (:func:`goal_check`)
and the report names the best.
"""
from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from ..performance_profile import plot_profile
from ..problems import s2mpj_constrained
from ..suite import BenchContext, markdown_table
from .constrained_runs import RunCache, cached_results, code_version, fill, run_problem
from .constrained_solvers import COUNTS, PROTOCOLS, SOLVERS

QUICK_PROBLEMS = ("HS6", "HS7", "HS26", "HS27", "HS28", "HS39", "HS40", "HS42", "HS47", "HS56", "HS77", "HS79",
                  "BT4", "BT11", "MWRIGHT")
QUICK_SOLVERS = ("tn:sqp", "tn:sqp (damped BFGS, ℓ1 merit)", "scipy:SLSQP", "scipy:trust-constr", "ipopt:exact",
                 "ipopt:lbfgs")
TIME_CAP_SECONDS = 30.0
QUICK_TIME_CAP_SECONDS = 5.0  # every quick run that succeeds takes under 1.5 s here
MAX_ITER = 500
PROTOCOL_NAMES = {"shared": "A: to the shared tolerance", "own": "B: own tolerance"}
CACHE_ENV = "TORCHNEWTON_CONSTRAINED_CACHE"
"""Full mode appends every run to the JSON-lines file this environment variable names (default
``constrained_cutest_runs.jsonl`` in the output folder) and skips the runs already there
(:mod:`.constrained_runs`); quick mode keeps no cache."""


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


def cache_path(ctx: BenchContext) -> Path:
    """Where full mode keeps its runs: ``$TORCHNEWTON_CONSTRAINED_CACHE`` or the output folder."""
    return Path(os.environ.get(CACHE_ENV) or ctx.out_dir / "constrained_cutest_runs.jsonl")


def cutest_comparison(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    names = problem_names(ctx.quick)
    if not ctx.quick:  # resumable: every run goes to the cache as it finishes, the report is built from it
        cache = RunCache(cache_path(ctx), {"time_cap": TIME_CAP_SECONDS, "max_iter": MAX_ITER,
                                           "code": code_version()})
        fill(cache, names, SOLVERS, max_iter=MAX_ITER, time_cap=TIME_CAP_SECONDS, log=lambda line: None)
        return cached_report(cache, names, ctx)
    problems, failed = s2mpj_constrained.load_problems(names)
    results: dict[str, dict[str, dict[str, dict[str, Any]]]] = {p: {s: {} for s in QUICK_SOLVERS} for p in PROTOCOLS}
    for problem in ctx.track(problems, desc="constrained CUTEst"):
        # interleaved: every solver and protocol on a problem before the next problem
        runs = run_problem(problem, QUICK_SOLVERS, max_iter=MAX_ITER, time_cap=QUICK_TIME_CAP_SECONDS)
        for protocol in PROTOCOLS:
            for solver in QUICK_SOLVERS:
                results[protocol][solver][problem.name] = runs[protocol][solver]
    loaded = [p.name for p in problems]
    return report(results, loaded, failed, quick=ctx.quick, time_cap=QUICK_TIME_CAP_SECONDS, ctx=ctx)


def cached_report(caches: RunCache | list[RunCache], names: list[str],
                  ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    """The full report from the runs in ``caches`` (see :func:`.constrained_runs.cached_results`):
    over the problems whose every run is there, naming those not (completely) run and those run
    under a time cap other than the first cache's."""
    caches = [caches] if isinstance(caches, RunCache) else list(caches)
    results, done, missing = cached_results(caches, names, SOLVERS)
    unloadable = {k: v for cache in caches for k, v in cache.unloadable.items()}
    time_cap = caches[0].settings["time_cap"]
    markdown, figures, plots = report(results, done, unloadable, quick=False, time_cap=time_cap, ctx=ctx,
                                      not_run=missing)
    caps = {n: results["shared"][SOLVERS[0]][n]["time_cap"] for n in done}
    other = {cap: [n for n in done if caps[n] == cap] for cap in sorted(set(caps.values()) - {time_cap})}
    if other:
        markdown += "\n\n" + " ".join(
            f"**Time cap {cap:g} s** (not {time_cap:g} s) on these {len(group)} problems, every solver alike, "
            f"to finish the list in the time available: {', '.join(group)}." for cap, group in other.items())
    reused = sorted({n for n in done if results["shared"]["tn:interior-point"][n].get("same_run_as")})
    if reused:
        markdown += (f"\n\nOn {len(reused)} problems that are not equality-constrained, every torchnewton entry is "
                     "torchnewton's interior-point method with its defaults (the SQP variants' options apply to "
                     "equality-constrained problems only), so the other entries there are copies of tn:sqp's run "
                     "(`same_run_as` in the records), not repeated runs: "
                     f"{', '.join(reused)}.")
    hard = sorted({n for n in done for s in SOLVERS for p in PROTOCOLS
                   if "hard" in results[p][s][n]["message"] or "TimeCapReached" in results[p][s][n]["message"]})
    if hard:
        markdown += ("\n\nA run that spent more than 3 caps + 10 s of wall time without an evaluation call (or "
                     f"in the final check) was stopped by an alarm and counts as a time cap failure, on: {', '.join(hard)}.")
    figures["time_cap_by_problem"] = caps
    # runs made (copies of another run and SLSQP's reused B run not counted twice), on the problems reported
    made = [(s, results[p][s][n]) for p in PROTOCOLS for s in SOLVERS for n in done
            if not results[p][s][n].get("same_run_as") and not (s == "scipy:SLSQP" and p == "own")
            and results[p][s][n]["seconds"] == results[p][s][n]["seconds"]]  # NaN: a run with no time
    figures["run_seconds"] = sum(r["seconds"] + r["check_seconds"] for _, r in made)
    figures["seconds_by_family"] = {family: sum(r["seconds"] for s, r in made if s.split(":")[0] == family)
                                    for family in ("tn", "scipy", "ipopt")}
    return markdown, figures, plots


def _cell(record: dict[str, Any]) -> str:
    if record["success"]:
        return f"{evaluations(record):.0f}"
    return f"✗ {record['message'][:40]} (opt {record['optimality']:.1e}, viol {record['violation']:.1e})"


def report(results: dict[str, dict[str, dict[str, dict[str, Any]]]], names: list[str], failed: dict[str, str], *,
           quick: bool, time_cap: float, ctx: BenchContext,
           not_run: list[str] | None = None) -> tuple[str, dict[str, Any], list]:
    """Summary table of both protocols, goal lines (judged on A), per-problem table, and two
    performance profiles of A.  ``results[protocol][solver][problem]`` is a
    :func:`.constrained_solvers.run_solver` record; ``not_run`` names the problems of the list
    left out because their runs are not (all) done."""
    shared, own = results["shared"], results["own"]
    solvers = list(shared)
    summaries = {p: summarize(results[p], names) for p in PROTOCOLS}
    rows = [[s] + [cell for p in PROTOCOLS for cell in (
        f"{summaries[p][s]['solved']}/{summaries[p][s]['attempted']}", summaries[p][s]["median_evaluations"],
        summaries[p][s]["median_evaluations_all_solved"], summaries[p][s]["median_ms"])] for s in solvers]
    plots = []
    for metric, label in (("evaluations", "evaluations (all calls)"), ("seconds", "wall time")):
        costs = {s: [(evaluations(shared[s][n]) if metric == "evaluations" else shared[s][n]["seconds"])
                     if shared[s][n]["success"] else float("inf") for n in names] for s in solvers}
        plots.append(plot_profile(costs, ctx.out_dir / f"constrained_profile_{metric}.png",
                                  title=f"constrained S2MPJ ({len(names)} problems), A (to 1e-6): {label}"))
    ours = [s for s in solvers if s.startswith("tn:")]
    peers = [s for s in solvers if not s.startswith("tn:")]
    goals = {p: {s: goal_check(results[p], names, s, peers) for s in ours} for p in PROTOCOLS}

    def best_entry(p: str) -> str:
        return min(ours, key=lambda s: (not goals[p][s]["met"], -summaries[p][s]["solved"],
                                        goals[p][s]["median_evaluations"]
                                        if goals[p][s]["median_evaluations"] is not None else float("inf")))

    best_tn = {p: best_entry(p) for p in PROTOCOLS}
    best_peer = {p: max(peers, key=lambda s: summaries[p][s]["solved"]) for p in PROTOCOLS}
    goal_rows = [[s] + [cell for p in PROTOCOLS for cell in (
        f"{summaries[p][s]['solved']}/{summaries[p][s]['attempted']}", goals[p][s]["common"],
        goals[p][s]["median_evaluations"],
        ", ".join(f"{q} {m}" for q, m in goals[p][s]["scipy_medians"].items()),
        "met" if goals[p][s]["met"] else "not met")] for s in ours]
    subset = ("quick subset of 15 equality-constrained problems of the paper's list" if quick else
              "the paper's list, all Hock–Schittkowski problems and the bound/linearly constrained problems with n ≤ 50")
    detail_rows = [[n] + [f"{_cell(shared[s][n])} / {_cell(own[s][n])}" for s in solvers] for n in names]
    a, b = PROTOCOL_NAMES["shared"], PROTOCOL_NAMES["own"]
    verdict = {p: f"best torchnewton entry **{best_tn[p]}** solves {summaries[p][best_tn[p]]['solved']}, best peer "
                  f"**{best_peer[p]}** {summaries[p][best_peer[p]]['solved']}; goal "
                  f"**{'met' if goals[p][best_tn[p]]['met'] else 'not met'}**" for p in PROTOCOLS}
    headers = [f"{h} ({p})" for p in ("A", "B") for h in ("solved", "median evaluations",
                                                            "median evaluations, solved by all", "median ms")]
    markdown = "\n".join([
        f"S2MPJ constrained problems, {len(names)} run ({subset}; not loadable: "
        f"{', '.join(f'{k} ({v})' for k, v in failed.items()) or 'none'}; left out for wrong S2MPJ derivatives: "
        f"{', '.join(s2mpj_constrained.WRONG_DERIVATIVES)}; missing from S2MPJ: "
        f"{', '.join(s2mpj_constrained.PAPER_MISSING)}).",
        *([f"**Incomplete**: {len(not_run)} problems of the list not (completely) run, left out of every figure: "
           f"{', '.join(not_run)}."] if not_run else []),
        "Solved = the x a run ends with passes the shared KKT check (scaled optimality and violation ≤ 1e-6, "
        "least-squares multipliers with signs), whatever the solver reports; analytic derivatives for all, "
        f"at most {MAX_ITER} iterations and {time_cap:g} s per run. Evaluations = every counted call of f, ∇f, ∇²f, "
        "c, J, Σvᵢ∇²cᵢ. tn:sqp sends problems with inequalities or bounds to torchnewton's interior-point method.",
        "",
        "Two protocols, the same for every solver:",
        f"- **{a}**: after each iteration the solver hands its iterate to the shared checker (torchnewton's and "
        "scipy's `callback`, Ipopt's `intermediate` callback) and the run stops at the first iterate it accepts; "
        "that iterate is the result and the evaluations are those made up to it. This is what reaching the "
        "benchmark's 1e-6 costs each solver; the goal and the performance profiles are judged here.",
        f"- **{b}**: each solver runs until its own test with tolerance 1e-8 stops it, and its final x is judged. "
        "Solvers whose test is stricter than the shared one pay for the extra digits here. SLSQP is the exception: "
        "its own test is on the change of f, not a KKT test (ftol 1e-8 stops it short of 1e-6 optimality on a third "
        "of the paper's problems, smaller ftol runs it to its iteration limit on others), so it runs with ftol "
        "1e-12 and is stopped at the shared check under B too (its B figures are its A run).",
        "The checks' own time is excluded from every run's time. The checker sees the iterates after each "
        "iteration (Ipopt's also its starting point). Ipopt runs through `cyipopt.Problem`, posed as "
        "`minimize_ipopt` poses it, so that its callback can stop it; only the calls Ipopt itself makes are counted "
        "(not `minimize_ipopt`'s set-up calls at x0, which the figures before this protocol included).",
        "",
        markdown_table(["solver", *headers], rows),
        "",
        "Goal, judged for each torchnewton entry: it solves at least as many as the best peer, and its median "
        "evaluations are below each scipy method's on the same problems (those this entry and every peer solve).",
        "",
        markdown_table(["torchnewton entry"] + [f"{h} ({p})" for p in ("A", "B") for h in (
            "solved", "problems compared", "median evaluations", "scipy medians on them", "goal")], goal_rows),
        "",
        f"{a}: {verdict['shared']}. (For comparison, {b}: {verdict['own']}.)",
        "",
        "<details><summary>Per problem: evaluations A / B, or why the run failed</summary>",
        "",
        markdown_table(["problem"] + solvers, detail_rows),
        "",
        "</details>",
    ])
    figures = {"protocol": "shared", "summary": summaries["shared"],
               "goal_met": goals["shared"][best_tn["shared"]]["met"], "goal_by_entry": goals["shared"], "best_torchnewton": best_tn["shared"], "failed_to_load": failed,
               "per_problem": {s: {n: shared[s][n] for n in names} for s in solvers},
               **({"not_run": not_run} if not_run is not None else {}),
               "own_tolerance": {"summary": summaries["own"], "goal_met": goals["own"][best_tn["own"]]["met"],
                                 "goal_by_entry": goals["own"], "best_torchnewton": best_tn["own"],
                                 "per_problem": {s: {n: own[s][n] for n in names} for s in solvers}}}
    return markdown, figures, plots
