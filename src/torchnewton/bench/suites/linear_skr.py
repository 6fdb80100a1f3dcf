"""SKR data generation: many PDE systems solved independently (scipy, torchnewton, PyAMG) and in
SKR order with Krylov recycling (torchnewton.linear.RecyclingSolver).

Three families (:mod:`.linear_pde`): Darcy flow (SPD: CG; recycling by deflated CG),
convection–diffusion (nonsymmetric: GMRES(40); GCRO-DR) and Helmholtz (symmetric indefinite:
scipy's LGMRES and a fresh GCRO-DR per system, since GMRES(40) stalls for ~10⁵ products at
n = 128²; recycling by GCRO-DR). PyAMG builds a smoothed-aggregation hierarchy per system and
accelerates it with CG (Darcy) or FGMRES (the others: right-preconditioned, so its stopping
test is on the true residual; its left-preconditioned GMRES stops on ‖M⁻¹r‖ and misses 1e-8 on
the true one).

Preconditioned rows compare like with like: one V-cycle of the same hierarchy as M for scipy's
CG/GMRES(40), for torchnewton's recycling solvers and for PyAMG's own Krylov loop, with a new
hierarchy per system or with one reused across SKR neighbours
(:class:`~torchnewton.linear.recycling.ReusedPreconditioner`, the same rule for all three).
Times are process CPU times (one thread), so load from other processes inflates them less than
wall time. Quick mode: 12/10/10 systems of n = 40²; full mode: 100/60/60 of n = 128².

Why unpreconditioned recycling falls short of the issue's goal (≥ 3x fewer products, ≥ 2x less
time) on Darcy and convection–diffusion, measured at n = 128² (one thread, a loaded machine):

* Darcy (independent random coefficient fields): even deflating *exact* eigenvectors, recomputed
  by ``eigsh``, caps the saving. Over 5 systems in SKR order (products include the k per system
  that form A W): no deflation 3643; the previous system's k = 20 / 60 / 120 smallest
  eigenvectors 2208 / 1949 / 1967 (1.65x / 1.87x / 1.85x); the *current* system's own (a bound no
  recycling can beat) 2021 / 1708 / 1732 (≤ 2.1x); a deflated start only (init-CG) with the
  previous system's eigenvectors 3634 / 3782 / 3989 (no gain: its subspace is not invariant under
  the new A). A (k, n) projection per iteration reads two k × n blocks from memory: at k = 10
  about 2 sparse 5-point products' time, at k = 30 about 5 (out of cache), and storing them in
  float32 loses A-conjugacy (CG stagnates). So the 1.2–1.8x fewer products of k = 10–40 cost
  more time than they save.
* Convection–diffusion (60 systems): GCRO-DR(m, k) = (60, 20) / (80, 30) / (100, 40) / (120, 60)
  take 1.38 / 1.58 / 1.73 / 1.88x fewer products than GMRES(40) at 0.92 / 0.85 / 0.81 / 0.71x its
  time; (40, 10) / (50, 10) / (60, 10) 1.08–1.10x at 0.85–0.93x. Each Arnoldi step is also
  orthogonalized against the k vectors of C, and each cycle's harmonic Ritz update costs about a
  third of the cycle, so a product costs ~1.4x one of GMRES(40).
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

from ...linear import Preconditioner, RecyclingSolver, aslinearoperator, skr_order  # noqa: E402
from ...linear.recycling import ReusedPreconditioner  # noqa: E402
from ...linear.iterative import cg, gmres  # noqa: E402
from ..suite import BenchContext, markdown_table, torch_threads  # noqa: E402
from .linear_pde import convection_diffusion_system, darcy_system, helmholtz_system  # noqa: E402

RTOL = 1e-8
RESTART = 40  # scipy's and torchnewton's independent GMRES
LGMRES_INNER = 30  # scipy's LGMRES(30, 3) for Helmholtz, where GMRES(40) stalls (~10⁵ products at n = 128²)
RECYCLE = 20       # GCRO-DR's recycled dimension k
CG_RECYCLE = 10    # deflated CG: each iteration costs two (k, n) products, ~2 sparse products' time at k = 10
HARVEST = 40  # CG directions kept for the Ritz refresh of the recycled space
GCRODR_RESTART = 60
# with an AMG V-cycle as M the solves take ~10 iterations: a small recycled space (re-projecting
# k vectors costs k products per system) and a short restart
PRECONDITIONED_RECYCLE = 5
PRECONDITIONED_RESTART = 30
REBUILD_GROWTH = 2.0
FAMILIES = ("darcy", "convection_diffusion", "helmholtz")  # rebuild a reused hierarchy after a solve that took twice its first count


INDEPENDENT = {"cg": "CG on both sides",
               "gmres": f"GMRES({RESTART}) on both sides",
               "lgmres": f"scipy LGMRES({LGMRES_INNER}, 3), torchnewton GCRO-DR({GCRODR_RESTART}, {RECYCLE}) "
                         f"started afresh for every system (deflated restarts only); GMRES({RESTART}) stalls here"}


def _scipy(A, b, method: str, M=None) -> tuple[int, int, bool]:
    """scipy's solver for the family; products with A (and applications of M) counted by
    wrapping them (the callbacks count iterations, which for LGMRES are outer cycles)."""
    count, cycles = [0], [0]

    def product(v: np.ndarray) -> np.ndarray:
        count[0] += 1
        return A @ v

    def precondition(v: np.ndarray) -> np.ndarray:
        cycles[0] += 1
        return M.matvec(v)
    operator = spla.LinearOperator(A.shape, matvec=product, dtype=A.dtype)
    P = None if M is None else spla.LinearOperator(A.shape, matvec=precondition, dtype=A.dtype)
    if method == "cg":
        x, info = spla.cg(operator, b, rtol=RTOL, maxiter=20 * A.shape[0], M=P)
    elif method == "gmres":
        x, info = spla.gmres(operator, b, rtol=RTOL, restart=RESTART, maxiter=20 * A.shape[0], M=P)
    else:
        x, info = spla.lgmres(operator, b, rtol=RTOL, inner_m=LGMRES_INNER, outer_k=3, maxiter=20 * A.shape[0])
    ok = np.linalg.norm(b - A @ x) <= 1.0001 * RTOL * np.linalg.norm(b)
    return count[0], cycles[0], bool(ok)


def _hierarchy(A, symmetry: str):
    return pyamg.smoothed_aggregation_solver(A, symmetry=symmetry)


def _amg_solve(hierarchy, A, b, spd: bool) -> tuple[int, bool]:
    """PyAMG's own accelerated solve (what ``hierarchy.solve(b, accel=...)`` runs), with A passed
    explicitly: ``hierarchy.solve`` would solve the hierarchy's own matrix, not a neighbour's."""
    residuals: list[float] = []
    accelerate = pyamg.krylov.cg if spd else pyamg.krylov.fgmres
    x, _ = accelerate(A, b, x0=np.zeros_like(b), tol=RTOL, maxiter=500, M=hierarchy.aspreconditioner(cycle="V"),
                      residuals=residuals)
    return len(residuals) - 1, bool(np.linalg.norm(b - A @ x) <= 1.0001 * RTOL * np.linalg.norm(b))


def _as_torch(hierarchy) -> Preconditioner:
    """One V-cycle of a PyAMG hierarchy as M⁻¹ on torch tensors: the very M that scipy gets."""
    cycle = hierarchy.aspreconditioner(cycle="V")

    def apply(X: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([cycle.matvec(row) for row in X.numpy()]))
    return Preconditioner(apply, hierarchy.levels[0].A.shape[0], "amg")


UNPRECONDITIONED = ["scipy independent", "torchnewton independent", "PyAMG (setup + solve)",
                    "torchnewton SKR + recycling"]
PRECONDITIONED = ["scipy + AMG (new per system)", "torchnewton SKR + recycling + AMG (new per system)",
                  "scipy + AMG (reused)", "torchnewton SKR + recycling + AMG (reused)", "PyAMG (reused hierarchy)"]


def _family(ctx: BenchContext, name: str, build, spd: bool, symmetry: str, N: int, count: int) -> dict[str, Any]:
    """Every method solves system i in turn before any moves on (interleaved, so that load from
    other processes falls on all of them alike); times (process CPU time) are summed per method."""
    rng = np.random.default_rng(ctx.seed)
    raw = [build(N, rng) for _ in range(count)]
    systems = [(aslinearoperator(A), torch.from_numpy(b)) for A, b, _ in raw]
    features = torch.from_numpy(np.stack([f for _, _, f in raw]))
    # the k = 0 ablation (SKR order and warm start alone) in full mode, and not for Helmholtz, where
    # restarted GMRES stalls (~10⁵ products at n = 128²)
    ablate = not ctx.quick and (spd or symmetry == "nonsymmetric")
    labels = UNPRECONDITIONED + (["torchnewton SKR, no recycling (k = 0)"] if ablate else []) + \
        (["torchnewton recycling, given order"] if ctx.quick else []) + PRECONDITIONED
    rows: dict[str, dict[str, Any]] = {label: {"time": 0.0, "matvecs": 0, "cycles": 0, "solved": 0} for label in labels}
    for label in ("PyAMG (setup + solve)", "PyAMG (reused hierarchy)"):
        rows[label]["matvecs"] = float("nan")
    for label in labels:
        if label not in PRECONDITIONED and not label.startswith("PyAMG"):
            rows[label]["cycles"] = float("nan")

    def make(k: int | None = None, restart: int = GCRODR_RESTART) -> RecyclingSolver:
        k = (CG_RECYCLE if spd else RECYCLE) if k is None else k
        return RecyclingSolver("cg" if spd else "gcrodr", recycle=k, rtol=RTOL, harvest=HARVEST if k else 0,
                               restart=max(restart, k + 1))
    skr, given, fresh, plain = make(), make(), make(), make(0, RESTART)
    amg_new = make(PRECONDITIONED_RECYCLE, PRECONDITIONED_RESTART)
    amg_reused = make(PRECONDITIONED_RECYCLE, PRECONDITIONED_RESTART)
    schedules = {label: ReusedPreconditioner(lambda A: _hierarchy(A, symmetry), growth=REBUILD_GROWTH)
                 for label in PRECONDITIONED[2:]}
    schedules[PRECONDITIONED[3]] = ReusedPreconditioner(lambda A: _as_torch(_hierarchy(A, symmetry)),
                                                        growth=REBUILD_GROWTH)
    scipy_method = "cg" if spd else "gmres" if symmetry == "nonsymmetric" else "lgmres"
    preconditioned_method = "cg" if spd else "gmres"
    clock = time.process_time
    start = clock()
    order = skr_order(features.reshape(count, -1))
    for label in labels:
        if "SKR" in label:
            rows[label]["time"] += clock() - start
    per_system = [0] * count

    def add(label: str, begin: float, matvecs: float, ok: bool, cycles: float = 0) -> None:
        rows[label]["time"] += clock() - begin
        rows[label]["matvecs"] += matvecs
        rows[label]["cycles"] += cycles
        rows[label]["solved"] += int(ok)
    for step, index in enumerate(ctx.track(order, desc=f"linear skr {name}")):
        (A, b, _), (op, bt) = raw[index], systems[index]
        begin = clock()
        matvecs, _, ok = _scipy(A, b, scipy_method)
        add("scipy independent", begin, matvecs, ok)
        begin = clock()
        if scipy_method == "lgmres":  # GCRO-DR with its subspace reset: deflated restarts only
            fresh.reset()
            result = fresh.solve(op, bt)
        else:
            result = cg(op, bt, rtol=RTOL, maxiter=20 * N * N) if spd else \
                gmres(op, bt, rtol=RTOL, restart=RESTART, maxiter=20 * N * N)
        add("torchnewton independent", begin, result.nmatvec, result.success)
        # one hierarchy per system shared by the three "new per system" rows, its setup charged to each
        begin = clock()
        hierarchy = _hierarchy(A, symmetry)
        setup = clock() - begin
        begin = clock() - setup
        cycles, ok = _amg_solve(hierarchy, A, b, spd)
        add("PyAMG (setup + solve)", begin, float("nan"), ok, cycles)
        begin = clock() - setup
        matvecs, cycles, ok = _scipy(A, b, preconditioned_method, hierarchy.aspreconditioner(cycle="V"))
        add(PRECONDITIONED[0], begin, matvecs, ok, cycles)
        begin = clock() - setup
        result = amg_new.solve(op, bt, M=_as_torch(hierarchy))
        add(PRECONDITIONED[1], begin, result.nmatvec, result.success, result.nprecond)
        begin = clock()
        result = skr.solve(op, bt)  # warm start: the previous solution, its SKR neighbour
        add("torchnewton SKR + recycling", begin, result.nmatvec, result.success)
        per_system[step] = result.nmatvec
        if ablate:
            begin = clock()
            result = plain.solve(op, bt)
            add("torchnewton SKR, no recycling (k = 0)", begin, result.nmatvec, result.success)
        # the hierarchy of an earlier SKR neighbour, rebuilt when iterations grow REBUILD_GROWTH-fold
        begin = clock()
        schedule = schedules[PRECONDITIONED[2]]
        matvecs, cycles, ok = _scipy(A, b, preconditioned_method, schedule(A).aspreconditioner(cycle="V"))
        schedule.record(cycles)
        add(PRECONDITIONED[2], begin, matvecs, ok, cycles)
        begin = clock()
        schedule = schedules[PRECONDITIONED[3]]
        result = amg_reused.solve(op, bt, M=schedule(A))
        schedule.record(result.nit)
        add(PRECONDITIONED[3], begin, result.nmatvec, result.success, result.nprecond)
        begin = clock()
        schedule = schedules[PRECONDITIONED[4]]
        cycles, ok = _amg_solve(schedule(A), A, b, spd)
        schedule.record(cycles)
        add(PRECONDITIONED[4], begin, float("nan"), ok, cycles)
        if ctx.quick:  # the ablation: recycling in the generated order
            begin = clock()
            result = given.solve(*systems[step])
            add("torchnewton recycling, given order", begin, result.nmatvec, result.success)
    rows["torchnewton SKR + recycling"]["per_system_in_order"] = per_system
    for label in PRECONDITIONED[2:]:
        rows[label]["hierarchies"] = schedules[label].builds
    return {"N": N, "n": N * N, "systems": count, "rows": rows, "order": order, "scipy_method": scipy_method}


def run_skr(ctx: BenchContext, families: tuple[str, ...] = FAMILIES) -> tuple[str, dict[str, Any], list]:
    """The SKR tables and plots for ``families`` (a subset of ``FAMILIES``, all by default)."""
    from threadpoolctl import threadpool_limits

    N, counts = (40, {"darcy": 12, "convection_diffusion": 10, "helmholtz": 10}) if ctx.quick else \
        (128, {"darcy": 100, "convection_diffusion": 60, "helmholtz": 60})
    figures: dict[str, Any] = {}
    parts = []
    plots = []
    # one thread for torch and for numpy/scipy's BLAS alike: a like-for-like comparison
    with torch_threads(1), threadpool_limits(1):
        for name, build, spd, symmetry in (("darcy", darcy_system, True, "symmetric"),
                                           ("convection_diffusion", convection_diffusion_system, False, "nonsymmetric"),
                                           ("helmholtz", helmholtz_system, False, "symmetric")):
            if name not in families:
                continue
            count = counts[name]
            data = _family(ctx, name, build, spd, symmetry, N, count)
            figures[name] = data
            rows = data["rows"]
            base = rows["scipy independent"]
            table = []
            for label, row in rows.items():
                reference = rows[PRECONDITIONED[0]] if label in PRECONDITIONED else base
                table.append([label, row["solved"], row["matvecs"], row["cycles"], row["time"],
                              reference["matvecs"] / row["matvecs"] if row["matvecs"] == row["matvecs"] else "-",
                              reference["time"] / row["time"], rows["PyAMG (setup + solve)"]["time"] / row["time"]])
            recycling = f"deflated CG, k = {CG_RECYCLE}, harvest {HARVEST}" if spd else \
                f"GCRO-DR({GCRODR_RESTART}, {RECYCLE})"
            skr = rows["torchnewton SKR + recycling"]
            amg = rows["PyAMG (setup + solve)"]
            matvec_ratio, time_ratio = base["matvecs"] / skr["matvecs"], base["time"] / skr["time"]
            met = matvec_ratio >= 3 and time_ratio >= 2 and skr["solved"] == count
            with_amg = {label: rows[label] for label in PRECONDITIONED[1::2]}
            best = min(with_amg, key=lambda label: with_amg[label]["time"])
            krylov = "CG" if spd else f"GMRES({RESTART})"
            ours = f"deflated CG, k = {PRECONDITIONED_RECYCLE}" if spd else \
                f"GCRO-DR({PRECONDITIONED_RESTART}, {PRECONDITIONED_RECYCLE})"
            parts.append(f"**{name}**, {count} systems of n = {N * N} unknowns, rtol {RTOL:g} "
                         f"(independent: {INDEPENDENT[data['scipy_method']]}; recycling: {recycling}, systems in SKR order, "
                         f"warm start from the previous one; one thread everywhere; every method solves system i "
                         f"before any moves on, process CPU times summed; PyAMG: smoothed aggregation + "
                         f"{'CG' if spd else 'FGMRES'}, counts its iterations (one V-cycle each), not products).\n\n"
                         f"Preconditioned rows: M = one V-cycle of the same smoothed-aggregation hierarchy for scipy "
                         f"({krylov}), torchnewton ({ours}, SKR order, warm start) and PyAMG; \"new per system\": one "
                         f"hierarchy per system, its setup time charged to each of the three rows; \"reused\": each "
                         f"method keeps the hierarchy of an earlier SKR neighbour and rebuilds it after a solve that "
                         f"took more than {REBUILD_GROWTH:g}x the iterations of its first solve "
                         f"(hierarchies built: scipy {rows[PRECONDITIONED[2]]['hierarchies']}, torchnewton "
                         f"{rows[PRECONDITIONED[3]]['hierarchies']}, PyAMG {rows[PRECONDITIONED[4]]['hierarchies']}). "
                         f"Ratios of preconditioned rows are against scipy + AMG (new per system); the others against "
                         f"scipy independent.\n\n"
                         + markdown_table(["method", "solved", "matvecs", "V-cycles", "CPU time (s)",
                                           "matvec ratio vs scipy", "speed-up vs scipy", "speed-up vs PyAMG"], table)
                         + f"\n\nGoal (issue 18: ≥ 3x fewer products and ≥ 2x less time than scipy's independent "
                         f"solves): {matvec_ratio:.2f}x products, {time_ratio:.2f}x time: "
                         f"{'met' if met else 'not met'}. Against PyAMG: unpreconditioned SKR + recycling takes "
                         f"{skr['time'] / amg['time']:.2f}x PyAMG's time; the fastest torchnewton row with AMG "
                         f"({best}) takes {with_amg[best]['time'] / amg['time']:.2f}x PyAMG's time and "
                         f"{with_amg[best]['time'] / rows[PRECONDITIONED[4]]['time']:.2f}x that of PyAMG with its "
                         f"hierarchy reused by the same rule "
                         f"({'faster than both' if with_amg[best]['time'] < min(amg['time'], rows[PRECONDITIONED[4]]['time']) else 'PyAMG is faster'}).")
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.plot(skr["per_system_in_order"], label="SKR + recycling (solve order)")
            ax.axhline(rows["torchnewton independent"]["matvecs"] / count, color="k", ls="--", label="independent (mean)")
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
