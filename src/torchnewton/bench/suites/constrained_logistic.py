"""The paper's setting: constrained logistic regression, ``sqp`` with direct vs sketched KKT solves.

Hong, Na, Mahoney & Kolar (ICML 2023, "Constrained Optimization via Exact Augmented Lagrangian and
Randomized Iterative Sketching", §5) fit

    minimize  (1/N) Σᵢ log(1 + exp(-yᵢ xᵢᵀw))   subject to  A w = b,  ‖w‖² = 1,

with A a random 10 × n matrix.  Here: scikit-learn's breast-cancer data (569 × 30, standardized,
y ∈ {±1}), A with N(0, 1/n) entries, b = A w̄ for a random unit w̄ (so the problem is feasible),
x0 ~ N(0, 1/n).  Runs of ``torchnewton.minimize(method="sqp")``:

* ``direct``: eigendecomposition of the KKT matrix;
* ``sketch, θ fixed``: randomized iterative sketching to the fixed relative accuracy θ = 0.1
  (``sharpen=0``: linear local convergence);
* ``sketch, θ sharpened``: θ_k = min(0.1, ‖KKT‖) (``sharpen=1``, the paper's adaptive rule:
  superlinear local convergence).

The KKT residual of every iterate is computed afterwards by the shared checker
(:func:`.constrained_kkt.kkt_residuals`: max of scaled optimality and violation) and plotted
against the iteration.  Time per iteration as n grows uses synthetic data (N = 2n samples,
standardized Gaussian features, labels from a random linear model with 10 % flipped), the
analytic Hessian Xᵀ diag(σ(1 - σ)) X / N of f, and a fixed budget of iterations.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from ...solvers.objective.minimize import minimize
from ..suite import BenchContext, markdown_table
from .constrained_kkt import kkt_residuals

N_LINEAR = 10
VARIANTS: dict[str, dict[str, Any]] = {
    "direct": {"kkt_solver": "direct"},
    "sketch, θ fixed": {"kkt_solver": "sketch", "accuracy": 0.1, "sharpen": 0.0},
    "sketch, θ sharpened": {"kkt_solver": "sketch", "accuracy": 0.1, "sharpen": 1.0},
}


class LogisticProblem:
    """f, ∇²f and c = (A w - b, ‖w‖² - 1) of the constrained logistic regression, in torch."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, seed: int):
        generator = torch.Generator().manual_seed(seed)
        n = X.shape[1]
        self.X, self.y, self.n = X, y, n
        self.A = torch.randn(N_LINEAR, n, generator=generator, dtype=X.dtype) / n ** 0.5
        target = torch.randn(n, generator=generator, dtype=X.dtype)
        self.b = self.A @ (target / target.norm())
        self.x0 = torch.randn(n, generator=generator, dtype=X.dtype) / n ** 0.5

    def objective(self, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(-self.y * (self.X @ w)).mean()

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.y * (self.X @ w))
        return (self.X.T * (s * (1 - s))) @ self.X / self.X.shape[0]

    def constraints(self, w: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.A @ w - self.b, (w @ w - 1.0).reshape(1)])

    def kkt(self, w: torch.Tensor) -> float:
        """The shared checker's residual max(optimality, violation) at w."""
        w = w.detach().clone().requires_grad_(True)
        f = self.objective(w)
        (grad,) = torch.autograd.grad(f, w)
        jac = torch.autograd.functional.jacobian(self.constraints, w.detach())
        c = self.constraints(w.detach())
        zeros = np.zeros(N_LINEAR + 1)
        check = kkt_residuals(w.detach().numpy(), float(f.detach()), grad.detach().numpy(), c.numpy(), jac.detach().numpy(),
                              zeros, zeros,
                              np.full(self.n, -np.inf), np.full(self.n, np.inf))
        return max(check.optimality, check.violation)


def breast_cancer() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's breast-cancer data, standardized, labels ±1."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X = torch.as_tensor(data.data, dtype=torch.float64)
    X = (X - X.mean(0)) / X.std(0)
    return X, torch.as_tensor(2.0 * data.target - 1.0, dtype=torch.float64)


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N = 2n standardized Gaussian samples, labels of a random linear model, 10 % flipped."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(2 * n, n, generator=generator, dtype=torch.float64)
    X = (X - X.mean(0)) / X.std(0)
    y = torch.sign(X @ torch.randn(n, generator=generator, dtype=torch.float64))
    flip = torch.rand(2 * n, generator=generator, dtype=torch.float64) < 0.1
    return X, torch.where(flip, -y, y)


