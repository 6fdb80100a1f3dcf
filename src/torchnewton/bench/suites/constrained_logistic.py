"""The paper's setting: constrained logistic regression, ``sqp`` with direct vs sketched KKT solves.

Hong, Na, Mahoney & Kolar (ICML 2023, "Constrained Optimization via Exact Augmented Lagrangian and
Randomized Iterative Sketching", §5) fit

    minimize  (1/N) Σᵢ log(1 + exp(-yᵢ xᵢᵀw))   subject to  A w = b,  ‖w‖² = 1,

with A a random 10 × n matrix.  Here: scikit-learn's breast-cancer data (569 × 30, standardized,
y ∈ {±1}), A with N(0, 1/n) entries, b = A w̄ for a random unit w̄ (so the problem is feasible),
x0 ~ N(0, 1/n).  Runs of ``torchnewton.minimize(method="sqp")``:

* ``direct``: LDLᵀ inertia + LU solve of the KKT matrix;
* ``sketch, θ fixed``: randomized iterative sketching (block Kaczmarz, 8 rows a block) to the
  fixed relative accuracy θ = 0.1 (``sharpen=0``: linear local convergence);
* ``sketch, θ sharpened``: θ_k = min(0.1, ‖KKT‖) (``sharpen=1``, the paper's adaptive rule:
  superlinear local convergence);
* ``projected CG, θ fixed`` / ``θ sharpened``: the ``"projected-cg"`` sketch (:func:`.sketch.projected_cg`):
  adaptive, H-conjugate sketches, i.e. CG on ∇²L restricted to null(J) — the same accuracy
  condition ‖r‖ ≤ θ_k‖(∇ₓL, c)‖, met in a few steps because the reduced Hessian is well conditioned
  where random sketches of the indefinite K need thousands.

The sketch runs get an inner-iteration cap (``inner_max_iter``) high enough that every KKT solve
meets its θ, so the plot shows the accuracy rule and not the cap. The KKT residual of every
iterate is computed afterwards by the shared checker (:func:`.constrained_kkt.kkt_residuals`:
max of scaled optimality and violation) and plotted against the iteration.

As n grows (synthetic data: N = 2n samples, standardized Gaussian features, labels from a random
linear model with 10 % flipped; the analytic Hessian Xᵀ diag(σ(1 - σ)) X / N of f; process CPU
time on one thread, minimum over interleaved repeats):

* time per sqp iteration and whole solves to tol 1e-10, direct vs projected CG twice (iterations
  and final KKT residual of each), and block Kaczmarz over 3 iterations with the library's default
  inner cap of 1000 (where the mean inner iterations per KKT solve equal the cap, the solves
  stopped short of θ). Projected CG on the formed ∇²L (``matrix_free=False``, the analytic ∇²f)
  saves the O(n³) factorizations but not the O(Nn²) forming: its per-iteration gain is bounded by
  the factorizations' share (whole solves 0.6–0.75x of direct's CPU time from n = 300 to 4000).
  Matrix-free (the default of ``sketch="projected-cg"``, with the analytic product
  ``hessp`` ∇²f v = Xᵀ(d ⊙ Xv)/N) never forms ∇²L — every CG step and every other use of ∇²L in
  the sqp is one O(Nn) product — and takes the same iterations: measured 0.5x of direct's time per
  iteration at n = 300, 0.17x at n = 1000, 0.07x at n = 2000 and 0.065x at n = 4000 (0.1x of the
  formed-∇²L projected CG there); 1.6–1.9x at n = 30–100, where forming and factoring a small ∇²L
  costs less than the CG loop's per-product overhead;
* the cost of one KKT solve at the first iterate and near the solution (direct: forming ∇²L and
  factoring; Kaczmarz to θ = 0.1 on the dense K and the residual each random sketch reaches in the
  direct solve's time; projected CG to θ on the dense K and matrix-free, with Hessian-vector
  products Xᵀ(d ⊙ XV)/N that never form ∇²L — the regime an sqp with a matrix-free KKT step
  would be in: measured 1–10 % of the direct solve's time at n = 1000–4000).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from ...linear.sketch import KKTOperator, projected_cg, sketch_solve
from ...solvers.constrained.kkt import KKTSolver
from ...solvers.objective.minimize import minimize
from ..suite import BenchContext, markdown_table, torch_threads
from .constrained_kkt import kkt_residuals

N_LINEAR = 10
THETA = 0.1
BLOCK = 8  # rows per Kaczmarz block: per row, the Gram work grows with it and the per-op overhead falls
SKETCH = {"kkt_solver": "sketch", "sketch": "coordinate", "sketch_size": BLOCK, "accuracy": THETA}
VARIANTS: dict[str, dict[str, Any]] = {
    "direct": {"kkt_solver": "direct"},
    "sketch, θ fixed": {**SKETCH, "sharpen": 0.0, "inner_max_iter": 200_000},
    "sketch, θ sharpened": {**SKETCH, "sharpen": 1.0, "inner_max_iter": 200_000},
    "projected CG, θ fixed": {"kkt_solver": "sketch", "sketch": "projected-cg", "accuracy": THETA, "sharpen": 0.0},
    "projected CG, θ sharpened": {"kkt_solver": "sketch", "sketch": "projected-cg", "accuracy": THETA,
                                  "sharpen": 1.0},
}
DEFAULT_CAP = 1000  # the library's inner cap when inner_max_iter is not given
PCG = "projected CG, θ sharpened"
MATRIX_FREE = "projected CG, matrix-free"
KACZMARZ = "block Kaczmarz (θ = 0.1, default cap)"
# (options, iteration budget, derivative of f given): whole solves for the θ-accurate ones, 3
# iterations for the capped Kaczmarz. Projected CG twice: on the formed ∇²L (the analytic ∇²f) and
# matrix-free (the analytic product ∇²f v = Xᵀ(d ⊙ Xv)/N; ∇²L never formed)
TIMED: dict[str, tuple[dict[str, Any], int, str]] = {
    "direct": (VARIANTS["direct"], 50, "hess"), PCG: ({**VARIANTS[PCG], "matrix_free": False}, 50, "hess"),
    MATRIX_FREE: (VARIANTS[PCG], 50, "hessp"), KACZMARZ: ({**SKETCH, "sharpen": 0.0}, 3, "hess")}


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
        self._weights: tuple[torch.Tensor, torch.Tensor] | None = None  # (w, d) of :meth:`hessp`

    def objective(self, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(-self.y * (self.X @ w)).mean()

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.y * (self.X @ w))
        return (self.X.T * (s * (1 - s))) @ self.X / self.X.shape[0]

    def hessian_product(self, w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """V ↦ ∇²f(w) V = Xᵀ(d ⊙ XV)/N for blocks V (1, n, q), without forming ∇²f."""
        s = torch.sigmoid(self.y * (self.X @ w))
        d = (s * (1 - s) / self.X.shape[0]).unsqueeze(-1)
        return lambda V: (self.X.T @ (d * (self.X @ V[0]))).unsqueeze(0)

    def hessp(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """∇²f(w) v = Xᵀ(d ⊙ Xv)/N, two O(Nn) products: the ``hessp`` of a matrix-free sqp. The weights
        d = σ(1 − σ)/N are kept for the last w (an sqp asks several products at one iterate), as a
        user's product would."""
        if self._weights is None or not torch.equal(self._weights[0], w):
            s = torch.sigmoid(self.y * (self.X @ w))
            self._weights = (w.clone(), s * (1 - s) / self.X.shape[0])
        return self.X.T @ (self._weights[1] * (self.X @ v))

    def constraint_jacobian(self, w: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.A, 2 * w.unsqueeze(0)])

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


