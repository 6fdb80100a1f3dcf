"""CUTEst (S2MPJ) unconstrained problems: torchnewton.minimize against scipy.optimize.minimize.

Every solver gets the problem's own derivatives (``jac=``, ``hess=`` or ``hessp=``), the same
stopping rule ‖∇f‖∞ ≤ 10⁻⁶·max(1, |f|) and the same iteration budget. Quick mode runs every
twelfth problem with n ≤ 10 (a fixed, alphabetical-stride subset of 15 problems); full mode
runs all problems with n ≤ 100 whose S2MPJ Hessian is exact.

The full run takes hours (S2MPJ evaluates in pure Python), so every (solver, problem) result is
cached in ``minimize_cutest_runs/max_iter_<budget>/<solver>.json`` under the bench output folder as soon as it is known: a
killed run resumes where it stopped, and ``python -m torchnewton.bench.suites.minimize_cutest``
fills the cache for chosen solvers before ``torchnewton bench minimize --full`` reports it. Each
run has a wall-time cap; a run that reaches it is recorded as unsolved with the reason.
A torchnewton entry is reused only while the source files of the minimize methods are unchanged
(:data:`METHOD_SOURCES`, hashed), a scipy entry only under the same scipy version; a change in
the shared engine (loop, linear solvers) is not tracked: drop entries with ``--forget``.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import scipy
import torch

from ...solvers.objective.minimize import minimize
from ..peers.scipy_minimize import SECOND_ORDER, converged, run_scipy
from ..performance_profile import plot_profile
from ..problems import s2mpj
from ..suite import BenchContext, code_fingerprint, markdown_table

TOL = 1e-6
OURS = {"trust-exact": "hess", "newton": "hess", "cubic": "hess", "trust-ncg": "hessp", "newton-cg": "hessp",
        "bfgs": None}
# Our methods in the report. Every method costs 30-75 minutes of pure-Python S2MPJ evaluations on
# the full set, so full mode reports the two whose full runs are in the cache;
# `python -m torchnewton.bench.suites.minimize_cutest --solvers tn:<method>` runs any other into it.
# Quick mode also leaves out scipy's Newton-CG, which alone took minutes on the slowest problems.
QUICK_OURS = ("trust-exact", "newton", "cubic")
FULL_OURS = ("trust-exact", "newton")
QUICK_SCIPY = ("trust-exact", "trust-ncg", "BFGS")
TIME_CAP_SECONDS = 60.0
CACHE_FOLDER = "minimize_cutest_runs"
METHOD_SOURCES = ("solvers/objective/*.py", "solvers/loop.py", "globalize/*.py")
"""Glob patterns (under the torchnewton package) of the files whose content fingerprints a torchnewton
cache entry."""


class TimeCapReached(Exception):
    """A solver was still running when its wall-time cap passed."""


class _Clock:
    """Wraps evaluation callables so that a call after ``deadline`` raises TimeCapReached."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if time.perf_counter() > self.deadline:
                raise TimeCapReached
            return fn(*args)

        return call


def _problem_names(quick: bool) -> list[str]:
    if quick:
        return s2mpj.list_problems("unconstrained", max_n=10)[::12]
    return s2mpj.list_problems("unconstrained", max_n=100)


def solver_names(quick: bool) -> list[str]:
    """The solvers a mode compares: ``tn:<method>`` and ``scipy:<method>``."""
    ours = QUICK_OURS if quick else FULL_OURS
    peers = QUICK_SCIPY if quick else tuple(SECOND_ORDER)
    return [f"tn:{m}" for m in ours] + [f"scipy:{m}" for m in peers]


def code_version(solver: str) -> str:
    """What a cached result of ``solver`` depends on: a hash of the code of the method sources
    (their syntax trees without docstrings, so comments and documentation do not count), or
    scipy's version."""
    if solver.startswith("scipy:"):
        return f"scipy {scipy.__version__}"
    package = Path(__file__).resolve().parents[2]
    return code_fingerprint(path for pattern in METHOD_SOURCES for path in sorted(package.glob(pattern)))


