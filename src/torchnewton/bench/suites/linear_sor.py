"""The "Learning to Relax" SOR sequence (Khodak et al. 2024, ``scripts/learning.m`` of their code):
A_t = L + c_t I, L the 5-point Laplacian of a 10×10 grid (n = 100), c_t = −0.15 + 0.6·Beta(0.5, 1.5),
b_t a radially truncated standard normal (‖b‖ ≤ √n), x₀ = 0, relative residual 1e-8, ω on the
grid of 20 values linspace(1, 1.95), T = 5000 systems (quick mode: 500).

The cost of every ω on every system comes from one batched sweep table
(:func:`~torchnewton.linear.relaxation_table.sor_iteration_table`); each policy plays against it
over several seeds, and a prefix is replayed through real :func:`~torchnewton.linear.sor` solves
(:func:`~torchnewton.linear.solve_sor_sequence`) to check that the table is what the solver does.
Policies: Tsallis-INF with the paper's experimental loss (iterations − 1 over its running mean),
Tsallis-INF with the loss of its regret bound (iterations/maxiter ∈ [0, 1]), ChebCB with context
c_t, against ω = 1, the best fixed ω in hindsight, Young's ω* per system (nearest grid value) and
the instance-optimal grid ω. Regret is reported against T: the ratio to the best fixed ω on each
prefix of the sequence.
"""
from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from ...linear import aslinearoperator, solve_sor_sequence, young_optimal_omega  # noqa: E402
from ...linear.bandit import play_table  # noqa: E402
from ...linear.relaxation_table import sor_iteration_table  # noqa: E402
from ..suite import BenchContext, markdown_table, torch_threads  # noqa: E402

RTOL = 1e-8
MAXITER = 5000
GRID_SIZE = 10
GRID = [float(w) for w in np.linspace(1.0, 1.95, 20)]


def paper_sequence(count: int, seed: int, grid_size: int = GRID_SIZE) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(A (T, n, n), b (T, n), shifts c_t) of the paper's high-variance shifted-Laplacian sequence."""
    rng = np.random.default_rng(seed)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(grid_size, grid_size))
    L = (sp.kron(sp.eye(grid_size), T) + sp.kron(T, sp.eye(grid_size))).toarray()
    n = grid_size**2
    shifts = -0.15 + 0.6 * rng.beta(0.5, 1.5, count)
    rhs = np.empty((0, n))
    while len(rhs) < count:  # rejection sampling of the radially truncated normal
        draw = rng.standard_normal((2 * count, n))
        rhs = np.concatenate([rhs, draw[np.linalg.norm(draw, axis=1) <= np.sqrt(n)]])
    A = torch.from_numpy(L[None] + shifts[:, None, None] * np.eye(n)[None])
    return A, torch.from_numpy(rhs[:count]), shifts


