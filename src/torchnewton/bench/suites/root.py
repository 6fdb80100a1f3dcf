"""`torchnewton bench root`: torchnewton.root against scipy.optimize.root.

(b) Batched throughput: 4,096 random strongly monotone cubic systems of size 4
    (:mod:`..problems.random_systems`) solved by one batched ``torchnewton.root`` call (Newton
    with line search; autodiff Jacobians, and the analytic Jacobian as ``jac=``) against a Python
    loop of ``scipy.optimize.root(method="hybr")`` calls with the analytic Jacobian.
(c) A large Jacobian-free system: the 2-D Bratu problem on a 128×128 grid (16,384 unknowns),
    ``torchnewton.root(method="newton-krylov")`` against ``scipy.optimize.root(method="krylov")``,
    both preconditioned by the same exact inverse of the discrete Laplacian; full mode adds
    the unpreconditioned pair.
(d) Solved counts of every root method against scipy's on the S2MPJ and MGH square systems
    (:mod:`.root_solved_counts`), and homotopy continuation against newton, dogleg and LM from
    the MGH hard starts 10·x₀ and 100·x₀ (:mod:`.root_homotopy`).
(e) Krylov recycling inside Newton on Bratu (:mod:`.root_bratu_recycling`): newton-krylov with
    and without ``options={"recycle": k}`` (GCRO-DR across Newton steps): Krylov iterations,
    products, time, and the difference between the two solutions.

Both sides run in this process on the same data, in float64, to the same ∞-norm tolerance.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse.linalg
import torch

import torchnewton

from ..problems.bratu import Bratu2D
from ..problems.random_systems import CubicSystems, cubic_systems, jacobian_np, residual_np
from ..suite import BenchContext, Section, markdown_table, median_time, torch_threads
from .root_bratu_recycling import run_bratu_recycling
from .root_homotopy import homotopy_hard_starts
from .root_solved_counts import solved_counts

BATCH = 4096
SYSTEM_SIZE = 4
BATCH_TOL = 1e-10
SCIPY_XTOL = 1e-12  # hybr's default 1.5e-8 stops short of ‖F‖∞ ≤ 1e-10 on about half the systems
BRATU_SIZE = 128
BRATU_PARAMETER = 6.0
BRATU_TOL = 1e-6


def run(ctx: BenchContext) -> Section:
    figures: dict[str, Any] = {}
    parts = ["Both sides run in this process on the same data in float64; times are wall-clock medians."]
    sizes = [SYSTEM_SIZE] if ctx.quick else [SYSTEM_SIZE, 8]
    rows = []
    for n in sizes:
        figures[f"batch_n{n}"] = result = _batched_throughput(ctx, n)
        rows += _throughput_rows(n, result)
    parts += [
        f"### Batched throughput: {BATCH:,} independent systems F(x) = Ax + c⊙x³ − b",
        "",
        "One batched `torchnewton.root(method=\"newton\", batch=True)` call against a loop of "
        f"`scipy.optimize.root(method=\"hybr\", jac=..., xtol={SCIPY_XTOL:g})` calls, from x = 0, to "
        f"‖F‖∞ ≤ {BATCH_TOL:g}. Both sides are timed on one core (torch.set_num_threads(1) while timed; the "
        "scipy loop is serial). A scipy member counts as solved when its success flag is set and its "
        "residual meets the same bound. Ratio = scipy loop time / torchnewton time.",
        "",
        markdown_table(["n", "solver", "time (s)", "per system (µs)", "solved", "ratio vs scipy",
                        "batched F evals / iterations"], rows),
        "",
    ]
    bratu_runs = [True] if ctx.quick else [True, False]
    bratu_rows, histories = [], {}
    for preconditioned in ctx.track(bratu_runs, desc="bratu"):
        label = "preconditioned" if preconditioned else "unpreconditioned"
        figures[f"bratu_{label}"] = result = _bratu(preconditioned)
        histories[label] = result
        for side in ("torchnewton", "torchnewton (finite-difference JVP)", "scipy"):
            r = result[side]
            ratio = result["scipy"]["time_s"] / r["time_s"]
            bratu_rows.append([label, side, r["time_s"], f"{ratio:.1f}x", r["residual_inf"], r["iterations"],
                               r["function_evaluations"], r["jvps"], r["success"]])
    parts += [
        f"### Bratu problem, {BRATU_SIZE}×{BRATU_SIZE} grid ({BRATU_SIZE ** 2:,} unknowns), λ = {BRATU_PARAMETER}",
        "",
        "`torchnewton.root(method=\"newton-krylov\")` (GMRES on autodiff JVPs — the linearization recorded once per Newton step — Eisenstat–Walker forcing) against "
        "`scipy.optimize.root(method=\"krylov\")` (LGMRES on finite-difference JVPs), from u = 0 to "
        f"‖F‖∞ ≤ {BRATU_TOL:g}. \"preconditioned\": both get the same preconditioner, the exact inverse of the "
        "discrete Laplacian (sine-basis fast Poisson solve). JVPs: torchnewton counts autodiff JVPs; scipy "
        "forms each JVP by one extra F evaluation, so its F count includes them (as does torchnewton's "
        "finite-difference JVP option). Medians of 3 runs after one warm-up run.",
        "",
        markdown_table(["preconditioner", "solver", "time (s)", "speed-up vs scipy", "final ‖F‖∞",
                        "Newton iterations", "F evals", "JVPs", "success"], bratu_rows),
        "",
    ]
    plots = [_convergence_plot(ctx, histories)]
    for title, part in (("Bratu: Krylov subspace recycling across Newton iterations", run_bratu_recycling),
                        ("Solved counts on the S2MPJ and MGH nonlinear equations vs scipy", solved_counts),
                        ("Homotopy continuation from hard starts (MGH, 10·x₀ and 100·x₀)", homotopy_hard_starts)):
        text, numbers, images = part(ctx)
        parts += [f"### {title}", "", text, ""]
        figures[title] = numbers
        plots += images
    return Section(title="root: batched throughput, Jacobian-free Newton–Krylov, solved counts and homotopy vs scipy",
                   markdown="\n".join(parts), figures=figures, plots=plots)


# --- (b) batched throughput -----------------------------------------------------------------


def _batched_throughput(ctx: BenchContext, n: int) -> dict[str, Any]:
    systems = cubic_systems(BATCH, n, seed=ctx.seed)
    x0 = torch.zeros(BATCH, n, dtype=torch.float64)
    out: dict[str, Any] = {}
    repeats = 3 if ctx.quick else 5
    with torch_threads(1):  # the scipy loop runs on one core: compare core for core
        for label, jac in (("torchnewton (autodiff J)", None), ("torchnewton (jac=)", systems.jacobian)):
            seconds, res = median_time(lambda: torchnewton.root(systems.residual, x0, method="newton", jac=jac,
                                                                 tol=BATCH_TOL, batch=True), repeats=repeats)
            residual = systems.residual(res.x).abs().amax(-1)
            out[label] = {"time_s": seconds, "solved": int((res.success & (residual <= BATCH_TOL)).sum()),
                          "nfev": res.nfev, "max_iterations": int(res.nit.max())}
    seconds, solved, evaluations = _scipy_loop(ctx, systems)
    out["scipy hybr loop"] = {"time_s": seconds, "solved": solved, "nfev": evaluations}
    out["batch"] = BATCH
    return out


def _scipy_loop(ctx: BenchContext, systems: CubicSystems) -> tuple[float, int, int]:
    """Time of one pass of scipy.optimize.root over every member, members solved, total F evals."""
    batch, n = systems.shape
    members = [systems.member_np(i) for i in range(batch)]
    solved = evaluations = 0
    start = time.perf_counter()
    for coefficients in ctx.track(members, desc=f"scipy root loop n={n}"):
        sol = scipy.optimize.root(residual_np, np.zeros(n), args=coefficients, jac=jacobian_np, method="hybr",
                                  options={"xtol": SCIPY_XTOL})
        solved += bool(sol.success) and bool(np.abs(sol.fun).max() <= BATCH_TOL)
        evaluations += sol.nfev
    return time.perf_counter() - start, solved, evaluations


def _throughput_rows(n: int, result: dict[str, Any]) -> list[list[Any]]:
    scipy_time = result["scipy hybr loop"]["time_s"]
    rows = []
    for label in ("torchnewton (autodiff J)", "torchnewton (jac=)", "scipy hybr loop"):
        r = result[label]
        ratio = scipy_time / r["time_s"]
        calls = (f"{r['nfev']} / {r['max_iterations']}" if "max_iterations" in r
                 else f"{r['nfev'] / BATCH:.1f} per system (unbatched)")
        rows.append([n, label, r["time_s"], 1e6 * r["time_s"] / BATCH, f"{r['solved']}/{BATCH}",
                     f"{ratio:.1f}x" if label != "scipy hybr loop" else "1x", calls])
    return rows


# --- (c) Bratu, Jacobian-free ---------------------------------------------------------------


def _bratu(preconditioned: bool) -> dict[str, Any]:
    """Median of 3 timed runs per side after one warm-up run (the first torch autograd call pays
    a one-off setup of about 0.4 s that a long-running user does not)."""
    problem = Bratu2D(BRATU_SIZE, BRATU_PARAMETER)
    u0 = torch.zeros(1, BRATU_SIZE ** 2, dtype=torch.float64)
    out: dict[str, Any] = {}
    for label, jvp in (("torchnewton", "autodiff"), ("torchnewton (finite-difference JVP)", "finite-difference")):
        options = {"jvp": jvp}
        if preconditioned:
            options["preconditioner"] = problem.preconditioner(u0)
        seconds, res = median_time(lambda: torchnewton.root(
            problem.residual, u0, method="newton-krylov", tol=BRATU_TOL, batch=True, options=options,
            record_history=True, max_iter=100), repeats=3)
        out[label] = {"time_s": seconds, "residual_inf": float(problem.residual(res.x).abs().max()),
                      "iterations": int(res.nit[0]), "function_evaluations": res.nfev, "jvps": res.njev,
                      "success": bool(res.success[0]),
                      "history": [float(h["residual_norm"][0]) for h in res.history]}

    n = BRATU_SIZE ** 2
    jac_options = {}
    if preconditioned:
        jac_options["inner_M"] = scipy.sparse.linalg.LinearOperator((n, n), matvec=problem.preconditioner_np())

    def scipy_run() -> tuple[Any, int, list[float]]:
        evaluations = [0]
        history = [float(np.linalg.norm(problem.residual_np(np.zeros(n))))]

        def residual(u: np.ndarray) -> np.ndarray:
            evaluations[0] += 1
            return problem.residual_np(u)

        sol = scipy.optimize.root(residual, np.zeros(n), method="krylov",
                                  options={"fatol": BRATU_TOL, "maxiter": 100, "jac_options": jac_options},
                                  callback=lambda x, f: history.append(float(np.linalg.norm(f))))
        return sol, evaluations[0], history

    scipy_time, (sol, evaluations, scipy_history) = median_time(scipy_run, repeats=3)
    out["scipy"] = {"time_s": scipy_time, "residual_inf": float(np.abs(problem.residual_np(sol.x)).max()),
                    "iterations": int(sol.nit), "function_evaluations": evaluations,
                    "jvps": "in F evals", "success": bool(sol.success), "history": scipy_history}
    return out


def _convergence_plot(ctx: BenchContext, runs: dict[str, dict[str, Any]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"torchnewton": "-o", "scipy": "--s"}
    for label, result in runs.items():
        for side in ("torchnewton", "scipy"):
            history = result[side]["history"]
            ax.semilogy(range(len(history)), history, styles[side], label=f"{side} ({label})")
    ax.set_xlabel("Newton iteration")
    ax.set_ylabel("‖F(u)‖₂")
    ax.set_title(f"Bratu {BRATU_SIZE}×{BRATU_SIZE}, λ = {BRATU_PARAMETER}: Newton–Krylov convergence")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = ctx.out_dir / "root_bratu_convergence.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