def _capped_run(solver: str, problem: s2mpj.S2MPJProblem, max_iter: int, time_cap: float) -> dict[str, Any]:
    """One solver on one problem, judged by the shared rule at the point it returns."""
    family, method = solver.split(":", 1)
    clock = _Clock(time_cap)
    start = time.perf_counter()
    reason = None
    try:
        if family == "tn":
            second = OURS[method]
            kwargs = {second: clock.wrap({"hess": problem.hessian, "hessp": problem.hessp}[second])} if second else {}
            res = minimize(clock.wrap(problem.objective), problem.x0.clone(), method=method,
                           jac=clock.wrap(problem.gradient), tol=TOL, max_iter=max_iter, **kwargs)
            x, counts, nit = res.x.numpy(), (res.nfev, res.njev, res.nhev), int(res.nit)
            reason = None if res.success else res.status.name
        else:
            run = run_scipy(method, clock.wrap(problem.objective_np), clock.wrap(problem.gradient_np),
                            clock.wrap(problem.hessian_np), clock.wrap(problem.hessp_np), problem.x0.numpy(),
                            tol=TOL, max_iter=max_iter)
            x, counts, nit = run.x, (run.nfev, run.njev, run.nhev), run.nit
    except TimeCapReached:
        x, counts, nit, reason = problem.x0.numpy(), (0, 0, 0), 0, f"time cap {time_cap:g} s"
    except (ValueError, RuntimeError, OverflowError) as error:  # problem code failing at a wild iterate
        x, counts, nit, reason = problem.x0.numpy(), (0, 0, 0), 0, type(error).__name__
    seconds = time.perf_counter() - start
    f, g = problem.objective_np(x), problem.gradient_np(x)
    success = converged(f, g, TOL) and not (reason or "").startswith("time cap")
    if not success and reason is None:
        reason = "not converged" if nit < max_iter else "max_iter"
    return {"success": success, "fun": f, "grad_inf": float(np.max(np.abs(g))), "nit": nit, "nfev": counts[0],
            "njev": counts[1], "nhev": counts[2], "seconds": seconds, "reason": None if success else reason}


class RunCache:
    """Per-(solver, problem) results, one JSON file per solver, written after every new result.

    One file per solver lets several processes fill the cache for different solvers at once.
    Entries are valid only under the same settings (tolerance, iteration budget, time cap) and the
    same :func:`code_version` of their solver; others are recomputed.
    """

    def __init__(self, folder: Path, settings: dict[str, Any]):
        self.folder, self.settings = folder, settings
        folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, dict[str, Any]] = {}
        self.dropped: set[str] = set()

    def _file(self, solver: str) -> dict[str, Any]:
        if solver not in self.files:
            path = self._path(solver)
            stored = json.loads(path.read_text()) if path.exists() else {}
            fresh = stored.get("settings") == self.settings and stored.get("version") == code_version(solver)
            self.files[solver] = stored if fresh else {"settings": self.settings, "version": code_version(solver),
                                                       "runs": {}, "skipped": {}}
        return self.files[solver]

    def _path(self, solver: str) -> Path:
        return self.folder / f"{solver.replace(':', '_')}.json"

    def get(self, solver: str, name: str) -> dict[str, Any] | None:
        return self._file(solver)["runs"].get(name)

    def skipped(self, solver: str, name: str) -> str | None:
        return self._file(solver)["skipped"].get(name)

    def put(self, solver: str, name: str, result: dict[str, Any]) -> None:
        self._file(solver)["runs"][name] = result
        self.save(solver)

    def skip(self, solver: str, name: str, reason: str) -> None:
        self._file(solver)["skipped"][name] = reason
        self.save(solver)

    def forget(self, solver: str, names: Iterable[str] | None = None) -> int:
        """Drop the entries of ``solver`` (on ``names`` only, if given); returns how many."""
        runs = self._file(solver)["runs"]
        chosen = list(runs if names is None else names)
        dropped = [n for n in chosen if runs.pop(n, None) is not None]
        self.dropped.update(chosen)
        self.save(solver)
        return len(dropped)

    def save(self, solver: str) -> None:
        """Merge this process's entries into the file under a lock, so that several processes may
        run one solver on different problems (entries dropped by :meth:`forget` stay dropped)."""
        path = self._path(solver)
        mine = self.files[solver]
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            stored = json.loads(path.read_text()) if path.exists() else {}
            if stored.get("settings") == mine["settings"] and stored.get("version") == mine["version"]:
                for key in ("runs", "skipped"):
                    mine[key] = {**{n: r for n, r in stored[key].items() if n not in self.dropped}, **mine[key]}
            elif stored:  # results of other code or settings: kept beside the new file, only when writing
                os.replace(path, path.with_suffix(f".stale-{stored.get('version')}.json"))
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(mine, indent=1, sort_keys=True))
            os.replace(temporary, path)