def solve(problem: LogisticProblem, options: dict[str, Any], *, max_iter: int, hessian: bool | str,
          on_iterate: Callable[[torch.Tensor], None] | None = None,
          on_state: Callable[[Any], None] | None = None) -> Any:
    """sqp to tol 1e-10; ``hessian``: the analytic ∇²f (True or "hess"), its product ("hessp") or autodiff (False)."""
    def callback(state: Any) -> None:
        if on_iterate is not None:
            on_iterate(state.x[0].clone())
        if on_state is not None:
            on_state(state)

    return minimize(problem.objective, problem.x0.clone(), method="sqp",
                    constraints={"type": "eq", "fun": problem.constraints},
                    hess=problem.hessian if hessian in (True, "hess") else None,
                    hessp=problem.hessp if hessian == "hessp" else None, tol=1e-10, max_iter=max_iter,
                    options={**options, "seed": 0},
                    callback=None if on_iterate is None and on_state is None else callback)


def _trajectories(problem: LogisticProblem) -> dict[str, dict[str, Any]]:
    solve(problem, VARIANTS["direct"], max_iter=2, hessian=False)  # warm-up: first calls pay one-time costs
    out = {}
    for name, options in VARIANTS.items():
        iterates = [problem.x0.clone()]
        inner: list[int] = [0]
        start = time.process_time()
        result = solve(problem, options, max_iter=100, hessian=False, on_iterate=iterates.append,
                       on_state=lambda state: inner.append(int(state.inner_iterations[0])))
        seconds = time.process_time() - start
        residuals = [problem.kkt(w) for w in iterates]
        out[name] = {"kkt": residuals, "nit": int(result.nit), "status": result.status.name, "seconds": seconds,
                     "final_kkt": residuals[-1], "fun": float(result.fun),
                     "nlinsolve": int(result.nlinsolve), "nfev": int(result.nfev), "inner_iterations": inner[-1]}
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


