"""SKR data generation: many PDE systems solved independently (scipy, torchnewton, PyAMG) and in
SKR order with Krylov recycling (torchnewton.linear.RecyclingSolver)."""
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

from ...linear import RecyclingSolver, aslinearoperator  # noqa: E402
from ...linear.iterative import cg, gmres  # noqa: E402
from ..suite import BenchContext, markdown_table, torch_threads  # noqa: E402
from .linear_pde import convection_diffusion_system, darcy_system  # noqa: E402

RTOL = 1e-8
RESTART = 40  # scipy's and torchnewton's independent GMRES
RECYCLE = 20
HARVEST = 40  # CG directions kept for the Ritz refresh of the recycled space
GCRODR_RESTART = 60


def _scipy(A, b, symmetric: bool) -> tuple[int, bool]:
    count = [0]

    def tick(_: Any) -> None:
        count[0] += 1
    if symmetric:
        x, info = spla.cg(A, b, rtol=RTOL, maxiter=20 * A.shape[0], callback=tick)
    else:
        x, info = spla.gmres(A, b, rtol=RTOL, restart=RESTART, maxiter=20 * A.shape[0], callback=tick,
                             callback_type="pr_norm")
    ok = np.linalg.norm(b - A @ x) <= 1.0001 * RTOL * np.linalg.norm(b)
    return count[0], bool(ok)


def _family(ctx: BenchContext, name: str, build, symmetric: bool, N: int, count: int) -> dict[str, Any]:
    rng = np.random.default_rng(ctx.seed)
    raw = [build(N, rng) for _ in range(count)]
    systems = [(aslinearoperator(A), torch.from_numpy(b)) for A, b, _ in raw]
    features = torch.from_numpy(np.stack([f for _, _, f in raw]))
    rows: dict[str, dict[str, float]] = {}

    start = time.perf_counter()
    counts = [_scipy(A, b, symmetric) for A, b, _ in ctx.track(raw, desc=f"{name} scipy")]
    rows["scipy independent"] = {"time": time.perf_counter() - start, "matvecs": sum(c for c, _ in counts),
                                 "solved": sum(ok for _, ok in counts)}
    start = time.perf_counter()
    results = [cg(op, b, rtol=RTOL, maxiter=20 * b.shape[0]) if symmetric else
               gmres(op, b, rtol=RTOL, restart=RESTART, maxiter=20 * b.shape[0]) for op, b in systems]
    rows["torchnewton independent"] = {"time": time.perf_counter() - start,
                                       "matvecs": sum(r.nmatvec for r in results), "solved": sum(r.success for r in results)}
    start = time.perf_counter()
    amg_iterations, amg_ok = 0, 0
    for A, b, _ in raw:
        residuals: list[float] = []
        hierarchy = pyamg.smoothed_aggregation_solver(A, symmetry="symmetric" if symmetric else "nonsymmetric")
        x = hierarchy.solve(b, tol=RTOL, accel="cg" if symmetric else "gmres", residuals=residuals, maxiter=500)
        amg_iterations += len(residuals) - 1
        amg_ok += bool(np.linalg.norm(b - A @ x) <= 1.0001 * RTOL * np.linalg.norm(b))
    rows["PyAMG (setup + solve)"] = {"time": time.perf_counter() - start, "matvecs": float("nan"),
                                     "solved": amg_ok, "cycles": amg_iterations}
    orders = (("torchnewton recycling, given order", "given"),) if ctx.quick else ()
    for label, order in orders + (("torchnewton SKR + recycling", "skr"),):
        solver = RecyclingSolver("cg" if symmetric else "gcrodr", recycle=RECYCLE, rtol=RTOL, harvest=HARVEST,
                                 restart=GCRODR_RESTART)
        start = time.perf_counter()
        results = solver.solve_sequence(systems, order=order, features=features)
        rows[label] = {"time": time.perf_counter() - start, "matvecs": sum(r.nmatvec for r in results),
                       "solved": sum(r.success for r in results),
                       "per_system": [r.nmatvec for r in results], "order": solver.order}
    return {"N": N, "n": N * N, "systems": count, "rows": rows}


def run_skr(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    from threadpoolctl import threadpool_limits

    N, counts = (48, {"darcy": 24, "convection_diffusion": 16}) if ctx.quick else \
        (100, {"darcy": 200, "convection_diffusion": 100})
    figures: dict[str, Any] = {}
    parts = []
    plots = []
    # one thread for torch and for numpy/scipy's BLAS alike: a like-for-like comparison
    with torch_threads(1), threadpool_limits(1):
        for name, build, symmetric in (("darcy", darcy_system, True),
                                       ("convection_diffusion", convection_diffusion_system, False)):
            count = counts[name]
            data = _family(ctx, name, build, symmetric, N, count)
            figures[name] = data
            base = data["rows"]["scipy independent"]
            table = []
            for label, row in data["rows"].items():
                table.append([label, row["solved"], row["matvecs"], row["time"],
                              base["matvecs"] / row["matvecs"] if row["matvecs"] == row["matvecs"] else "-",
                              base["time"] / row["time"]])
            parts.append(f"**{name}**, {count} systems of n = {N * N} unknowns, rtol {RTOL:g} "
                         f"({'CG' if symmetric else f'GMRES({RESTART})'}; recycling: {'deflated CG, harvest ' + str(HARVEST) if symmetric else f'GCRO-DR({GCRODR_RESTART}, k)'}, k = {RECYCLE}, warm start from the nearest solved system; one thread everywhere; PyAMG counts V-cycles, not products)\n\n"
                         + markdown_table(["method", "solved", "matvecs", "time (s)", "matvec ratio vs scipy",
                                           "speed-up vs scipy"], table))
            skr = data["rows"]["torchnewton SKR + recycling"]
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.plot([skr["per_system"][i] for i in skr["order"]], label="SKR + recycling (solve order)")
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