def _cache(out_dir: Path, max_iter: int, time_cap: float) -> RunCache:
    return RunCache(out_dir / CACHE_FOLDER / f"max_iter_{max_iter}", {"tol": TOL, "max_iter": max_iter, "time_cap": time_cap})


def run_cutest(out_dir: Path, solvers: list[str], names: list[str], *, max_iter: int,
               time_cap: float = TIME_CAP_SECONDS,
               track: Callable[..., Iterable[str]] = lambda it, **kw: it) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Results {solver: {problem: record}} and skipped problems {name: reason}, from the cache where valid."""
    cache = _cache(out_dir, max_iter, time_cap)
    results: dict[str, dict[str, Any]] = {s: {} for s in solvers}
    skipped: dict[str, str] = {}
    for name in track(names, desc="CUTEst minimize"):
        known = [cache.skipped(s, name) for s in solvers if cache.skipped(s, name) is not None]
        if known:
            skipped[name] = known[0]
            continue
        missing = [s for s in solvers if cache.get(s, name) is None]
        if missing:
            try:
                problem = s2mpj.load_problem(name, "unconstrained")
                reason = ("inexact S2MPJ Hessian" if not problem.hessian_exact
                          else None if np.isfinite(problem.objective_np(problem.x0.numpy())) else "not finite at x0")
            except Exception as error:  # noqa: BLE001 - third-party problem code
                reason = type(error).__name__
            if reason is not None:
                for solver in solvers:
                    cache.skip(solver, name, reason)
                skipped[name] = reason
                continue
            for solver in missing:
                cache.put(solver, name, _capped_run(solver, problem, max_iter, time_cap))
        for solver in solvers:
            results[solver][name] = cache.get(solver, name)
    return results, skipped


def _evaluations(record: dict[str, Any]) -> int:
    return record["nfev"] + record["njev"] + record["nhev"]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(results: dict[str, dict[str, Any]], names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-solver counts and medians, and the head-to-head of the best method of each side.

    The best method of a side solves the most problems, ties broken by the lower median f+g+H
    evaluations over its own solved problems; the head-to-head compares the two on the problems
    both solve.
    """
    summary = {}
    everyone = [n for n in names if all(runs[n]["success"] for runs in results.values())]
    for s, runs in results.items():
        ok = [runs[n] for n in names if runs[n]["success"]]
        summary[s] = {"solved": len(ok), "attempted": len(names),
                      "time_capped": sum(1 for n in names if (runs[n]["reason"] or "").startswith("time cap")),
                      "median_nfev": _median([r["nfev"] for r in ok]), "median_njev": _median([r["njev"] for r in ok]),
                      "median_nhev": _median([r["nhev"] for r in ok]), "median_evals": _median([_evaluations(r) for r in ok]),
                      "median_ms": _median([1e3 * r["seconds"] for r in ok]),
                      "median_evals_all_solved": _median([_evaluations(runs[n]) for n in everyone]),
                      "solved_by_all": len(everyone),
                      "total_seconds": sum(runs[n]["seconds"] for n in names)}

    def best(prefix: str) -> str:
        return max((s for s in results if s.startswith(prefix)),
                   key=lambda s: (summary[s]["solved"], -(summary[s]["median_evals"] or 0)))

    best_tn, best_sp = best("tn:"), best("scipy:")
    common = [n for n in names if results[best_tn][n]["success"] and results[best_sp][n]["success"]]
    head_to_head = {
        "torchnewton": best_tn, "scipy": best_sp, "common_solved": len(common),
        "tn_median_evals_common": _median([_evaluations(results[best_tn][n]) for n in common]),
        "scipy_median_evals_common": _median([_evaluations(results[best_sp][n]) for n in common]),
        "tn_median_ms_common": _median([1e3 * results[best_tn][n]["seconds"] for n in common]),
        "scipy_median_ms_common": _median([1e3 * results[best_sp][n]["seconds"] for n in common]),
        "tn_only": [n for n in names if results[best_tn][n]["success"] and not results[best_sp][n]["success"]],
        "scipy_only": [n for n in names if results[best_sp][n]["success"] and not results[best_tn][n]["success"]],
    }
    return summary, head_to_head