def _time_per_iteration(ctx: BenchContext, sizes: tuple[int, ...], repeats: int) -> dict[int, dict[str, Any]]:
    """Per n: each :data:`TIMED` variant's sqp run (tol 1e-10), interleaved, the minimum process CPU
    seconds over ``repeats`` (1 thread) divided by its iterations; its iterations, final KKT residual
    (shared checker) and inner iterations per KKT solve (for the capped Kaczmarz: equal to the cap
    means no solve reached θ)."""
    out = {}
    for n in ctx.track(sizes, desc="sqp time per iteration"):
        problem = LogisticProblem(*synthetic(n, ctx.seed), seed=ctx.seed)
        solve(problem, VARIANTS["direct"], max_iter=1, hessian=True)  # warm-up: first calls pay one-time costs
        samples: dict[str, list[float]] = {name: [] for name in TIMED}
        runs: dict[str, dict[str, Any]] = {}
        for _ in range(repeats):
            for name, (options, budget, derivative) in TIMED.items():
                inner = [0]
                start = time.process_time()
                result = solve(problem, options, max_iter=budget, hessian=derivative,
                               on_state=lambda state: inner.append(int(state.inner_iterations[0])))
                samples[name].append(time.process_time() - start)
                runs[name] = {"nit": int(result.nit), "status": result.status.name,
                              "kkt": problem.kkt(result.x.reshape(-1)), "kkt_solves": int(result.nlinsolve),
                              "inner_per_solve": inner[-1] / max(1, int(result.nlinsolve))}
        out[n] = {name: {"min_s": min(v), "min_s_per_iteration": min(v) / max(1, runs[name]["nit"]), **runs[name]}
                  for name, v in samples.items()}
        direct = out[n]["direct"]
        out[n]["pcg_over_direct_per_iteration"] = out[n][PCG]["min_s_per_iteration"] / direct["min_s_per_iteration"]
        out[n]["pcg_over_direct_whole"] = out[n][PCG]["min_s"] / direct["min_s"]
        out[n]["free_over_direct_per_iteration"] = \
            out[n][MATRIX_FREE]["min_s_per_iteration"] / direct["min_s_per_iteration"]
        out[n]["free_over_direct_whole"] = out[n][MATRIX_FREE]["min_s"] / direct["min_s"]
        out[n]["free_over_pcg_per_iteration"] = \
            out[n][MATRIX_FREE]["min_s_per_iteration"] / out[n][PCG]["min_s_per_iteration"]
        out[n]["kaczmarz_over_direct_per_iteration"] = \
            out[n][KACZMARZ]["min_s_per_iteration"] / direct["min_s_per_iteration"]
    return out


