"""The "Learning to Relax" SOR sequence (Khodak et al. 2024, ``scripts/learning.m`` of their code):
A_t = L + c_t I, L the 5-point Laplacian of a 10×10 grid (n = 100), c_t = −0.15 + 0.6·Beta(0.5, 1.5),
b_t a radially truncated standard normal (‖b‖ ≤ √n), x₀ = 0, relative residual 1e-8, ω on the
grid of 20 values linspace(1, 1.95), T = 5000 systems (quick mode: 500).

The cost of every ω on every system comes from one batched sweep table
(:func:`~torchnewton.linear.relaxation_table.sor_iteration_table`); each policy plays against it
over several seeds, and a prefix is replayed through real :func:`~torchnewton.linear.sor` solves
(:func:`~torchnewton.linear.solve_sor_sequence`) to check that the table is what the solver does.
Seed s plays the systems in a random order drawn from s (seed 0: as generated) — the systems are
i.i.d., so each order is another draw of the sequence — and every ratio is taken against the best
fixed ω of that order's first T systems.

Policies: unimodal Thompson sampling (the default of ``omega="bandit"``), Tsallis-INF with the
paper's experimental loss (iterations − 1 over its running mean) and with the loss of its regret
bound (iterations/maxiter ∈ [0, 1]), ChebCB with context c_t, against ω = 1, the best fixed ω in
hindsight, Young's ω* per system (nearest grid value) and the instance-optimal grid ω. In full
mode the two non-contextual bandits also play other sequences of the class (grid sizes 8–16,
other shift distributions, a two-material diffusion family), so that the default is not tuned to
one instance.
"""
from __future__ import annotations

from typing import Any, Callable

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
UNIMODAL = "unimodal Thompson sampling (default of omega='bandit')"
TSALLIS = "Tsallis-INF (loss: iterations − 1 over its running mean; the paper's experiments)"


def laplacian(grid_size: int) -> np.ndarray:
    """The 5-point Laplacian of a grid_size × grid_size interior grid (natural order), dense."""
    line = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(grid_size, grid_size))
    return (sp.kron(sp.eye(grid_size), line) + sp.kron(line, sp.eye(grid_size))).toarray()