def _problem_table(results: dict[str, dict[str, Any]], names: list[str]) -> str:
    """One row per problem: f+g+H evaluations of each solver, or why it failed."""
    def cell(record: dict[str, Any]) -> str:
        return str(_evaluations(record)) if record["success"] else f"✗ {record['reason']}"

    rows = [[n] + [cell(results[s][n]) for s in results] for n in names]
    return markdown_table(["problem"] + list(results), rows)


def cutest_comparison(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    max_iter = 300 if ctx.quick else 1000
    names = _problem_names(ctx.quick)
    solvers = solver_names(ctx.quick)
    results, skipped = run_cutest(ctx.out_dir, solvers, names, max_iter=max_iter, track=ctx.track)
    subset = "quick subset: every twelfth problem with n ≤ 10" if ctx.quick else "all problems with n ≤ 100"
    return cutest_report(results, [n for n in names if n not in skipped], skipped, max_iter=max_iter,
                         subset=subset, out_dir=ctx.out_dir)


def cutest_report(results: dict[str, dict[str, Any]], names: list[str], skipped: dict[str, str], *, max_iter: int,
                  subset: str, out_dir: Path) -> tuple[str, dict[str, Any], list]:
    """Markdown (summary table, head-to-head, per-problem table), figures and the performance profile."""
    solvers = list(results)
    summary, head = summarize(results, names)
    rows = [[s, f"{v['solved']}/{v['attempted']}", v["time_capped"], v["median_nfev"], v["median_njev"],
             v["median_nhev"], v["median_evals"], v["median_evals_all_solved"], v["median_ms"], v["total_seconds"]]
            for s, v in summary.items()]
    costs = {s: [_evaluations(results[s][n]) if results[s][n]["success"] else float("inf") for n in names]
             for s in solvers}
    plot = plot_profile(costs, out_dir / "minimize_cutest_profile.png",
                        title=f"CUTEst unconstrained ({len(names)} problems): f+g+H evaluations")
    best_tn, best_sp = head["torchnewton"], head["scipy"]
    goal = (summary[best_tn]["solved"] >= summary[best_sp]["solved"] and head["tn_median_evals_common"] is not None
            and head["tn_median_evals_common"] < head["scipy_median_evals_common"])
    ms = lambda v: "n/a" if v is None else f"{v:.3g} ms"  # noqa: E731
    markdown = "\n".join([
        f"CUTEst via S2MPJ, {len(names)} problems ({subset}; {len(skipped)} skipped: "
        f"{', '.join(f'{k} ({v})' for k, v in skipped.items()) or 'none'}). Stopping rule ‖∇f‖∞ ≤ 1e-6·max(1, |f|), "
        f"at most {max_iter} iterations and {TIME_CAP_SECONDS:g} s per run (a run past the cap counts as unsolved), "
        "problems' own derivatives. Medians over each solver's solved problems unless stated; total s over all its runs.",
        "",
        markdown_table(["solver", "solved", "time-capped", "median nfev", "median njev", "median nhev",
                        "median f+g+H", f"median f+g+H on the {summary[solvers[0]]['solved_by_all']} solved by all",
                        "median ms", "total s"], rows),
        "",
        f"Best torchnewton method **{best_tn}** ({summary[best_tn]['solved']} solved) vs best scipy method "
        f"**{best_sp}** ({summary[best_sp]['solved']} solved); on the {head['common_solved']} problems both solve, "
        f"median f+g+H evaluations {head['tn_median_evals_common']} vs {head['scipy_median_evals_common']}, "
        f"median time {ms(head['tn_median_ms_common'])} vs {ms(head['scipy_median_ms_common'])}. "
        f"Solved only by {best_tn}: {', '.join(head['tn_only']) or 'none'}; only by {best_sp}: "
        f"{', '.join(head['scipy_only']) or 'none'}. "
        f"Goal (solve at least as many, fewer median evaluations): **{'met' if goal else 'not met'}**.",
        "",
        "<details><summary>Per problem: f+g+H evaluations, or why the run failed</summary>",
        "",
        _problem_table(results, names),
        "",
        "</details>",
    ])
    figures = {"summary": summary, "head_to_head": head, "goal_met": goal, "skipped": skipped,
               "per_problem": {s: {n: results[s][n] for n in names} for s in solvers}}
    return markdown, figures, [plot]


def _cached(out_dir: Path, solvers: list[str], names: list[str], max_iter: int) -> tuple[dict[str, dict[str, Any]], list[str], dict[str, str]]:
    """The cached results on the problems every solver has finished (no new runs), and the skipped ones."""
    cache = _cache(out_dir, max_iter, TIME_CAP_SECONDS)
    skipped = {n: cache.skipped(s, n) for n in names for s in solvers if cache.skipped(s, n) is not None}
    done = [n for n in names if n not in skipped and all(cache.get(s, n) is not None for s in solvers)]
    return {s: {n: cache.get(s, n) for n in done} for s in solvers}, done, skipped


def main(argv: list[str] | None = None) -> int:
    """Fill (or prune) the result cache of the CUTEst comparison for chosen solvers."""
    parser = argparse.ArgumentParser(prog="python -m torchnewton.bench.suites.minimize_cutest",
                                     description="resumable CUTEst runs; `torchnewton bench minimize` reports them")
    parser.add_argument("--out", default="bench-report", help="bench output folder holding the cache")
    parser.add_argument("--quick", action="store_true", help="the quick subset and budget instead of the full run")
    parser.add_argument("--solvers", nargs="*", help="solvers to run (default: all of the mode)")
    parser.add_argument("--problems", nargs="*", help="problems to run (default: all of the mode)")
    parser.add_argument("--forget", action="store_true", help="drop the chosen entries instead of running")
    parser.add_argument("--report-cached", action="store_true",
                        help="run nothing; write minimize_cutest_cached.md (and the profile) from the problems "
                             "every chosen solver has finished so far")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    solvers = args.solvers or solver_names(args.quick)
    names = args.problems or _problem_names(args.quick)
    max_iter = 300 if args.quick else 1000
    if args.forget:
        cache = _cache(out_dir, max_iter, TIME_CAP_SECONDS)
        print(f"dropped {sum(cache.forget(s, args.problems) for s in solvers)} entries")
        return 0
    if args.report_cached:
        results, done, skipped = _cached(out_dir, solvers, names, max_iter)
        subset = f"the {len(done)} of {len(names)} problems every solver has finished so far (partial run)"
        markdown, figures, _ = cutest_report(results, done, skipped, max_iter=max_iter, subset=subset, out_dir=out_dir)
        (out_dir / "minimize_cutest_cached.md").write_text(markdown)
        (out_dir / "minimize_cutest_cached.json").write_text(json.dumps(figures, indent=1, default=str))
        print(markdown.split("<details>")[0])
        return 0
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    track = (lambda it, **kw: tqdm(it, **kw)) if tqdm else (lambda it, **kw: it)
    results, skipped = run_cutest(out_dir, solvers, names, max_iter=max_iter, track=track)
    attempted = [n for n in names if n not in skipped]
    for solver in solvers:
        solved = sum(results[solver][n]["success"] for n in attempted)
        print(f"{solver}: {solved}/{len(attempted)} solved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