def solve(problem: LogisticProblem, options: dict[str, Any], *, max_iter: int, hessian: bool,
          on_iterate: Callable[[torch.Tensor], None] | None = None) -> Any:
    callback = None if on_iterate is None else (lambda state: on_iterate(state.x[0].clone()))
    return minimize(problem.objective, problem.x0.clone(), method="sqp",
                    constraints={"type": "eq", "fun": problem.constraints},
                    hess=problem.hessian if hessian else None, tol=1e-10, max_iter=max_iter,
                    options={**options, "seed": 0}, callback=callback)


def _trajectories(problem: LogisticProblem) -> dict[str, dict[str, Any]]:
    out = {}
    for name, options in VARIANTS.items():
        iterates = [problem.x0.clone()]
        start = time.perf_counter()
        result = solve(problem, options, max_iter=100, hessian=False, on_iterate=iterates.append)
        seconds = time.perf_counter() - start
        residuals = [problem.kkt(w) for w in iterates]
        out[name] = {"kkt": residuals, "nit": int(result.nit), "status": result.status.name, "seconds": seconds,
                     "final_kkt": residuals[-1], "fun": float(result.fun),
                     "nlinsolve": int(result.nlinsolve), "nfev": int(result.nfev)}
    return out


def _plot_trajectories(trajectories: dict[str, dict[str, Any]], path) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, run in trajectories.items():
        ax.semilogy(range(len(run["kkt"])), np.maximum(run["kkt"], 1e-17), marker=".", label=name)
    ax.axhline(1e-6, color="grey", linestyle=":", label="benchmark tolerance 1e-6")
    ax.set_xlabel("iteration")
    ax.set_ylabel("KKT residual (shared checker)")
    ax.set_title("breast cancer, 10 linear equalities + ‖w‖² = 1: sqp")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _time_per_iteration(ctx: BenchContext, sizes: tuple[int, ...], iterations: int,
                        repeats: int) -> dict[int, dict[str, Any]]:
    """Median seconds per iteration of direct and fixed-θ sketched sqp, interleaved, per n."""
    out = {}
    for n in ctx.track(sizes, desc="sqp time per iteration"):
        problem = LogisticProblem(*synthetic(n, ctx.seed), seed=ctx.seed)
        samples: dict[str, list[float]] = {"direct": [], "sketch, θ fixed": []}
        nit: dict[str, int] = {}
        for _ in range(repeats):
            for name in samples:
                start = time.perf_counter()
                result = solve(problem, VARIANTS[name], max_iter=iterations, hessian=True)
                nit[name] = int(result.nit)
                samples[name].append((time.perf_counter() - start) / max(1, int(result.nit)))
        out[n] = {name: {"median_s_per_iteration": statistics.median(v), "min_s_per_iteration": min(v),
                         "nit": nit[name]} for name, v in samples.items()}
        out[n]["sketch_over_direct"] = (out[n]["sketch, θ fixed"]["median_s_per_iteration"]
                                        / out[n]["direct"]["median_s_per_iteration"])
    return out


def logistic_comparison(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    problem = LogisticProblem(*breast_cancer(), seed=ctx.seed)
    trajectories = _trajectories(problem)
    plot = _plot_trajectories(trajectories, ctx.out_dir / "constrained_logistic_kkt.png")
    # sketched iterations cost about 7 s at n = 300 here and grow like n³: full mode stops at n = 1000
    sizes = (30, 100) if ctx.quick else (30, 100, 300, 1000)
    iterations = 3
    timing = _time_per_iteration(ctx, sizes, iterations, repeats=1 if ctx.quick else 2)
    rows = [[name, run["nit"], run["status"], f"{run['final_kkt']:.2e}", f"{run['fun']:.6g}", run["nlinsolve"],
             f"{run['seconds']:.3g}"] for name, run in trajectories.items()]
    timing_rows = [[n, f"{t['direct']['median_s_per_iteration'] * 1e3:.3g}",
                    f"{t['sketch, θ fixed']['median_s_per_iteration'] * 1e3:.3g}", f"{t['sketch_over_direct']:.3g}"]
                   for n, t in timing.items()]
    markdown = "\n".join([
        f"Breast cancer (569 × 30, standardized), {N_LINEAR} random linear equalities + ‖w‖² = 1, "
        "autodiff derivatives, tol 1e-10, at most 100 iterations; KKT residual by the shared checker.",
        "",
        markdown_table(["KKT solver", "iterations", "status", "final KKT residual", "f", "KKT solves", "seconds"], rows),
        "",
        f"Time per sqp iteration on synthetic data (N = 2n, analytic Hessian of f, {iterations} iterations, "
        "median over repeats, 1 thread):",
        "",
        markdown_table(["n", "direct ms/iteration", "sketch (θ = 0.1) ms/iteration", "sketch / direct"], timing_rows),
    ])
    figures = {"trajectories": trajectories, "time_per_iteration": {str(k): v for k, v in timing.items()}}
    return markdown, figures, [plot]
