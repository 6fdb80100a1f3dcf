"""Resumable runs of the constrained CUTEst comparison: one JSON line per (problem, solver, protocol).

The full comparison (361 problems × 9 solvers × 2 protocols, each run capped) takes hours, so its
runs are appended to a JSON-lines file as they finish (:class:`RunCache`) and a run of the
benchmark skips every run already there.  An interrupted run resumes where it stopped; the report
is built from whatever the file holds (:func:`cached_results`), naming the problems not yet run.

Each line is one event::

    {"event": "start", "key": [problem, solver, protocol], "settings": {...}}
    {"event": "done",  "key": [...], "settings": {...}, "record": {...}}   # a run_solver record
    {"event": "unloadable", "problem": name, "reason": "...", "settings": {...}}

``settings`` holds the time cap, the iteration limit and :func:`code_version`; lines written under
other settings are ignored (delete the file, or name another, to start afresh).  A ``start`` with
no ``done`` means the process died in that run (a crash the Python ``try`` cannot catch, or an
interruption): the run is tried once more, and a second death is recorded as a failed run with the
message ``"process died"``.  A Python exception escaping :func:`.constrained_solvers.run_solver`
is recorded as a failed run with its traceback instead of ending the benchmark.

Example (run the full comparison into a cache, then report it)::

    python -m torchnewton.bench.suites.constrained_runs --cache runs.jsonl --time-cap 30
    python -m torchnewton.bench.suites.constrained_runs --cache runs.jsonl --report-to docs/bench/constrained-full

If the full list cannot finish under one cap, the rest can be run under a lower one into another
file (``--time-cap 10 --problems ...``) and the report takes each problem from the first cache that
holds all its runs (``--fallback other.jsonl 10``), saying which problems ran under which cap.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..suite import code_fingerprint
from .constrained_solvers import COUNTS, PROTOCOLS, run_solver
from .minimize_cutest import TimeCapReached

HARD_CAP_FACTOR = 3.0
"""The time cap is checked at each evaluation call; a solver that spends longer than this many
caps (plus 10 s) between two calls is stopped by a wall-clock alarm (cached runs only)."""

Key = tuple[str, str, str]  # (problem, solver, protocol)
_PACKAGE = Path(__file__).resolve().parents[2]
CODE_SOURCES = ("solvers/**/*.py", "bench/suites/constrained_solvers.py", "bench/suites/constrained_kkt.py",
                "bench/problems/s2mpj_constrained.py", "bench/problems/s2mpj.py")
"""What a cached record depends on (besides the peers' versions): torchnewton's solvers, the
benchmark's solver wrappers, its KKT checker and its problem loader."""


def code_version() -> str:
    """A hash of :data:`CODE_SOURCES` (syntax trees without docstrings) with scipy's and cyipopt's versions."""
    import scipy

    try:
        import cyipopt
        ipopt = cyipopt.__version__
    except ImportError:
        ipopt = "absent"
    paths = [p for pattern in CODE_SOURCES for p in sorted(_PACKAGE.glob(pattern))]
    return f"{code_fingerprint(paths)} scipy {scipy.__version__} cyipopt {ipopt}"


class RunCache:
    """The append-only JSON-lines file of one comparison's runs under fixed ``settings``.

    Example::

        cache = RunCache(Path("runs.jsonl"), {"time_cap": 30.0, "max_iter": 500, "code": code_version()})
        cache.get(("HS7", "tn:sqp", "shared"))   # the record, or None when not run yet
    """

    def __init__(self, path: Path, settings: dict[str, Any]):
        self.path, self.settings = Path(path), settings
        self.records: dict[Key, dict[str, Any]] = {}
        self.unloadable: dict[str, str] = {}
        self.deaths: dict[Key, int] = defaultdict(int)  # starts without a done
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        open_starts: dict[Key, int] = defaultdict(int)
        for line in self.path.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a killed process
                continue
            if event.get("settings") != self.settings:
                continue
            if event["event"] == "unloadable":
                self.unloadable[event["problem"]] = event["reason"]
                continue
            key = tuple(event["key"])
            if event["event"] == "start":
                open_starts[key] += 1
            else:
                self.records[key] = event["record"]
                open_starts[key] = 0
        self.deaths.update({k: v for k, v in open_starts.items() if v and k not in self.records})

    def _append(self, event: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps({**event, "settings": self.settings}, default=_jsonable) + "\n")
            file.flush()

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.records.get(key)

    def start(self, key: Key) -> None:
        self._append({"event": "start", "key": list(key)})

    def put(self, key: Key, record: dict[str, Any]) -> None:
        self.records[key] = record
        self._append({"event": "done", "key": list(key), "record": record})

    def put_unloadable(self, problem: str, reason: str) -> None:
        self.unloadable[problem] = reason
        self._append({"event": "unloadable", "problem": problem, "reason": reason})


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def failed_record(protocol: str, message: str, trace: str | None = None) -> dict[str, Any]:
    """The record of a run that ended without an x to judge (an escaped exception, a dead process)."""
    record = {"success": False, "optimality": math.nan, "violation": math.nan, "fun": math.nan, "nit": 0,
              "seconds": math.nan, "check_seconds": 0.0, "message": message, "protocol": protocol, "cut": False,
              "returned_accepted_x": None, "x": [], **{k: 0.0 for k in COUNTS}}
    if trace is not None:
        record["traceback"] = trace
    return record


def same_run_as(problem: Any, solver: str) -> str | None:
    """The solver whose run ``solver`` would repeat step for step on ``problem``, or None.

    The SQP variants' options apply to equality-constrained problems only; on any other problem
    every torchnewton entry is torchnewton's interior-point method with its defaults (``tn:sqp``
    routes there), so the variants and ``tn:interior-point`` reuse ``tn:sqp``'s run: the same
    iterates and counts, checked on 191 of 197 runs of the full list, the six others differing
    only where a time cap cut one copy and not another.
    """
    if solver.startswith("tn:") and solver != "tn:sqp" and not problem.equality_only:
        return "tn:sqp"
    return None


def run_problem(problem: Any, solvers: tuple[str, ...] | list[str], *, max_iter: int, time_cap: float,
                cache: RunCache | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Every solver under every protocol on one problem, interleaved: ``{protocol: {solver: record}}``.

    SLSQP's ``"own"`` run is its ``"shared"`` run (it is cut at the shared check under both), and a
    solver that would repeat another's run (:func:`same_run_as`) gets a copy of it, marked
    ``same_run_as``. With a ``cache``, runs found there are not repeated and new ones are appended
    as they finish.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in PROTOCOLS}
    for solver in solvers:
        for protocol in PROTOCOLS:
            if solver == "scipy:SLSQP" and protocol == "own":
                out["own"][solver] = {**out["shared"][solver], "protocol": "own"}
                continue
            key = (problem.name, solver, protocol)
            record = None if cache is None else cache.get(key)
            source = same_run_as(problem, solver)
            if record is None and source is not None:
                original = out[protocol].get(source) or (cache.get((problem.name, source, protocol)) if cache else None)
                if original is not None:
                    record = {**original, "same_run_as": source}
                    if cache is not None:
                        cache.put(key, record)
            if record is None:
                record = _fresh_run(problem, solver, protocol, max_iter, time_cap, cache, key)
            out[protocol][solver] = record
    return out


def _fresh_run(problem: Any, solver: str, protocol: str, max_iter: int, time_cap: float,
               cache: RunCache | None, key: Key) -> dict[str, Any]:
    if cache is None:  # quick mode: no cache, an escaping exception is a bug to see
        return run_solver(solver, problem, max_iter=max_iter, time_cap=time_cap, protocol=protocol)
    if cache.deaths.get(key, 0) >= 2:
        record = failed_record(protocol, "process died (twice) in this run")
    else:
        cache.start(key)
        hard = HARD_CAP_FACTOR * time_cap + 10.0
        try:
            with _alarm(hard) as fired:
                record = run_solver(solver, problem, max_iter=max_iter, time_cap=time_cap, protocol=protocol)
            if fired:
                record["message"] = f"time cap (hard: {hard:g} s wall, no evaluation call in between)"
        except TimeCapReached:  # the alarm outside the solver's own try: in the final KKT check
            record = failed_record(protocol, f"time cap (hard: {hard:g} s wall, in the final check)")
        except Exception as error:  # noqa: BLE001 - recorded with its traceback, the benchmark goes on
            record = failed_record(protocol, f"crash: {type(error).__name__}: {str(error)[:80]}",
                                   traceback.format_exc())
    cache.put(key, record)
    return record


@contextlib.contextmanager
def _alarm(seconds: float):
    """Raise :class:`TimeCapReached` in the block after ``seconds`` of wall time (main thread, POSIX);
    yields a list that is non-empty once the alarm has fired."""
    fired: list[bool] = []
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield fired
        return

    def ring(*_: Any) -> None:
        fired.append(True)
        raise TimeCapReached

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fill(cache: RunCache, names: list[str], solvers: tuple[str, ...] | list[str], *, max_iter: int,
         time_cap: float, log: Callable[[str], Any] = print) -> None:
    """Run every missing (problem, solver, protocol) of ``names`` in order into ``cache``, logging
    each problem's wall time per solver family and an estimate of what is left."""
    from ..problems import s2mpj_constrained

    begin = time.perf_counter()
    families: dict[str, float] = defaultdict(float)
    new_problems = 0
    for index, name in enumerate(names):
        if name in cache.unloadable:
            continue
        keys = [(name, s, p) for s in solvers for p in PROTOCOLS if not (s == "scipy:SLSQP" and p == "own")]
        if all(cache.get(k) is not None for k in keys):
            continue
        problems, failed = s2mpj_constrained.load_problems([name])
        if failed:
            cache.put_unloadable(name, failed[name])
            log(f"[{index + 1}/{len(names)}] {name}: not loadable ({failed[name]})")
            continue
        problem = problems[0]
        spent: dict[str, float] = defaultdict(float)
        for solver in solvers:
            start = time.perf_counter()
            run_problem(problem, [solver], max_iter=max_iter, time_cap=time_cap, cache=cache)
            spent[solver.split(":")[0]] += time.perf_counter() - start
        for family, seconds in spent.items():
            families[family] += seconds
        new_problems += 1
        elapsed = time.perf_counter() - begin
        left = sum(1 for n in names[index + 1:] if n not in cache.unloadable)
        solved = {s: sum(cache.get((name, s, p))["success"] for p in PROTOCOLS if cache.get((name, s, p)))
                  for s in solvers}
        log(f"[{index + 1}/{len(names)}] {name} (n={problem.n}, m={problem.m}) "
            + " ".join(f"{f} {t:.1f}s" for f, t in spent.items())
            + f" | solved(A+B) {' '.join(str(v) for v in solved.values())}"
            + f" | elapsed {elapsed / 60:.1f} min, ~{elapsed / new_problems * left / 60:.0f} min left"
            + " | families " + " ".join(f"{f} {t / 60:.1f}min" for f, t in families.items()))


def cached_results(caches: RunCache | list[RunCache], names: list[str], solvers: tuple[str, ...] | list[str]
                   ) -> tuple[dict[str, dict[str, dict[str, dict[str, Any]]]], list[str], list[str]]:
    """``results[protocol][solver][problem]`` over the problems whose every run is in a cache,
    those problems, and the problems not (or not completely) run; unloadable ones are in neither.

    With several caches (runs of one comparison under different time caps), a problem's runs all
    come from the first cache holding all of them, so that every solver on a problem had the same
    cap; each record gets that cache's ``time_cap``.
    """
    caches = [caches] if isinstance(caches, RunCache) else list(caches)
    unloadable = {name for cache in caches for name in cache.unloadable}
    results: dict[str, dict[str, dict[str, dict[str, Any]]]] = {p: {s: {} for s in solvers} for p in PROTOCOLS}
    done, missing = [], []
    for name in names:
        if name in unloadable:
            continue
        for cache in caches:
            shared = {s: cache.get((name, s, "shared")) for s in solvers}
            own = {s: shared[s] if s == "scipy:SLSQP" else cache.get((name, s, "own")) for s in solvers}
            if all(r is not None for r in [*shared.values(), *own.values()]):
                break
        else:
            missing.append(name)
            continue
        done.append(name)
        cap = cache.settings["time_cap"]
        for s in solvers:
            results["shared"][s][name] = {**shared[s], "time_cap": cap}
            results["own"][s][name] = {**own[s], "protocol": "own", "time_cap": cap}
    return results, done, missing


def main(argv: list[str] | None = None) -> int:
    """Fill a cache with the full comparison (``--cache``), or write the report from it (``--report-to``)."""
    from ..cli import write_report
    from ..suite import BenchContext, Section, torch_threads
    from .constrained_cutest import MAX_ITER, TIME_CAP_SECONDS, cached_report, problem_names
    from .constrained_failures import failure_analysis
    from .constrained_solvers import SOLVERS

    parser = argparse.ArgumentParser(prog="python -m torchnewton.bench.suites.constrained_runs")
    parser.add_argument("--cache", required=True, help="the JSON-lines file of runs (appended to)")
    parser.add_argument("--time-cap", type=float, default=TIME_CAP_SECONDS, help="seconds per run")
    parser.add_argument("--max-iter", type=int, default=MAX_ITER)
    parser.add_argument("--problems", nargs="*", help="only these problems (default: the full list, in order)")
    parser.add_argument("--fallback", nargs=2, action="append", default=[], metavar=("CACHE", "TIME_CAP"),
                        help="with --report-to: a problem not complete in --cache is taken from this cache, run "
                             "under this time cap (repeatable, in order)")
    parser.add_argument("--report-to", help="run nothing; write report.md, results.json and plots here, with "
                                            "the failure analysis (:mod:`.constrained_failures`)")
    args = parser.parse_args(argv)
    if args.time_cap <= 0:
        parser.error("--time-cap must be positive")
    settings = {"time_cap": args.time_cap, "max_iter": args.max_iter, "code": code_version()}
    cache = RunCache(Path(args.cache), settings)
    names = args.problems or problem_names(quick=False)
    with torch_threads(1):
        if args.report_to:
            out = Path(args.report_to)
            out.mkdir(parents=True, exist_ok=True)
            ctx = BenchContext(quick=False, out_dir=out)
            caches = [cache] + [RunCache(Path(path), {**settings, "time_cap": float(cap)})
                                for path, cap in args.fallback]
            markdown, figures, plots = cached_report(caches, names, ctx)
            results, done, _ = cached_results(caches, names, SOLVERS)
            analysis, figures["failures"] = failure_analysis(results, done)
            markdown += "\n\n#### Where a peer solves and torchnewton does not\n\n" + analysis
            figures["suite_seconds"] = figures["run_seconds"]
            for per_problem in (figures["per_problem"], figures["own_tolerance"]["per_problem"]):
                for runs in per_problem.values():  # the report keeps figures; x and verdicts stay in the cache
                    for name, record in runs.items():
                        runs[name] = {k: v for k, v in record.items() if k not in ("x", "verdicts")}
            section = Section(title="constrained: CUTEst (S2MPJ) vs SLSQP, trust-constr and Ipopt",
                              markdown=markdown, figures=figures, plots=plots)
            print(f"report written to {write_report([section], ctx)}")
        else:
            fill(cache, names, SOLVERS, max_iter=args.max_iter, time_cap=args.time_cap,
                 log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
