"""Why torchnewton fails where a peer succeeds, on the constrained CUTEst comparison.

For each protocol, the problems that the best peer (most problems solved) solves and no
torchnewton entry does are grouped by the cause of ``tn:sqp``'s failure, read from its record:

* *time cap* — the run hit the per-run time cap;
* *crash* — an exception ended the run (the record's traceback is quoted);
* *iteration limit* — torchnewton stopped with ``MAX_ITER``;
* *KKT check failure at the end* — torchnewton reported ``SUCCESS`` but the shared checker
  (scaled optimality and violation ≤ 1e-6) rejects its x;
* *tn status* — torchnewton stopped with another status (``STALLED``, ``LINESEARCH_FAILED``, ...);
* *wrong S2MPJ derivatives* — overrides the others when the problem's analytic derivatives disagree
  with central differences (:func:`derivative_error`), so that no solver given them can be trusted.

Example::

    text, figures = failure_analysis(results, names)   # results[protocol][solver][problem]
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

DERIVATIVE_TOL = 1e-4
"""Relative disagreement (max norm) of an analytic derivative with central differences above which
the problem's derivatives are called wrong; S2MPJ's correct ones agree to about 1e-8."""


def derivative_error(problem: Any, seed: int = 0, step: float = 1e-6) -> dict[str, float]:
    """Relative max-norm errors of ∇f, ∇²f, J and Σyᵢ∇²cᵢ against central differences of f, ∇f, c
    and Jᵀy at x0 + 0.01·N(0, I) (clipped into the bounds)."""
    rng = np.random.default_rng(seed)
    x = problem.x0.numpy() + 0.01 * rng.standard_normal(problem.n)
    x = np.clip(x, problem.lower.numpy(), problem.upper.numpy())
    eye = np.eye(problem.n)

    def central(fn: Any) -> np.ndarray:
        return np.stack([(np.asarray(fn(x + step * e)) - np.asarray(fn(x - step * e))) / (2 * step) for e in eye],
                        axis=-1)

    def relative(analytic: np.ndarray, numeric: np.ndarray) -> float:
        return float(np.max(np.abs(analytic - numeric), initial=0.0) / max(1.0, np.max(np.abs(numeric), initial=0.0)))

    errors = {"gradient": relative(problem.gradient_np(x), central(problem.objective_np)),
              "hessian": relative(problem.hessian_np(x), central(problem.gradient_np))}
    if problem.m:
        y = rng.standard_normal(problem.m)
        errors["jacobian"] = relative(problem.constraint_jacobian_np(x), central(problem.constraints_np))
        errors["constraint_hessians"] = relative(
            np.einsum("i,ijk->jk", y, problem.constraint_hessians_np(x)),
            central(lambda z: problem.constraint_jacobian_np(z).T @ y))
    return errors


def cause(record: dict[str, Any]) -> str:
    """The cause of a failed torchnewton run, from its record."""
    message = record["message"]
    if message.startswith("time cap") or "TimeCapReached" in message:  # the latter: the hard cap's alarm
        return "time cap"
    if "traceback" in record or message.startswith("crash") or message.startswith("process died"):
        return "crash / exception"
    if "MAX_ITER" in message:
        return "iteration limit"
    if "SUCCESS" in message:
        return "KKT check failure at the end (tn reported SUCCESS)"
    return f"tn status {message.split(': ')[-1]}"


def _trace_tail(record: dict[str, Any]) -> str:
    lines = [line.strip() for line in record.get("traceback", "").splitlines() if line.strip()]
    frames = [line for line in lines if line.startswith("File ")]
    return f"{frames[-1] if frames else ''} → {lines[-1] if lines else record['message']}"


def _entries(records: dict[str, dict[str, Any]]) -> str:
    """The torchnewton entries' endings, entries that ended alike (same message, optimality,
    violation, iterations) listed together."""
    alike: dict[tuple, list[str]] = defaultdict(list)
    for solver, r in records.items():
        alike[(r["message"][:50], f"{r['optimality']:.1e}", f"{r['violation']:.1e}", r["nit"])].append(
            solver.removeprefix("tn:"))
    return "; ".join(f"{', '.join(solvers)}: {message} (opt {opt}, viol {viol}, {nit} it)"
                     for (message, opt, viol, nit), solvers in alike.items())


def failure_analysis(results: dict[str, dict[str, dict[str, dict[str, Any]]]], names: list[str],
                     check_derivatives: bool = True) -> tuple[str, dict[str, Any]]:
    """Markdown and figures: per protocol, the problems the best peer solves and no torchnewton
    entry does, grouped by cause (see the module docstring)."""
    from ..problems.s2mpj_constrained import load_problem

    text, figures = [], {}
    derivative_errors: dict[str, dict[str, float]] = {}
    for protocol, label in (("shared", "A: to the shared tolerance"), ("own", "B: own tolerance")):
        runs = results[protocol]
        ours = [s for s in runs if s.startswith("tn:")]
        peers = [s for s in runs if not s.startswith("tn:")]
        best = max(peers, key=lambda s: sum(runs[s][n]["success"] for n in names))
        lost = [n for n in names if runs[best][n]["success"] and not any(runs[s][n]["success"] for s in ours)]
        any_peer = [n for n in names if any(runs[p][n]["success"] for p in peers)
                    and not any(runs[s][n]["success"] for s in ours)]
        groups: dict[str, list[str]] = defaultdict(list)  # lost to the best peer
        others: dict[str, list[str]] = defaultdict(list)  # lost to another peer only
        rows = []
        for name in any_peer:
            if check_derivatives and name not in derivative_errors:
                derivative_errors[name] = derivative_error(load_problem(name))
            wrong = {k: v for k, v in derivative_errors.get(name, {}).items() if v > DERIVATIVE_TOL}
            reason = ("wrong S2MPJ derivatives (" + ", ".join(f"{k} {v:.1e}" for k, v in wrong.items()) + ")"
                      if wrong else cause(runs["tn:sqp"][name]))
            (groups if name in lost else others)[reason.split(" (")[0] if wrong else reason].append(name)
            entries = _entries({s: runs[s][name] for s in ours})
            crash = "; ".join(f"{s.removeprefix('tn:')}: {_trace_tail(runs[s][name])}" for s in ours
                              if "traceback" in runs[s][name])
            solvers = [p for p in peers if runs[p][name]["success"]]
            peer = runs[solvers[0]][name]
            rows.append(f"| {name} | {', '.join(solvers)} | {reason} | {entries} | "
                        f"{runs['tn:sqp'][name]['fun']:.6g} | {peer['fun']:.6g} ({solvers[0]}, {peer['nit']} it) | "
                        f"{crash or '-'} |")
        text += [f"**{label}** — best peer **{best}**; it solves {len(lost)} problems no torchnewton entry solves, "
                 f"grouped by the cause of tn:sqp's failure:", "",
                 *(f"- {reason}: {len(group)} — {', '.join(group)}" for reason, group in
                   sorted(groups.items(), key=lambda item: -len(item[1]))), "",
                 f"Solved by another peer only ({sum(map(len, others.values()))}):", "",
                 *(f"- {reason}: {len(group)} — {', '.join(group)}" for reason, group in
                   sorted(others.items(), key=lambda item: -len(item[1]))), "",
                 "<details><summary>Per problem: the peers that solve it, each torchnewton entry's message, final "
                 "optimality, violation and iterations (entries that ended alike together), f at tn:sqp's x and at "
                 "the first solving peer's; traceback tail of crashes</summary>", "",
                 "| problem | solved by | cause (tn:sqp) | torchnewton entries | f at tn:sqp's x | f at the peer's x | "
                 "crash |", "|---|---|---|---|---|---|---|", *rows, "",
                 "</details>", ""]
        figures[protocol] = {"best_peer": best, "lost": lost, "lost_to_any_peer": any_peer,
                             "by_cause": dict(groups), "other_peer_only_by_cause": dict(others)}
    figures["derivative_errors"] = derivative_errors
    return "\n".join(text), figures