def run_sor(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    count, seeds = (500, 3) if ctx.quick else (5000, 10)
    A, b, shifts = paper_sequence(count, ctx.seed)
    with torch_threads(1):
        table = sor_iteration_table(A, b, GRID, rtol=RTOL, maxiter=MAXITER).numpy()
        prefix = 20  # the table is what the solver does: replay a prefix with the bandit through real solves
        systems = [(aslinearoperator(A[t]), b[t]) for t in range(prefix)]
        replay = solve_sor_sequence(systems, omega="bandit", grid=GRID, rtol=RTOL, maxiter=MAXITER, seed=ctx.seed)
        arms_played, _ = play_table(table[:prefix], seed=ctx.seed)
        consistent = replay.iterations == [int(table[t, a]) for t, a in enumerate(arms_played)]
    policies = {
        "Tsallis-INF (loss: iterations − 1 over its running mean; the paper's experiments)":
            [play_table(table, seed=ctx.seed + s)[1] for s in range(seeds)],
        "Tsallis-INF (loss: iterations / maxiter ∈ [0, 1]; the regret bound's setting)":
            [play_table(table, seed=ctx.seed + s, normalization="maxiter", maxiter=MAXITER)[1] for s in range(seeds)],
        "ChebCB contextual bandit (context c_t)":
            [play_table(table, omega="contextual", contexts=list(shifts), seed=ctx.seed + s)[1] for s in range(seeds)],
    }
    costs = {name: np.array(runs, dtype=float) for name, runs in policies.items()}  # (seeds, T)
    # Jacobi radius of L + cI (diagonal 4 + c): 4cos(π/(N+1))/(4 + c); natural order is consistently ordered
    young = [young_optimal_omega(4 * np.cos(np.pi / (GRID_SIZE + 1)) / (4 + c)) for c in shifts]
    young_arm = np.abs(np.array(GRID)[None] - np.array(young)[:, None]).argmin(1)
    rows_t = np.arange(count)
    fixed_best_arm = int(table.sum(0).argmin())
    references = {f"best fixed ω in hindsight ({GRID[fixed_best_arm]:.2f})": table[:, fixed_best_arm],
                  "ω = 1 (Gauss–Seidel)": table[:, 0],
                  "Young's ω* per system (nearest grid ω)": table[rows_t, young_arm],
                  "instance-optimal grid ω (oracle)": table.min(1)}
    horizons = [h for h in (100, 300, 1000, 3000) if h < count] + [count]
    best_prefix = {h: float(table[:h].sum(0).min()) for h in horizons}  # best fixed ω of each prefix

    def ratios(per_seed: np.ndarray) -> list[float]:
        return [float(per_seed[:, :h].sum(1).mean() / best_prefix[h]) for h in horizons]

    best = best_prefix[count]
    rows, figures = [], {"horizons": horizons, "policies": {}}
    for name, c in costs.items():
        total = c.sum(1)
        r = ratios(c)
        rows.append([name, f"{total.mean():.0f} ± {total.std():.0f}", *[f"{x:.3f}" for x in r]])
        figures["policies"][name] = {"total_mean": float(total.mean()), "total_std": float(total.std()),
                                     "ratio_vs_best_fixed_by_T": r}
    for name, c in references.items():
        r = ratios(c[None].astype(float))
        rows.append([name, f"{c.sum():.0f}", *[f"{x:.3f}" for x in r]])
        figures["policies"][name] = {"total_mean": float(c.sum()), "ratio_vs_best_fixed_by_T": r}
    paper_name = next(iter(costs))
    verdict = figures["policies"][paper_name]["ratio_vs_best_fixed_by_T"][-1]
    markdown = (f"**SOR sequence** (Khodak et al.'s setting: {count} systems L + cI, L the 5-point Laplacian "
                f"on {GRID_SIZE}×{GRID_SIZE} (n = {GRID_SIZE**2}), c = −0.15 + 0.6·Beta(0.5, 1.5), b truncated "
                f"normal, rtol {RTOL:g}, {len(GRID)} arms ω ∈ linspace(1, 1.95); "
                + ("quick mode: 500 systems, the paper's T is 5000; " if ctx.quick else "")
                + f"bandits mean ± std over {seeds} seeds on one sequence). Columns T = …: total iterations "
                f"of the first T systems over those of the best fixed ω for those T systems (1 = no regret). "
                f"Goal: Tsallis-INF within 10% of the best fixed ω — measured {verdict:.3f} at T = {count} "
                f"({'met' if verdict <= 1.1 else 'not met'}). Table replay matches real SOR solves: {consistent}.\n\n"
                + markdown_table(["policy", f"total iterations (T = {count})", *[f"T = {h}" for h in horizons]], rows))
    fig, (ax, ratio_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    t = np.arange(1, count + 1)
    best_running = np.cumsum(table[:, fixed_best_arm])
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])  # one colour per policy in both panels
    for name, c in costs.items():
        label, color = name.split(" (")[0] + (" (losses / maxiter)" if "maxiter" in name else ""), next(colors)
        running = np.cumsum(c.mean(0))
        ax.plot(t, running / t, label=label, color=color)
        ratio_ax.plot(t, running / best_running, label=label, color=color)
    for name, c in references.items():
        color = next(colors)
        ax.plot(t, np.cumsum(c) / t, linestyle="--", label=name, color=color)
        if "best fixed" not in name:
            ratio_ax.plot(t, np.cumsum(c) / best_running, linestyle="--", label=name, color=color)
    ratio_ax.axhline(1.1, color="gray", linewidth=0.8, label="goal: 1.1x the best fixed ω")
    for axis in (ax, ratio_ax):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("system t")
        axis.legend(fontsize=7)
    ax.set_ylabel("average iterations per system so far")
    ratio_ax.set_ylabel(f"iterations so far / those of ω = {GRID[fixed_best_arm]:.2f}")
    path = ctx.out_dir / "linear_sor_regret.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    figures.update({"best_fixed_omega": GRID[fixed_best_arm], "best_fixed_total": best, "grid": GRID,
                    "n": GRID_SIZE**2, "systems": count, "seeds": seeds, "table_matches_solver": bool(consistent),
                    "tsallis_inf_ratio": verdict})
    return markdown, figures, [path]
