"""SKR data generation: many PDE systems solved independently (scipy, torchnewton, PyAMG) and in
SKR order with Krylov recycling (torchnewton.linear.RecyclingSolver).

Three families (:mod:`.linear_pde`): Darcy flow (SPD: CG; recycling by deflated CG),
convection–diffusion (nonsymmetric: GMRES(40); GCRO-DR) and Helmholtz (symmetric indefinite:
scipy's LGMRES and a fresh GCRO-DR per system, since GMRES(40) stalls for ~10⁵ products at
n = 128²; recycling by GCRO-DR). PyAMG builds a smoothed-aggregation hierarchy per system and
accelerates it with CG (Darcy) or FGMRES (the others: right-preconditioned, so its stopping
test is on the true residual; its left-preconditioned GMRES stops on ‖M⁻¹r‖ and misses 1e-8 on
the true one). Quick mode: 16/12/12 systems of n = 40²; full mode: 100/60/60 of n = 128²
(3.4 CPU-minutes for this part, measured; 11 minutes of wall time on a loaded 2-core machine).
"""
from __future__ import annotations

import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyamg  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402
import torch  # noqa: E402

from ...linear import RecyclingSolver, aslinearoperator, skr_order  # noqa: E402
from ...linear.iterative import cg, gmres  # noqa: E402
from ..suite import BenchContext, markdown_table, torch_threads  # noqa: E402
from .linear_pde import convection_diffusion_system, darcy_system, helmholtz_system  # noqa: E402

RTOL = 1e-8
RESTART = 40  # scipy's and torchnewton's independent GMRES
LGMRES_INNER = 30  # scipy's LGMRES(30, 3) for Helmholtz, where GMRES(40) stalls (~10⁵ products at n = 128²)
RECYCLE = 20       # GCRO-DR's recycled dimension k
CG_RECYCLE = 10    # deflated CG: each iteration costs two (k, n) products, ~1.5 sparse products at k = 10
HARVEST = 40  # CG directions kept for the Ritz refresh of the recycled space
GCRODR_RESTART = 60


INDEPENDENT = {"cg": "CG on both sides",
               "gmres": f"GMRES({RESTART}) on both sides",
               "lgmres": f"scipy LGMRES({LGMRES_INNER}, 3), torchnewton GCRO-DR({GCRODR_RESTART}, {RECYCLE}) "
                         f"started afresh for every system (deflated restarts only); GMRES({RESTART}) stalls here"}


def _scipy(A, b, method: str) -> tuple[int, bool]:
    """scipy's solver for the family; products with A counted by wrapping A (the callbacks count
    iterations, which for LGMRES are outer cycles)."""
    count = [0]

    def product(v: np.ndarray) -> np.ndarray:
        count[0] += 1
        return A @ v
    operator = spla.LinearOperator(A.shape, matvec=product, dtype=A.dtype)
    if method == "cg":
        x, info = spla.cg(operator, b, rtol=RTOL, maxiter=20 * A.shape[0])
    elif method == "gmres":
        x, info = spla.gmres(operator, b, rtol=RTOL, restart=RESTART, maxiter=20 * A.shape[0])
    else:
        x, info = spla.lgmres(operator, b, rtol=RTOL, inner_m=LGMRES_INNER, outer_k=3, maxiter=20 * A.shape[0])
    ok = np.linalg.norm(b - A @ x) <= 1.0001 * RTOL * np.linalg.norm(b)
    return count[0], bool(ok)


def _amg(A, b, spd: bool, symmetry: str) -> tuple[int, bool]:
    residuals: list[float] = []
    hierarchy = pyamg.smoothed_aggregation_solver(A, symmetry=symmetry)
    x = hierarchy.solve(b, tol=RTOL, accel="cg" if spd else "fgmres", residuals=residuals, maxiter=500)
    return len(residuals) - 1, bool(np.linalg.norm(b - A @ x) <= 1.0001 * RTOL * np.linalg.norm(b))