def crossover(timing: dict[int, dict[str, Any]], key: str = "pcg_over_direct_whole") -> int | None:
    """The smallest n of the sweep from which on the whole solve of ``key``'s variant (projected CG
    on the formed ∇²L; ``"free_over_direct_whole"``: matrix-free) is faster than direct's."""
    wins = [n for n in sorted(timing) if all(timing[k][key] < 1 for k in timing if k >= n)]
    return wins[0] if wins else None


def _kkt_system(problem: LogisticProblem, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(λ, ∇ₓL, c, J) at w with least-squares multipliers (as the sqp starts), batch 1."""
    w = w.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(problem.objective(w), w)
    w = w.detach()
    J = problem.constraint_jacobian(w)
    lam = -torch.linalg.lstsq(J.T, g.unsqueeze(-1)).solution.squeeze(-1)
    return lam, (g + J.T @ lam).unsqueeze(0), problem.constraints(w).unsqueeze(0), J.unsqueeze(0)


def _relative_residual_within(budget: float, run: Callable[[int], Any], rhs_norm: float) -> dict[str, Any]:
    """The relative residual a sketch reaches in ``budget`` seconds: its set-up (``run(0)``: forming
    what it needs, one residual check) and per-iteration time from a probe of 64 iterations, then as
    many iterations as fit after the set-up (none if the set-up alone overruns)."""
    start = time.process_time()
    run(0)
    setup = time.process_time() - start
    start = time.process_time()
    run(64)
    per_iteration = max(time.process_time() - start - setup, 1e-9) / 64
    count = max(0, int((budget - setup) / per_iteration))
    start = time.process_time()
    out = run(count)
    return {"iterations": int(out.iterations[0]), "seconds": time.process_time() - start, "setup_s": setup,
            "relative_residual": float(out.residual_norm[0]) / rhs_norm, "s_per_iteration": per_iteration}


LATE = 5  # the second point of the solve-cost table: after this many direct sqp iterations


def _kkt_solve_cost(ctx: BenchContext, sizes: tuple[int, ...], cap: int, repeats: int) -> dict[str, dict[str, Any]]:
    """One KKT solve per n at the first iterate and after :data:`LATE` direct sqp iterations
    (near the solution: no inertia correction, a harder system): direct vs sketched (see the
    module docstring); minimum seconds over ``repeats`` for the direct solve and the sketch to θ."""
    out = {}
    for n in ctx.track(sizes, desc="KKT solve cost"):
        problem = LogisticProblem(*synthetic(n, ctx.seed), seed=ctx.seed)
        late = solve(problem, VARIANTS["direct"], max_iter=LATE, hessian=True).x.reshape(-1)
        for point, w in (("first iterate", problem.x0), (f"after {LATE} iterations", late)):
            out[f"{n}, {point}"] = {"n": n, "point": point, **_solve_cost_at(problem, w, cap, repeats, ctx.seed)}
    return out


def _solve_cost_at(problem: LogisticProblem, w: torch.Tensor, cap: int, repeats: int, seed: int) -> dict[str, Any]:
    lam, gl, c, J = _kkt_system(problem, w)
    shift_h = 2 * lam[-1]  # ∇²ₓL = ∇²f + 2λ_m I (the last constraint is ‖w‖² − 1)
    eye = torch.eye(problem.n, dtype=w.dtype)
    rhs = -torch.cat([gl, c], -1)
    direct_s, step = [], None
    for _ in range(repeats):
        start = time.process_time()
        step = KKTSolver("direct").solve((problem.hessian(w) + shift_h * eye).unsqueeze(0), J, -gl, -c,
                                         torch.zeros(1, dtype=w.dtype))
        direct_s.append(time.process_time() - start)
    delta = step.delta  # the inertia correction the direct solve chose; the sketches solve that system
    generator = torch.Generator().manual_seed(seed)

    def dense(max_iter: int):
        H = (problem.hessian(w) + (shift_h + delta[0]) * eye).unsqueeze(0)
        m = J.shape[1]
        K = torch.cat([torch.cat([H, J.transpose(-1, -2)], -1), torch.cat([J, J.new_zeros(1, m, m)], -1)], -2)
        return sketch_solve(K, rhs, THETA, sketch="coordinate", sketch_size=BLOCK, max_iter=max_iter,
                            generator=generator)

    hessp = problem.hessian_product(w)
    operator = KKTOperator(lambda V: hessp(V) + shift_h * V, J, delta)

    def matrix_free(max_iter: int):
        return sketch_solve(operator, rhs, THETA, sketch="gaussian", sketch_size=16, max_iter=max_iter,
                            generator=generator)

    def projected(without_hessian: bool):
        if without_hessian:  # Hessian-vector products Xᵀ(d ⊙ XV)/N: ∇²L never formed
            products = problem.hessian_product(w)
            K = KKTOperator(lambda V: products(V) + shift_h * V, J, delta)
        else:  # as the sqp's KKT step gets it: ∇²L formed, K assembled
            H = (problem.hessian(w) + (shift_h + delta[0]) * eye).unsqueeze(0)
            m = J.shape[1]
            K = torch.cat([torch.cat([H, J.transpose(-1, -2)], -1), torch.cat([J, J.new_zeros(1, m, m)], -1)], -2)
        return projected_cg(K, rhs, THETA)

    dense_s, pcg_s = [], {False: [], True: []}
    pcg = {}
    for _ in range(repeats):
        start = time.process_time()
        to_theta = dense(cap)
        dense_s.append(time.process_time() - start)
        for free in (False, True):
            start = time.process_time()
            pcg[free] = projected(free)
            pcg_s[free].append(time.process_time() - start)
    rhs_norm = float(rhs.norm())
    budget = min(direct_s)
    return {"direct_s": budget, "delta": float(delta[0]),
            "dense_to_theta": {"seconds": min(dense_s), "iterations": int(to_theta.iterations[0]),
                               "reached": bool(to_theta.status[0] == 0),
                               "relative_residual": float(to_theta.residual_norm[0]) / rhs_norm},
            **{key: {"seconds": min(pcg_s[free]), "iterations": int(pcg[free].iterations[0]),
                     "reached": bool(pcg[free].status[0] == 0),
                     "relative_residual": float(pcg[free].residual_norm[0]) / rhs_norm}
               for key, free in (("pcg_dense_to_theta", False), ("pcg_matrix_free_to_theta", True))},
            "dense_within_direct": _relative_residual_within(budget, dense, rhs_norm),
            "matrix_free_within_direct": _relative_residual_within(budget, matrix_free, rhs_norm)}


def _whole_solves(ctx: BenchContext, sizes: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    """sqp to tol 1e-8 (at most 100 iterations) per n, direct vs sketched with θ sharpened (every KKT
    solve to its θ): iterations, seconds, KKT residual by the shared checker, inner iterations."""
    out = {}
    for n in ctx.track(sizes, desc="sqp to tolerance"):
        problem = LogisticProblem(*synthetic(n, ctx.seed), seed=ctx.seed)
        out[n] = {}
        for name in ("direct", "sketch, θ sharpened"):
            inner = [0]
            start = time.process_time()
            result = minimize(problem.objective, problem.x0.clone(), method="sqp",
                              constraints={"type": "eq", "fun": problem.constraints}, hess=problem.hessian,
                              tol=1e-8, max_iter=100, options={**VARIANTS[name], "seed": ctx.seed},
                              callback=lambda state: inner.append(int(state.inner_iterations[0])))
            seconds = time.process_time() - start
            out[n][name] = {"nit": int(result.nit), "seconds": seconds, "status": result.status.name,
                            "kkt": problem.kkt(result.x.reshape(-1)), "inner_iterations": inner[-1]}
        out[n]["sketch_over_direct"] = out[n]["sketch, θ sharpened"]["seconds"] / out[n]["direct"]["seconds"]
    return out


def _crossover_sentence(timing: dict[int, dict[str, Any]], first_win: int | None, label: str) -> str:
    if first_win is None:
        return f"{label}'s whole solve is not faster than direct at the largest n of this sweep."
    below = [n for n in timing if n < first_win]
    return (f"{label}'s whole solve is faster than direct from n = {first_win} on"
            + (f" and slower at n = {max(below)}: the crossover lies between." if below
               else " (every n of the sweep)."))


def logistic_comparison(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    problem = LogisticProblem(*breast_cancer(), seed=ctx.seed)
    sizes = (30, 100, 300, 1000) if ctx.quick else (30, 100, 300, 1000, 2000, 4000)
    solve_sizes = (30, 100) if ctx.quick else (100, 300, 1000, 2000, 4000)
    cap = 5_000 if ctx.quick else 50_000
    with torch_threads(1):  # every time below is process CPU time on one thread: the machine may be shared
        trajectories = _trajectories(problem)
        timing = _time_per_iteration(ctx, sizes, repeats=2)
        cost = _kkt_solve_cost(ctx, solve_sizes, cap, repeats=3 if ctx.quick else 2)
        # sharpened θ makes the late Kaczmarz solves long (n = 100: ~600 000 inner iterations): small n only
        whole = {} if ctx.quick else _whole_solves(ctx, (100, 200))
    plot = _plot_trajectories(trajectories, ctx.out_dir / "constrained_logistic_kkt.png")
    direct_seconds = trajectories["direct"]["seconds"]
    rows = [[name, run["nit"], run["status"], f"{run['final_kkt']:.2e}", f"{run['fun']:.6g}", run["nlinsolve"],
             run["inner_iterations"], f"{run['seconds']:.3g}", f"{run['seconds'] / direct_seconds:.3g}"]
            for name, run in trajectories.items()]
    timing_rows = [[n, *(f"{t[name]['min_s_per_iteration'] * 1e3:.3g} / {t[name]['nit']} / {t[name]['kkt']:.1e}"
                         for name in ("direct", PCG, MATRIX_FREE)),
                    f"{t[PCG]['inner_per_solve']:.1f}", f"{t['pcg_over_direct_per_iteration']:.3g}",
                    f"{t['pcg_over_direct_whole']:.3g}", f"{t['free_over_direct_per_iteration']:.3g}",
                    f"{t['free_over_direct_whole']:.3g}", f"{t['free_over_pcg_per_iteration']:.3g}",
                    f"{t[KACZMARZ]['min_s_per_iteration'] * 1e3:.3g}",
                    f"{t['kaczmarz_over_direct_per_iteration']:.3g}", f"{t[KACZMARZ]['inner_per_solve']:.0f}"]
                   for n, t in timing.items()]
    first_win = crossover(timing)
    free_win = crossover(timing, "free_over_direct_whole")
    cost_rows = [[c["n"], c["point"], f"{c['delta']:.2g}", f"{c['direct_s'] * 1e3:.3g}",
                  f"{c['dense_to_theta']['iterations']}{'' if c['dense_to_theta']['reached'] else ' (cap)'}",
                  f"{c['dense_to_theta']['seconds'] * 1e3:.3g}", f"{c['dense_to_theta']['seconds'] / c['direct_s']:.3g}",
                  f"{c['dense_within_direct']['relative_residual']:.2e}",
                  f"{c['matrix_free_within_direct']['relative_residual']:.2e} "
                  f"({c['matrix_free_within_direct']['iterations']} it)",
                  *(f"{c[key]['iterations']}{'' if c[key]['reached'] else ' (cap)'} / {c[key]['seconds'] * 1e3:.3g} / "
                    f"{c[key]['seconds'] / c['direct_s']:.3g}"
                    for key in ("pcg_dense_to_theta", "pcg_matrix_free_to_theta"))]
                 for c in cost.values()]
    whole_rows = [[n, *(f"{w[name]['nit']} / {w[name]['seconds']:.3g} / {w[name]['kkt']:.1e}"
                        for name in ("direct", "sketch, θ sharpened")),
                   w["sketch, θ sharpened"]["inner_iterations"], f"{w['sketch_over_direct']:.3g}"]
                  for n, w in whole.items()]
    whole_part = [] if not whole else [
        "",
        "Whole sqp solves on synthetic data (tol 1e-8, analytic Hessian of f; the sketch with θ sharpened, "
        "every KKT solve to its θ): iterations / seconds / final KKT residual (shared checker).",
        "",
        markdown_table(["n", "direct", "sketch, θ sharpened", "sketch inner iterations", "sketch / direct seconds"],
                       whole_rows)]
    markdown = "\n".join([
        f"Breast cancer (569 × 30, standardized), {N_LINEAR} random linear equalities + ‖w‖² = 1, "
        "autodiff derivatives, tol 1e-10, at most 100 iterations; KKT residual by the shared checker; "
        "seconds of process CPU time, 1 thread. "
        f"Sketch: block Kaczmarz, {BLOCK} rows a block, every KKT solve to its θ (inner cap 200 000); projected CG: "
        "the `\"projected-cg\"` sketch, matrix-free (its default: autodiff Hessian-vector products, ∇²L never formed).",
        "",
        markdown_table(["KKT solver", "iterations", "status", "final KKT residual", "f", "KKT solves",
                        "inner iterations", "seconds", "seconds / direct"], rows),
        "",
        "Time per sqp iteration as n grows (synthetic data, N = 2n, analytic Hessian of f, tol 1e-10; "
        "minimum process CPU time over 2 interleaved repeats, 1 thread, divided by the iterations). direct and "
        "projected CG (the `\"projected-cg\"` sketch: CG on ∇²L restricted to null(J), θ sharpened) run to "
        "the tolerance; block Kaczmarz (θ = 0.1, the default inner cap "
        f"{DEFAULT_CAP}) runs 3 iterations only: an inner count equal to the cap means no solve reached θ. "
        "projected CG on the formed ∇²L (`matrix_free=False`, the analytic ∇²f) saves the factorizations, not "
        "the O(Nn²) forming; matrix-free (the default of `sketch=\"projected-cg\"`, given the analytic product "
        "`hessp` ∇²f v = Xᵀ(d ⊙ Xv)/N) never forms ∇²L: each CG step is one O(Nn) product. "
        + _crossover_sentence(timing, first_win, "Projected CG (formed ∇²L)") + " "
        + _crossover_sentence(timing, free_win, "Matrix-free projected CG"),
        "",
        markdown_table(["n", "direct ms/it / its / KKT", "projected CG ms/it / its / KKT",
                        "matrix-free pCG ms/it / its / KKT", "CG its per KKT solve",
                        "pCG / direct per it", "pCG / direct whole solve", "matrix-free / direct per it",
                        "matrix-free / direct whole solve", "matrix-free / pCG per it", "Kaczmarz ms/it (3 its)",
                        "Kaczmarz / direct per it", "Kaczmarz inner per solve"], timing_rows),
        "",
        f"One KKT solve at the first iterate and after {LATE} direct sqp iterations (synthetic data, N = 2n, θ = {THETA}, 1 thread): direct = forming "
        f"∇²L + LDLᵀ/LU; block Kaczmarz (dense K, q = {BLOCK}) to θ with a cap of "
        f"{cap} iterations; and the relative residual each sketch reaches in the direct solve's time "
        "(matrix-free: Gaussian sketches of 16 columns through Hessian-vector products, ∇²L never formed). "
        f"The sketch wins where that residual is ≤ {THETA}. "
        "Projected CG to θ: CG iterations / ms / ms over direct's, "
        "on the dense K (∇²L formed) and matrix-free (each iteration one Hessian-vector product Xᵀ(d ⊙ Xv)/N).",
        "",
        markdown_table(["n", "point", "δ", "direct ms", "Kaczmarz iterations to θ", "Kaczmarz ms to θ", "Kaczmarz / direct",
                        "Kaczmarz residual in direct's time", "matrix-free residual in direct's time",
                        "projected CG, dense K", "projected CG, matrix-free"], cost_rows),
        *whole_part,
    ])
    figures = {"trajectories": trajectories, "time_per_iteration": {str(k): v for k, v in timing.items()},
               "pcg_crossover_n": first_win, "matrix_free_crossover_n": free_win,
               "kkt_solve_cost": cost, "whole_solves": {str(k): v for k, v in whole.items()}}
    return markdown, figures, [plot]
