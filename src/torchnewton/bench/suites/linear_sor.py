"""The "Learning to Relax" SOR sequence (Khodak et al. 2024, their setup): A_t = L + c_t I, L the
5-point Laplacian of an N×N grid, c_t = −0.15 + 0.6·Beta(0.5, 1.5), b_t standard normal, rtol
1e-8, a grid of ⌊(2T)^{1/3}⌋ values of ω in [1, 1.9]. The cost of every ω on every system comes
from one batched sweep table (:func:`~torchnewton.linear.relaxation_table.sor_iteration_table`);
the bandits (Tsallis-INF, and ChebCB with context c_t) play against it over several seeds, and a
prefix is replayed through :func:`~torchnewton.linear.solve_sor_sequence` to check that the table
is what the solver does."""
from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from ...linear import aslinearoperator, regret, solve_sor_sequence, young_optimal_omega  # noqa: E402
from ...linear.bandit import play_table  # noqa: E402
from ...linear.relaxation_table import sor_iteration_table  # noqa: E402
from ..suite import BenchContext, markdown_table, torch_threads  # noqa: E402

RTOL = 1e-8
MAXITER = 5000
SEEDS = 5


def run_sor(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    N, count = (8, 200) if ctx.quick else (10, 600)
    arms = int((2 * count) ** (1 / 3))
    grid = [float(w) for w in np.linspace(1.0, 1.9, arms)]
    rng = np.random.default_rng(ctx.seed)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N))
    L = (sp.kron(sp.eye(N), T) + sp.kron(T, sp.eye(N))).toarray()
    shifts = -0.15 + 0.6 * rng.beta(0.5, 1.5, count)
    rhs = rng.standard_normal((count, N * N))
    A = torch.from_numpy(L[None] + shifts[:, None, None] * np.eye(N * N)[None])
    b = torch.from_numpy(rhs)
    with torch_threads(1):
        table = sor_iteration_table(A, b, grid, rtol=RTOL, maxiter=MAXITER).numpy()
        # the table is what the solver does: replay a prefix with the bandit through real SOR solves
        prefix = 20
        systems = [(aslinearoperator(A[t]), b[t]) for t in range(prefix)]
        replay = solve_sor_sequence(systems, omega="bandit", grid=grid, rtol=RTOL, maxiter=MAXITER, seed=ctx.seed)
        arms_played, _ = play_table(table[:prefix], seed=ctx.seed)
        consistent = replay.iterations == [int(table[t, a]) for t, a in enumerate(arms_played)]
    runs = {"bandit": [play_table(table, seed=ctx.seed + s)[1] for s in range(SEEDS)],
            "contextual": [play_table(table, omega="contextual", contexts=list(shifts), seed=ctx.seed + s)[1]
                           for s in range(SEEDS)]}
    fixed = table.sum(axis=0)
    best_arm = int(np.argmin(fixed))
    best = float(fixed[best_arm])
    # Jacobi radius of L + cI (diagonal 4 + c): 4cos(π/(N+1))/(4 + c); natural order is consistently ordered
    young = [young_optimal_omega(4 * np.cos(np.pi / (N + 1)) / (4 + c)) for c in shifts]
    young_arm = [int(np.argmin(np.abs(np.array(grid) - w))) for w in young]
    young_total = float(sum(table[t, a] for t, a in enumerate(young_arm)))
    totals = {name: np.array([sum(costs) for costs in r]) for name, r in runs.items()}
    rows = [["Tsallis-INF bandit (iteration counts only)", f"{totals['bandit'].mean():.0f} ± {totals['bandit'].std():.0f}",
             totals["bandit"].mean() / best],
            ["ChebCB contextual bandit (context c)", f"{totals['contextual'].mean():.0f} ± {totals['contextual'].std():.0f}",
             totals["contextual"].mean() / best],
            [f"best fixed ω in hindsight ({grid[best_arm]:.3f})", best, 1.0],
            ["ω = 1 (Gauss–Seidel)", float(fixed[0]), float(fixed[0]) / best],
            ["Young's ω* per system (nearest grid ω)", young_total, young_total / best],
            ["instance-optimal grid ω (oracle)", float(table.min(axis=1).sum()), float(table.min(axis=1).sum()) / best]]
    markdown = (f"**SOR sequence** ({count} systems L + cI, c = −0.15 + 0.6·Beta(0.5, 1.5), n = {N * N}, "
                f"rtol {RTOL:g}, {arms} arms ω ∈ [1, 1.9]; bandits mean ± std over {SEEDS} seeds; goal: "
                f"Tsallis-INF within 10% of the best fixed ω). Table replay matches real SOR solves: {consistent}.\n\n"
                + markdown_table(["policy", "total iterations", "ratio to best fixed"], rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, costs in runs.items():
        ax.plot(np.cumsum(costs[0]) - np.cumsum(table[:, best_arm]), label=name)
    ax.set_xlabel("system")
    ax.set_ylabel("regret vs best fixed ω (iterations)")
    ax.legend()
    path = ctx.out_dir / "linear_sor_regret.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    figures = {"bandit": regret(runs["bandit"][0], table), "contextual": regret(runs["contextual"][0], table),
               "bandit_ratio_mean": float(totals["bandit"].mean() / best),
               "contextual_ratio_mean": float(totals["contextual"].mean() / best),
               "young_total": young_total, "gauss_seidel_total": float(fixed[0]), "grid": grid, "n": N * N,
               "systems": count, "table_matches_solver": bool(consistent)}
    return markdown, figures, [path]