def _family(ctx: BenchContext, name: str, build, spd: bool, symmetry: str, N: int, count: int) -> dict[str, Any]:
    """Every method solves system i in turn before any moves on (interleaved, so that load from
    other processes falls on all of them alike); times are summed per method."""
    rng = np.random.default_rng(ctx.seed)
    raw = [build(N, rng) for _ in range(count)]
    systems = [(aslinearoperator(A), torch.from_numpy(b)) for A, b, _ in raw]
    features = torch.from_numpy(np.stack([f for _, _, f in raw]))
    labels = ["scipy independent", "torchnewton independent", "PyAMG (setup + solve)",
              "torchnewton SKR + recycling"] + (["torchnewton recycling, given order"] if ctx.quick else [])
    rows: dict[str, dict[str, Any]] = {label: {"time": 0.0, "matvecs": 0, "solved": 0} for label in labels}
    rows["PyAMG (setup + solve)"].update(matvecs=float("nan"), cycles=0)

    def make() -> RecyclingSolver:
        return RecyclingSolver("cg" if spd else "gcrodr", recycle=CG_RECYCLE if spd else RECYCLE, rtol=RTOL,
                               harvest=HARVEST, restart=GCRODR_RESTART)
    skr, given, fresh = make(), make(), make()
    scipy_method = "cg" if spd else "gmres" if symmetry == "nonsymmetric" else "lgmres"
    start = time.perf_counter()
    order = skr_order(features.reshape(count, -1))
    rows["torchnewton SKR + recycling"]["time"] += time.perf_counter() - start
    per_system = [0] * count

    def add(label: str, begin: float, matvecs: float, ok: bool) -> None:
        rows[label]["time"] += time.perf_counter() - begin
        rows[label]["matvecs"] += matvecs
        rows[label]["solved"] += int(ok)
    for step, index in enumerate(ctx.track(order, desc=f"linear skr {name}")):
        (A, b, _), (op, bt) = raw[index], systems[index]
        begin = time.perf_counter()
        matvecs, ok = _scipy(A, b, scipy_method)
        add("scipy independent", begin, matvecs, ok)
        begin = time.perf_counter()
        if scipy_method == "lgmres":  # GCRO-DR with its subspace reset: deflated restarts only
            fresh.reset()
            result = fresh.solve(op, bt)
        else:
            result = cg(op, bt, rtol=RTOL, maxiter=20 * N * N) if spd else \
                gmres(op, bt, rtol=RTOL, restart=RESTART, maxiter=20 * N * N)
        add("torchnewton independent", begin, result.nmatvec, result.success)
        begin = time.perf_counter()
        cycles, ok = _amg(A, b, spd, symmetry)
        add("PyAMG (setup + solve)", begin, float("nan"), ok)
        rows["PyAMG (setup + solve)"]["cycles"] += cycles
        begin = time.perf_counter()
        result = skr.solve(op, bt)  # warm start: the previous solution, its SKR neighbour
        add("torchnewton SKR + recycling", begin, result.nmatvec, result.success)
        per_system[step] = result.nmatvec
        if ctx.quick:  # the ablation: recycling in the generated order
            begin = time.perf_counter()
            result = given.solve(*systems[step])
            add("torchnewton recycling, given order", begin, result.nmatvec, result.success)
    rows["torchnewton SKR + recycling"]["per_system_in_order"] = per_system
    return {"N": N, "n": N * N, "systems": count, "rows": rows, "order": order, "scipy_method": scipy_method}


def run_skr(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    from threadpoolctl import threadpool_limits

    N, counts = (40, {"darcy": 16, "convection_diffusion": 12, "helmholtz": 12}) if ctx.quick else \
        (128, {"darcy": 100, "convection_diffusion": 60, "helmholtz": 60})
    figures: dict[str, Any] = {}
    parts = []
    plots = []
    # one thread for torch and for numpy/scipy's BLAS alike: a like-for-like comparison
    with torch_threads(1), threadpool_limits(1):
        for name, build, spd, symmetry in (("darcy", darcy_system, True, "symmetric"),
                                           ("convection_diffusion", convection_diffusion_system, False, "nonsymmetric"),
                                           ("helmholtz", helmholtz_system, False, "symmetric")):
            count = counts[name]
            data = _family(ctx, name, build, spd, symmetry, N, count)
            figures[name] = data
            base = data["rows"]["scipy independent"]
            table = []
            for label, row in data["rows"].items():
                table.append([label, row["solved"], row["matvecs"], row["time"],
                              base["matvecs"] / row["matvecs"] if row["matvecs"] == row["matvecs"] else "-",
                              base["time"] / row["time"]])
            recycling = f"deflated CG, k = {CG_RECYCLE}, harvest {HARVEST}" if spd else \
                f"GCRO-DR({GCRODR_RESTART}, {RECYCLE})"
            skr = data["rows"]["torchnewton SKR + recycling"]
            amg = data["rows"]["PyAMG (setup + solve)"]
            matvec_ratio, time_ratio = base["matvecs"] / skr["matvecs"], base["time"] / skr["time"]
            met = matvec_ratio >= 3 and time_ratio >= 2 and skr["solved"] == count
            parts.append(f"**{name}**, {count} systems of n = {N * N} unknowns, rtol {RTOL:g} "
                         f"(independent: {INDEPENDENT[data['scipy_method']]}; recycling: {recycling}, systems in SKR order, "
                         f"warm start from the previous one; one thread everywhere; every method solves system i "
                         f"before any moves on, times summed; PyAMG: smoothed aggregation + "
                         f"{'CG' if spd else 'FGMRES'}, a new hierarchy per system, counts its iterations "
                         f"(one V-cycle each), not products)\n\n"
                         + markdown_table(["method", "solved", "matvecs", "time (s)", "matvec ratio vs scipy",
                                           "speed-up vs scipy"], table)
                         + f"\n\nGoal (issue 18: ≥ 3x fewer products and ≥ 2x less time than scipy's independent "
                         f"solves): {matvec_ratio:.2f}x products, {time_ratio:.2f}x time: "
                         f"{'met' if met else 'not met'}. Against PyAMG: SKR + recycling takes "
                         f"{skr['time'] / amg['time']:.2f}x PyAMG's time "
                         f"({'faster' if skr['time'] < amg['time'] else 'PyAMG is faster'}).")
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.plot(skr["per_system_in_order"], label="SKR + recycling (solve order)")
            ax.axhline(data["rows"]["torchnewton independent"]["matvecs"] / count, color="k", ls="--", label="independent (mean)")
            ax.set_xlabel("system (in solve order)")
            ax.set_ylabel("matrix-vector products")
            ax.set_title(f"{name}: products per system")
            ax.legend()
            path = ctx.out_dir / f"linear_skr_{name}.png"
            fig.tight_layout()
            fig.savefig(path)
            plt.close(fig)
            plots.append(path)
    return "\n\n".join(parts), figures, plots
