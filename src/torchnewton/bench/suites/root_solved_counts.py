"""Solved counts on public nonlinear-equation suites: every torchnewton root method against scipy.

Problems (:mod:`..problems.equations`): every S2MPJ square nonlinear system with n ≤ 100 (the
``…NE`` systems and the other type-N square problems without bounds) and the Moré–Garbow–
Hillstrom square systems with a zero residual, each from its standard start. Quick mode runs
the fixed subset :data:`QUICK_PROBLEMS`; full mode runs all.

Solvers: each method of ``torchnewton.root`` (whatever ``METHODS`` holds when the bench runs:
``auto`` is included once it exists) and scipy's ``hybr``, ``lm``, ``krylov``, ``broyden1``
(settings in :mod:`..peers.root_runs`). Counterparts: dogleg ↔ hybr (Powell's hybrid),
levenberg-marquardt ↔ lm, newton-krylov ↔ krylov, broyden ↔ broyden1. Every run is judged by
one checker, ‖F(x)‖∞ ≤ TOL on the returned x in float64, not by the solver's own flag.
Budgets (:func:`iteration_budget`): dogleg and levenberg-marquardt, whose iterations are trial
points, get MINPACK's 100·(n + 1) — the evaluations scipy's hybr and lm get with a Jacobian —
``auto`` its per-method defaults (the same for its dogleg try), every other method ``MAX_ITER``
iterations, as scipy's krylov and broyden1 get ``maxiter = MAX_ITER``. The S2MPJ problems pass their own Jacobian as ``jac=``
(scipy's hybr and lm get it too), the MGH problems use autodiff (scipy gets the same autodiff
Jacobian). Cost for the performance profile = F evaluations + Jacobian evaluations (or JVPs).
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ...solvers.residual.root import METHODS
from ..peers.root_runs import SCIPY_METHODS, RootRun, run_scipy, run_torchnewton
from ..performance_profile import plot_profile
from ..problems.equations import S2MPJ_LEFT_OUT, EquationProblem, mgh_equations, s2mpj_equation, s2mpj_equations
from ..suite import BenchContext, markdown_table

TOL = 1e-8
MAX_ITER = 200
PAIRS = {"dogleg": "hybr", "levenberg-marquardt": "lm", "newton-krylov": "krylov", "broyden": "broyden1"}
QUICK_S2MPJ = ("CLUSTER", "CUBENE", "GOTTFR", "HELIXNE")
QUICK_MGH = ("rosenbrock", "freudenstein_roth", "powell_badly_scaled", "helical_valley", "trigonometric_10")
QUICK_PROBLEMS = QUICK_S2MPJ + tuple(f"MGH:{name}" for name in QUICK_MGH)
"""The quick subset: cheap problems on which some solvers fail (Freudenstein–Roth, trigonometric)."""


def load(quick: bool) -> tuple[list[EquationProblem], dict[str, str]]:
    """The problems of the run, and those that failed to load (with why)."""
    mgh = mgh_equations()
    if quick:
        return [s2mpj_equation(name) for name in QUICK_S2MPJ] + [p for p in mgh if p.name in QUICK_PROBLEMS], {}
    s2mpj, failed = s2mpj_equations(max_n=100)
    return s2mpj + mgh, failed


def iteration_budget(method: str, n: int) -> int | None:
    """torchnewton's ``max_iter`` for ``method`` on an n-variable system (see the module docstring)."""
    if method in ("dogleg", "levenberg-marquardt"):
        return 100 * (n + 1)
    return None if method == "auto" else MAX_ITER


def solver_names() -> list[str]:
    return [f"tn:{m}" for m in METHODS] + [f"scipy:{m}" for m in SCIPY_METHODS]


def solve_all(ctx: BenchContext, problems: list[EquationProblem]) -> dict[str, dict[str, RootRun]]:
    """runs[solver][problem]: each problem by every solver, the solvers interleaved per problem."""
    cap = 20.0 if ctx.quick else 60.0
    runs: dict[str, dict[str, RootRun]] = {name: {} for name in solver_names()}
    for problem in ctx.track(problems, desc="root solved counts"):
        for method in METHODS:
            runs[f"tn:{method}"][problem.name] = run_torchnewton(problem, method, tol=TOL,
                                                                 max_iter=iteration_budget(method, problem.n),
                                                                 time_cap=cap)
        for method in SCIPY_METHODS:
            runs[f"scipy:{method}"][problem.name] = run_scipy(problem, method, tol=TOL, max_iter=MAX_ITER,
                                                              time_cap=cap)
    return runs


