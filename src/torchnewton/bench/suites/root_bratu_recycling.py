"""Krylov subspace recycling inside Newton–Krylov on the 2-D Bratu problem (issue 18, item 4).

``root(method="newton-krylov")`` with its default inner solver, GMRES(30), against the same
Newton iteration whose systems J_k d = −F_k are solved by one GCRO-DR(30 + k, k) solver kept
across the Newton iterations (``options={"recycle": k}``), and, to separate the two effects of
GCRO-DR, the same solver with its subspace forgotten after every Newton iteration (deflated
restarts within each solve only; a callback calls ``state.recycler.reset()``). Every run starts
from u = 0, stops at ‖F‖∞ ≤ TOL, uses the same Eisenstat–Walker forcing and line search, with
and without the exact Laplacian inverse as preconditioner.

"Same solution": the mean-value Jacobian between two approximate roots u₁, u₂ is symmetric with
smallest eigenvalue at least μ_min − λ e^{max(u₁, u₂)} (μ_min the smallest eigenvalue of −Δ_h,
by Weyl), so ‖u₁ − u₂‖₂ ≤ (‖F(u₁)‖₂ + ‖F(u₂)‖₂) / (μ_min − λ e^{max u}) wherever that is
positive; the measured difference is reported beside this bound.

Full mode adds the minimization counterpart: ``minimize(method="newton-cg")`` on the Bratu energy
E(u) = ½uᵀ(−Δ_h)u − λΣe^u (∇E = F, ∇²E = J, SPD along the path) with and without
``options={"recycle": k}`` (deflated CG kept across the Newton iterations).
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

import torchnewton

from ...solvers.residual.newton_krylov import NewtonKrylov
from ..problems.bratu import Bratu2D
from ..suite import BenchContext, markdown_table, torch_threads

SIZE = 128
PARAMETER = 6.0
TOL = 1e-6
RECYCLE = 10
MAX_ITER = 100
CG_SIZE = 64
CG_RECYCLE = (5, 10)
CG_TOL = 1e-10  # minimize's test ‖∇E‖∞ ≤ tol·max(1, |E|), |E| ≈ λN² here: about 2.5e-6 at 64²


def bratu_energy(problem: Bratu2D) -> Callable[[torch.Tensor], torch.Tensor]:
    """E(u) = ½uᵀ(−Δ_h)u − λΣe^u on (..., N²) → (...): its gradient is ``problem.residual``."""
    N, h = problem.size, problem.spacing

    def energy(u: torch.Tensor) -> torch.Tensor:
        U = u.reshape(-1, N, N)
        P = torch.nn.functional.pad(U, (1, 1, 1, 1))
        laplacian = (4 * U - P[:, :-2, 1:-1] - P[:, 2:, 1:-1] - P[:, 1:-1, :-2] - P[:, 1:-1, 2:]) / h**2
        return (0.5 * U * laplacian - problem.parameter * torch.exp(U)).sum((-1, -2)).reshape(u.shape[:-1])

    return energy


def _reset(state: Any) -> None:
    state.recycler.reset()


def _variants(full: bool) -> dict[str, tuple[dict[str, Any], Callable[[Any], Any] | None]]:
    """label -> (root options, callback)."""
    variants = {
        "GMRES(30), no recycling": ({}, None),
        f"GCRO-DR({30 + RECYCLE}, {RECYCLE}), subspace reset every Newton iteration": ({"recycle": RECYCLE}, _reset),
        f"GCRO-DR({30 + RECYCLE}, {RECYCLE}), recycled across Newton iterations": ({"recycle": RECYCLE}, None),
    }
    if full:
        # GMRES given room to reach every forcing term: recycling is not only a cure for the iteration cap
        variants["GMRES(30), no recycling, inner_max_iter=2000"] = ({"inner_max_iter": 2000}, None)
        for k in (5, 20):
            variants[f"GCRO-DR({30 + k}, {k}), recycled across Newton iterations"] = ({"recycle": k}, None)
    return variants


def _solve(problem: Bratu2D, options: dict[str, Any], callback: Any) -> tuple[float, Any]:
    u0 = torch.zeros(1, problem.size**2, dtype=torch.float64)
    start = time.perf_counter()
    result = torchnewton.root(problem.residual, u0, method="newton-krylov", tol=TOL, batch=True, options=options,
                              callback=callback, max_iter=MAX_ITER, record_history=True)
    return time.perf_counter() - start, result


def _difference_bound(problem: Bratu2D, u1: torch.Tensor, u2: torch.Tensor) -> float:
    """The bound on ‖u₁ − u₂‖₂ of the module docstring (inf where the Jacobian bound is not positive)."""
    N, h = problem.size, problem.spacing
    mu_min = 2 * (2 - 2 * math.cos(math.pi / (N + 1))) / h**2
    gap = mu_min - problem.parameter * math.exp(float(torch.maximum(u1, u2).max()))
    residuals = float(problem.residual(u1).norm() + problem.residual(u2).norm())
    return residuals / gap if gap > 0 else float("inf")


def run_bratu_recycling(ctx: BenchContext) -> tuple[str, dict[str, Any], list[Path]]:
    problem = Bratu2D(SIZE, PARAMETER)
    variants = _variants(not ctx.quick)
    repeats = 1 if ctx.quick else 3
    figures: dict[str, Any] = {}
    rows, histories = [], {}
    with torch_threads(1):
        _solve(Bratu2D(8, PARAMETER), {"recycle": 2}, None)  # the one-off autograd setup, outside the timings
        for preconditioned in ctx.track([False, True], desc="bratu recycling"):
            label = "Laplacian inverse" if preconditioned else "none"
            precond = {"preconditioner": problem.preconditioner(torch.zeros(1, dtype=torch.float64))} \
                if preconditioned else {}
            times: dict[str, list[float]] = {name: [] for name in variants}
            results: dict[str, Any] = {}
            for _ in range(repeats):  # interleaved: every variant once per round
                for name, (options, callback) in variants.items():
                    seconds, results[name] = _solve(problem, {**options, **precond}, callback)
                    times[name].append(seconds)
            reference = results["GMRES(30), no recycling"]
            part: dict[str, Any] = {}
            for name, result in results.items():
                x = result.x
                entry = {
                    "newton_iterations": int(result.nit[0]), "krylov_iterations": int(result.krylov_iterations[0]),
                    "jvps": result.njev, "time_min_s": min(times[name]),
                    "time_median_s": statistics.median(times[name]),
                    "residual_inf": float(problem.residual(x).abs().max()), "success": bool(result.success[0]),
                    "max_abs_difference_vs_gmres": float((x - reference.x).abs().max()),
                    "difference_bound_2norm": _difference_bound(problem, x, reference.x),
                }
                part[name] = entry
                ratio = reference.krylov_iterations[0].item() / max(entry["krylov_iterations"], 1)
                rows.append([label, name, entry["newton_iterations"], entry["krylov_iterations"], f"{ratio:.1f}x",
                             entry["jvps"], entry["time_min_s"], entry["time_median_s"], entry["residual_inf"],
                             entry["max_abs_difference_vs_gmres"], entry["difference_bound_2norm"], entry["success"]])
                if not preconditioned:
                    histories[name] = result.history
            figures[f"preconditioner={label}"] = part
    verdicts = []
    for label, part in figures.items():
        plain = part["GMRES(30), no recycling"]
        recycled = part[f"GCRO-DR({30 + RECYCLE}, {RECYCLE}), recycled across Newton iterations"]
        fewer = recycled["krylov_iterations"] < plain["krylov_iterations"]
        same = recycled["success"] and plain["success"] and \
            recycled["max_abs_difference_vs_gmres"] <= recycled["difference_bound_2norm"]
        verdicts.append(f"{label}: {recycled['krylov_iterations']} vs {plain['krylov_iterations']} Krylov iterations, "
                        f"max |Δu| {recycled['max_abs_difference_vs_gmres']:.2g} within the bound "
                        f"{recycled['difference_bound_2norm']:.2g}: {'met' if fewer and same else 'not met'}")
    text = [
        f"Bratu {SIZE}×{SIZE} ({SIZE ** 2:,} unknowns), λ = {PARAMETER}, from u = 0 to ‖F‖∞ ≤ {TOL:g}, float64, one "
        "thread. Every row is `torchnewton.root(method=\"newton-krylov\")` with the same forcing terms and line "
        f"search; only the inner solver differs: GMRES(30) (the default), or GCRO-DR(30 + k, k) via "
        f"`options={{\"recycle\": k}}` — one solver kept across the Newton iterations, or (ablation) its subspace "
        "reset after every Newton iteration, which leaves only the deflated restarts within each solve. JVPs count "
        "every Jacobian-vector product (Arnoldi steps, residual checks, the k re-projections of the recycled "
        "subspace for each new Jacobian, the line search's slope). Krylov ratio = GMRES(30)'s Krylov iterations / "
        "the row's. max abs Δu = max |u − u_GMRES| on the returned solutions; the bound on ‖Δu‖₂ follows from the two "
        "residuals (see the module docstring). "
        + (f"Times: min and median of {repeats} interleaved runs." if repeats > 1 else "Times: one run (quick mode)."),
        "",
        markdown_table(["preconditioner", "inner solver", "Newton iterations", "Krylov iterations", "Krylov ratio",
                        "JVPs", "time min (s)", "time median (s)", "final ‖F‖∞", "max abs Δu", "bound on ‖Δu‖₂",
                        "success"], rows),
        "",
        "Goal (issue 18, item 4: fewer total Krylov iterations with recycling, the same solution) — "
        + "; ".join(verdicts) + ".",
        "",
        _reading(figures),
    ]
    if not ctx.quick:
        with torch_threads(1):
            cg_text, figures["newton-cg"] = _newton_cg(repeats)
        text += ["", cg_text]
    return "\n".join(text), figures, [_plot(ctx, histories)]


def _newton_cg(repeats: int) -> tuple[str, dict[str, Any]]:
    """newton-cg on the Bratu energy with and without deflated-CG recycling, interleaved repeats."""
    problem = Bratu2D(CG_SIZE, PARAMETER)
    energy = bratu_energy(problem)
    u0 = torch.zeros(CG_SIZE**2, dtype=torch.float64)
    settings = [0, *CG_RECYCLE]
    times: dict[int, list[float]] = {k: [] for k in settings}
    results: dict[int, Any] = {}
    for _ in range(repeats):
        for k in settings:
            start = time.perf_counter()
            results[k] = torchnewton.minimize(energy, u0, method="newton-cg", tol=CG_TOL, max_iter=MAX_ITER,
                                              options={"recycle": k} if k else None)
            times[k].append(time.perf_counter() - start)
    numbers, rows = {}, []
    for k in settings:
        r = results[k]
        numbers[f"recycle={k}"] = entry = {
            "newton_iterations": r.nit, "hessian_vector_products": r.nhev, "time_min_s": min(times[k]),
            "time_median_s": statistics.median(times[k]), "gradient_inf": float(problem.residual(r.x).abs().max()),
            "success": bool(r.success), "max_abs_difference_vs_plain": float((r.x - results[0].x).abs().max())}
        rows.append([f"deflated CG, k = {k}" if k else "CG, no recycling", *entry.values()])
    text = "\n".join([
        f"#### newton-cg on the Bratu energy, {CG_SIZE}×{CG_SIZE}", "",
        f"`torchnewton.minimize(method=\"newton-cg\", tol={CG_TOL:g})` from u = 0 (its test: ‖∇E‖∞ ≤ tol·max(1, |E|)), "
        "with and "
        "without `options={\"recycle\": k}`; HVPs count every Hessian-vector product, the k re-projections of "
        f"the recycled space for each new Hessian included. Times: min and median of {repeats} interleaved runs.", "",
        markdown_table(["inner solver", "Newton iterations", "HVPs", "time min (s)", "time median (s)", "final ‖∇E‖∞",
                        "success", "max abs Δu vs plain"], rows)])
    return text, numbers


def _reading(figures: dict[str, Any]) -> str:
    """What the rows say, from the numbers: per-solve averages and the split between deflated
    restarts (GMRES → reset) and recycling across Newton iterations (reset → recycled)."""
    sentences = []
    for label, part in figures.items():
        plain = part["GMRES(30), no recycling"]
        reset = part[f"GCRO-DR({30 + RECYCLE}, {RECYCLE}), subspace reset every Newton iteration"]
        recycled = part[f"GCRO-DR({30 + RECYCLE}, {RECYCLE}), recycled across Newton iterations"]
        per_solve = lambda e: e["krylov_iterations"] / max(e["newton_iterations"], 1)
        sentences.append(
            f"{label}: GMRES(30) averages {per_solve(plain):.1f} Krylov iterations per Newton system "
            f"(cap {NewtonKrylov.inner_max_iter}) over {plain['newton_iterations']} Newton iterations; "
            f"deflated restarts alone (reset) "
            f"{per_solve(reset):.1f} over {reset['newton_iterations']}; recycling across Newton iterations "
            f"{per_solve(recycled):.1f} over {recycled['newton_iterations']} "
            f"(total {plain['krylov_iterations']} → {reset['krylov_iterations']} → {recycled['krylov_iterations']}).")
    return " ".join(sentences)


def _plot(ctx: BenchContext, histories: dict[str, list[dict[str, Any]]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        cumulative = [float(h["krylov_iterations"][0]) for h in history]
        per_step = [b - a for a, b in zip(cumulative, cumulative[1:])]
        left.plot(range(1, len(per_step) + 1), per_step, "-o", label=name)
        right.semilogy(cumulative, [float(h["residual_norm"][0]) for h in history], "-o", label=name)
    left.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    left.set_xlabel("Newton iteration")
    left.set_ylabel("Krylov iterations of its inner solve")
    right.set_xlabel("cumulative Krylov iterations")
    right.set_ylabel("‖F(u)‖₂")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle(f"Bratu {SIZE}×{SIZE}, λ = {PARAMETER}, no preconditioner: Newton–Krylov with and without recycling")
    fig.tight_layout()
    path = ctx.out_dir / "root_bratu_recycling.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