def truncated_normal_rhs(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """``count`` standard normal vectors of R^n conditioned on ‖b‖ ≤ √n (rejection sampling)."""
    rhs = np.empty((0, n))
    while len(rhs) < count:
        draw = rng.standard_normal((2 * count, n))
        rhs = np.concatenate([rhs, draw[np.linalg.norm(draw, axis=1) <= np.sqrt(n)]])
    return rhs[:count]


def shifted_sequence(shifts: np.ndarray, rng: np.random.Generator,
                     grid_size: int = GRID_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (T, n, n), b (T, n)): A_t = L + c_t I with truncated-normal right-hand sides."""
    L, n = laplacian(grid_size), grid_size**2
    rhs = truncated_normal_rhs(rng, len(shifts), n)
    return torch.from_numpy(L[None] + shifts[:, None, None] * np.eye(n)[None]), torch.from_numpy(rhs)


def paper_sequence(count: int, seed: int, grid_size: int = GRID_SIZE) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(A (T, n, n), b (T, n), shifts c_t) of the paper's high-variance shifted-Laplacian sequence."""
    rng = np.random.default_rng(seed)
    shifts = -0.15 + 0.6 * rng.beta(0.5, 1.5, count)
    A, b = shifted_sequence(shifts, rng, grid_size)
    return A, b, shifts


def two_material_diffusion(kappa: float, grid_size: int) -> np.ndarray:
    """−∇·(a∇u) on the unit square's grid_size² interior grid, a = 1 on the left half and κ on the
    right, Dirichlet boundary; face coefficients are harmonic means (5-point, natural order, so
    consistently ordered: Young's theory holds and ω* moves with κ)."""
    a = np.ones((grid_size + 2, grid_size + 2))
    a[:, (grid_size + 2) // 2:] = kappa
    centre = a[1:-1, 1:-1]
    index = np.arange(grid_size**2).reshape(grid_size, grid_size)
    A = np.zeros((grid_size**2, grid_size**2))
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        other = a[1 + di:grid_size + 1 + di, 1 + dj:grid_size + 1 + dj]
        face = 2 * centre * other / (centre + other)
        A[index, index] += face
        inside = (slice(max(-di, 0), grid_size - max(di, 0)), slice(max(-dj, 0), grid_size - max(dj, 0)))
        A[index[inside], index[inside] + di * grid_size + dj] -= face[inside]  # neighbours off the boundary
    return A


def robustness_families(count: int, seed: int) -> dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    """Other sequences of the class: (A, b) builders, each of ``count`` systems. The 16×16
    shifts start at −0.06 since L's smallest eigenvalue there is 0.068 (the paper's −0.15 would
    make systems indefinite; on 10×10 it is 0.162)."""
    rng = np.random.default_rng(seed + 100)

    def shifted(grid_size: int, shifts: np.ndarray) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        return lambda: shifted_sequence(shifts, rng, grid_size)

    def diffusion() -> tuple[torch.Tensor, torch.Tensor]:
        kappas = np.exp(rng.uniform(np.log(0.1), np.log(10.0), count))
        A = torch.from_numpy(np.stack([two_material_diffusion(k, GRID_SIZE) for k in kappas]))
        return A, torch.from_numpy(rng.standard_normal((count, GRID_SIZE**2)))

    return {"8×8, c = −0.15 + 0.6·Beta(0.5, 1.5)": shifted(8, -0.15 + 0.6 * rng.beta(0.5, 1.5, count)),
            "12×12, c ~ U(−0.1, 1)": shifted(12, rng.uniform(-0.1, 1.0, count)),
            "16×16, c = −0.06 + 0.6·Beta(0.5, 1.5)": shifted(16, -0.06 + 0.6 * rng.beta(0.5, 1.5, count)),
            "10×10, c ~ U(1, 6) (ω* near 1.1)": shifted(10, rng.uniform(1.0, 6.0, count)),
            "10×10 two-material diffusion, κ log-uniform in [0.1, 10]": diffusion}


def prefix_ratios(table: np.ndarray, policy: Callable[[np.ndarray, np.ndarray, int], list[float]], seeds: int,
                  horizons: list[int], contexts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, len(horizons)) ratios of a policy's iterations on the first T systems to the best
    fixed ω's on the same T systems, and its (seeds,) totals; seed s plays a random order of the
    systems (seed 0 the given one)."""
    ratios, totals = [], []
    for s in range(seeds):
        order = np.arange(len(table)) if s == 0 else np.random.default_rng(s).permutation(len(table))
        costs = np.asarray(policy(table[order], None if contexts is None else contexts[order], s), dtype=float)
        ratios.append([costs[:h].sum() / table[order[:h]].sum(0).min() for h in horizons])
        totals.append(costs.sum())
    return np.array(ratios), np.array(totals)


def _policies(ctx: BenchContext) -> dict[str, tuple[Callable[[np.ndarray, np.ndarray, int], list[float]], int]]:
    """name → (policy(table, contexts, seed) → costs, number of seeds)."""
    many, few = (10, 3) if ctx.quick else (10, 10)
    return {
        UNIMODAL: (lambda tab, ctx_, s: play_table(tab, seed=s)[1], many),
        TSALLIS: (lambda tab, ctx_, s: play_table(tab, seed=s, algorithm="tsallis-inf")[1], many),
        "Tsallis-INF (loss: iterations / maxiter ∈ [0, 1]; the regret bound's setting)":
            (lambda tab, ctx_, s: play_table(tab, seed=s, algorithm="tsallis-inf", normalization="maxiter",
                                             maxiter=MAXITER)[1], few),
        "ChebCB contextual bandit (context c_t)":
            (lambda tab, ctx_, s: play_table(tab, omega="contextual", contexts=list(ctx_), seed=s)[1], few),
    }


def _replay_matches(A: torch.Tensor, b: torch.Tensor, table: np.ndarray, seed: int) -> bool:
    """The table is what the solver does: a prefix played by both bandits through real solves."""
    prefix = 20
    systems = [(aslinearoperator(A[t]), b[t]) for t in range(prefix)]
    for algorithm in ("unimodal", "tsallis-inf"):
        replay = solve_sor_sequence(systems, omega="bandit", grid=GRID, rtol=RTOL, maxiter=MAXITER, seed=seed,
                                    algorithm=algorithm)
        arms, costs = play_table(table[:prefix], seed=seed, algorithm=algorithm)
        if replay.iterations != [int(c) for c in costs] or replay.omegas != [GRID[a] for a in arms]:
            return False
    return True


def _robustness(ctx: BenchContext) -> tuple[str, dict[str, Any]]:
    count, seeds = 1000, 10
    horizons = [100, 500, count]
    rows, figures = [], {}
    for family, build in robustness_families(count, ctx.seed).items():
        A, b = build()
        with torch_threads(1):
            table = sor_iteration_table(A, b, GRID, rtol=RTOL, maxiter=MAXITER).numpy()
        best = int(table.sum(0).argmin())
        figures[family] = {"best_fixed_omega": GRID[best]}
        for name in (UNIMODAL, TSALLIS):
            policy, _ = _policies(ctx)[name]
            r, _ = prefix_ratios(table, policy, seeds, horizons)
            rows.append([family, f"{GRID[best]:.2f}", name.split(" (")[0],
                         *[f"{m:.3f} ± {s:.3f}" for m, s in zip(r.mean(0), r.std(0))]])
            figures[family][name] = {"ratio_mean_by_T": r.mean(0).tolist(), "ratio_std_by_T": r.std(0).tolist()}
    markdown = (f"**Other sequences of the class** ({count} systems each, same ω grid, rtol and b; "
                f"{seeds} seeds, mean ± std of the ratio to the best fixed ω of the first T systems):\n\n"
                + markdown_table(["sequence", "best fixed ω", "bandit", *[f"T = {h}" for h in horizons]], rows))
    return markdown, figures


def run_sor(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    count = 500 if ctx.quick else 5000
    A, b, shifts = paper_sequence(count, ctx.seed)
    with torch_threads(1):
        table = sor_iteration_table(A, b, GRID, rtol=RTOL, maxiter=MAXITER).numpy()
        consistent = _replay_matches(A, b, table, ctx.seed)
    horizons = [h for h in (100, 500, 1000, 3000) if h < count] + [count]
    # Jacobi radius of L + cI (diagonal 4 + c): 4cos(π/(N+1))/(4 + c); natural order is consistently ordered
    young = [young_optimal_omega(4 * np.cos(np.pi / (GRID_SIZE + 1)) / (4 + c)) for c in shifts]
    young_arm = np.abs(np.array(GRID)[None] - np.array(young)[:, None]).argmin(1)
    fixed_best_arm = int(table.sum(0).argmin())
    rows_t = np.arange(count)
    references = {f"best fixed ω in hindsight ({GRID[fixed_best_arm]:.2f})": table[:, fixed_best_arm],
                  "ω = 1 (Gauss–Seidel)": table[:, 0],
                  "Young's ω* per system (nearest grid ω)": table[rows_t, young_arm],
                  "instance-optimal grid ω (oracle)": table.min(1)}
    rows, figures = [], {"horizons": horizons, "policies": {}}
    running = {}
    for name, (policy, seeds) in _policies(ctx).items():
        r, totals = prefix_ratios(table, policy, seeds, horizons, contexts=shifts)
        rows.append([name, seeds, f"{totals.mean():.0f} ± {totals.std():.0f}",
                     *[f"{m:.3f} ± {s:.3f}" for m, s in zip(r.mean(0), r.std(0))]])
        figures["policies"][name] = {"seeds": seeds, "total_mean": float(totals.mean()),
                                     "total_std": float(totals.std()), "ratio_vs_best_fixed_by_T": r.mean(0).tolist(),
                                     "ratio_std_by_T": r.std(0).tolist()}
        running[name] = np.cumsum(policy(table, shifts, 0))
    for name, c in references.items():  # fixed policies: the ratio on the sequence as generated
        r = [float(c[:h].sum() / table[:h].sum(0).min()) for h in horizons]
        rows.append([name, "—", f"{c.sum():.0f}", *[f"{x:.3f}" for x in r]])
        figures["policies"][name] = {"total_mean": float(c.sum()), "ratio_vs_best_fixed_by_T": r}
    verdict = {name: figures["policies"][name]["ratio_vs_best_fixed_by_T"][-1] for name in (UNIMODAL, TSALLIS)}
    markdown = (f"**SOR sequence** (Khodak et al.'s setting: {count} systems L + cI, L the 5-point Laplacian "
                f"on {GRID_SIZE}×{GRID_SIZE} (n = {GRID_SIZE**2}), c = −0.15 + 0.6·Beta(0.5, 1.5), b truncated "
                f"normal, rtol {RTOL:g}, {len(GRID)} arms ω ∈ linspace(1, 1.95); "
                + ("quick mode: 500 systems, the paper's T is 5000; " if ctx.quick else "")
                + "bandits: mean ± std over seeds, seed s playing the systems in a random order). Columns "
                "T = …: total iterations of the first T systems over those of the best fixed ω for those T "
                f"systems (1 = no regret). Goal: within 10% of the best fixed ω — at T = {count} the unimodal "
                f"bandit measured {verdict[UNIMODAL]:.3f} ({'met' if verdict[UNIMODAL] <= 1.1 else 'not met'}), "
                f"Tsallis-INF {verdict[TSALLIS]:.3f} ({'met' if verdict[TSALLIS] <= 1.1 else 'not met'}). "
                f"Table replay matches real SOR solves (both bandits): {consistent}.\n\n"
                + markdown_table(["policy", "seeds", f"total iterations (T = {count})",
                                  *[f"T = {h}" for h in horizons]], rows))
    if not ctx.quick:
        robust_markdown, figures["other_sequences"] = _robustness(ctx)
        markdown += "\n\n" + robust_markdown
    path = _plot(ctx, table, fixed_best_arm, running, references)
    figures.update({"best_fixed_omega": GRID[fixed_best_arm], "best_fixed_total": float(table[:, fixed_best_arm].sum()),
                    "grid": GRID, "n": GRID_SIZE**2, "systems": count, "table_matches_solver": bool(consistent),
                    "unimodal_ratio": verdict[UNIMODAL], "tsallis_inf_ratio": verdict[TSALLIS]})
    return markdown, figures, [path]


def _plot(ctx: BenchContext, table: np.ndarray, fixed_best_arm: int, running: dict[str, np.ndarray],
          references: dict[str, np.ndarray]):
    """Average iterations per system so far, and iterations so far over the best fixed ω's (seed 0)."""
    fig, (ax, ratio_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    t = np.arange(1, len(table) + 1)
    best_running = np.cumsum(table[:, fixed_best_arm])
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])  # one colour per policy in both panels
    for name, cumulative in running.items():
        label, color = name.split(" (")[0] + (" (losses / maxiter)" if "maxiter" in name else ""), next(colors)
        ax.plot(t, cumulative / t, label=label, color=color)
        ratio_ax.plot(t, cumulative / best_running, label=label, color=color)
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
    ax.set_ylabel("average iterations per system so far (seed 0)")
    ratio_ax.set_ylabel(f"iterations so far / those of ω = {GRID[fixed_best_arm]:.2f}")
    path = ctx.out_dir / "linear_sor_regret.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