def solved_counts(ctx: BenchContext) -> tuple[str, dict[str, Any], list[Path]]:
    problems, failed = load(ctx.quick)
    runs = solve_all(ctx, problems)
    names = [p.name for p in problems]
    counts = {s: sum(r.solved for r in runs[s].values()) for s in runs}
    rows = []
    for solver, by_problem in runs.items():
        done = [r for r in by_problem.values() if r.solved]
        by_source = {src: sum(r.solved for p, r in zip(problems, by_problem.values()) if p.source == src)
                     for src in ("S2MPJ", "MGH")}
        rows.append([solver, f"{counts[solver]}/{len(names)}", by_source["S2MPJ"], by_source["MGH"],
                     _median([r.nfev for r in done]), _median([r.njev for r in done]),
                     sum(r.seconds for r in by_problem.values())])
    pair_rows, gaps, misses = [], [], []
    for ours, theirs in PAIRS.items():
        a, b = runs[f"tn:{ours}"], runs[f"scipy:{theirs}"]
        both = [n for n in names if a[n].solved and b[n].solved]
        only_scipy = [n for n in names if b[n].solved and not a[n].solved]
        only_ours = [n for n in names if a[n].solved and not b[n].solved]
        pair_rows.append([f"tn:{ours} vs scipy:{theirs}", counts[f"tn:{ours}"], counts[f"scipy:{theirs}"],
                          len(both), _median([a[n].evaluations for n in both]),
                          _median([b[n].evaluations for n in both]),
                          ", ".join(only_ours) or "—", ", ".join(only_scipy) or "—"])
        if counts[f"tn:{ours}"] < counts[f"scipy:{theirs}"]:
            gaps.append(f"`tn:{ours}` solves {counts[f'tn:{ours}']}, `scipy:{theirs}` {counts[f'scipy:{theirs}']}")
        if only_scipy:
            misses.append(f"`scipy:{theirs}` but not `tn:{ours}`: {', '.join(only_scipy)}")
    ours_best = max((s for s in counts if s.startswith("tn:")), key=counts.get)
    scipy_best = max((s for s in counts if s.startswith("scipy:")), key=counts.get)
    any_ours = [n for n in names if any(runs[s][n].solved for s in runs if s.startswith("tn:"))]
    any_scipy = [n for n in names if any(runs[s][n].solved for s in runs if s.startswith("scipy:"))]
    no_one = [n for n in names if n not in any_ours and n not in any_scipy]
    costs = {s: [runs[s][n].evaluations if runs[s][n].solved else float("inf") for n in names] for s in runs}
    plot = plot_profile(costs, ctx.out_dir / "root_solved_counts_profile.png",
                        title=f"Root solvers on {len(names)} equation problems (cost: F + J evaluations)")
    mode = "the quick subset" if ctx.quick else "every problem"
    text = [
        f"{mode.capitalize()}: {len(names)} square systems ({sum(p.source == 'S2MPJ' for p in problems)} S2MPJ with "
        f"n ≤ 100, {sum(p.source == 'MGH' for p in problems)} MGH), standard starts. Solved = ‖F(x)‖∞ ≤ {TOL:g} on "
        f"the returned x (one float64 checker for every solver). torchnewton: `max_iter` 100·(n+1) for dogleg and levenberg-marquardt (MINPACK's budget, as hybr and lm get), the per-method defaults for auto, {MAX_ITER} for the others (scipy's krylov and broyden1 get `maxiter={MAX_ITER}`). Medians over "
        "the problems each solver solved; pair medians over the problems both solved. Cost in the profile: F "
        "evaluations + Jacobian evaluations (torchnewton's newton-krylov: JVPs; scipy's krylov forms its JVPs "
        "from F evaluations).",
        "",
        markdown_table(["solver", "solved", "S2MPJ", "MGH", "median F evals", "median J evals/JVPs",
                        "total time (s)"], rows),
        "",
        markdown_table(["pair", "tn solved", "scipy solved", "both", "median cost tn", "median cost scipy",
                        "tn only", "scipy only"], pair_rows),
        "",
        f"Best torchnewton method: `{ours_best}` ({counts[ours_best]}); best scipy method: `{scipy_best}` "
        f"({counts[scipy_best]}). Solved by some torchnewton method: {len(any_ours)}; by some scipy method: "
        f"{len(any_scipy)}; by none: {', '.join(no_one) or '—'}.",
        "",
        "Goal (issue 17): every torchnewton method ≥ its scipy counterpart and best ≥ best. "
        + ("Met on this run." if not gaps and counts[ours_best] >= counts[scipy_best] else
           "Not met: " + "; ".join(gaps + ([f"best {counts[ours_best]} < {counts[scipy_best]}"]
                                            if counts[ours_best] < counts[scipy_best] else [])) + "."),
        "",
        "Problems a scipy method solves and its torchnewton counterpart does not (a stricter test than the "
        "goal's counts): " + ("; ".join(misses) if misses else "none") + ".",
        "",
        "<details><summary>Per problem (✓ solved; otherwise the solver's own verdict and ‖F(x)‖∞)</summary>",
        "",
        markdown_table(["problem", "n"] + list(runs), [[p.name, p.n] + [_cell(runs[s][p.name]) for s in runs]
                                                        for p in problems]),
        "",
        "</details>",
        "",
        "Left out of S2MPJ: " + "; ".join(S2MPJ_LEFT_OUT.values())
        + (". Failed to load: " + ", ".join(f"{k} ({v})" for k, v in failed.items()) if failed else "") + ".",
    ]
    figures = {"goal_met": not gaps and counts[ours_best] >= counts[scipy_best],
               "tol": TOL, "max_iter": MAX_ITER, "problems": names, "counts": counts,
               "runs": {s: [r.as_dict() for r in by.values()] for s, by in runs.items()}, "failed_to_load": failed}
    return "\n".join(text), figures, [plot]


def _median(values: list[float]) -> float | str:
    return float(statistics.median(values)) if values else "—"


def _cell(run: RootRun) -> str:
    return "✓" if run.solved else f"{run.status.lower().replace('_', ' ')} ({run.residual:.1e})"
