"""Part (c) of `torchnewton bench fixed_point`: variance-reduced Halpern vs Halpern vs
extragradient on a finite-sum monotone problem, counted in single-component oracle calls.

Problem: the regularized bilinear game min_x max_y (1/n) Σᵢ [xᵀAᵢy + bᵢᵀx − cᵢᵀy] + λ/2(‖x‖² − ‖y‖²),
x, y ∈ ℝᵈ, n = 1000 components Aᵢ = Ā + noise (float64), F_i(x, y) = (Aᵢy + λx + bᵢ, −Aᵢᵀx + λy + cᵢ);
monotone, λ-strongly monotone, L_F = ‖F‖_Lip, L the mean-square Lipschitz constant of the Fᵢ.
Stop at the natural residual ‖F(z)‖₂ ≤ 1e-6 from z₀ = 0.

Methods of :func:`torchnewton.solvers.monotone.solve.monotone_inclusion`: ``extragradient``
(2n calls per step), ``halpern`` (extra-anchored gradient, 2n per step) and ``vr-halpern``
(Cai, Alacaoglu & Diakonikolas 2024, minibatches of ⌈√n⌉), the two Halpern methods with adaptive
restarts (plain Halpern is O(1/k) even on strongly monotone problems: without restarts neither
reaches 1e-6 within the budget, which the full mode shows). The deterministic methods get a sweep
of three step sizes each (full mode; quick mode runs the winners, 0.9/L_F and 0.5/L_F) and the
best is reported; VR-Halpern runs with its defaults (the
paper's step rules), over three seeds in full mode.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from ...solvers.monotone.operator import FiniteSumOperator
from ...solvers.monotone.solve import monotone_inclusion
from ..suite import BenchContext, markdown_table, torch_threads

DOUBLE = torch.float64
TOL = 1e-6


def game(n: int, d: int, lam: float, seed: int) -> FiniteSumOperator:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, dtype=DOUBLE, generator=g) / d ** 0.5 \
        + 0.5 * torch.randn(n, d, d, dtype=DOUBLE, generator=g) / d ** 0.5
    shift = torch.randn(n, 2 * d, dtype=DOUBLE, generator=g)
    mean, mean_shift = A.mean(0), shift.mean(0)

    def components(z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        M = A.index_select(0, idx).mean(0)
        return torch.cat([M @ z[d:], -(z[:d] @ M)]) + lam * z + shift.index_select(0, idx).mean(0)

    def full(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([mean @ z[d:], -(z[:d] @ mean)]) + lam * z + mean_shift

    lipschitz = float(torch.linalg.matrix_norm(A, 2).square().mean().sqrt()) + lam
    return FiniteSumOperator(components, n, lipschitz, float(torch.linalg.matrix_norm(mean, 2)) + lam, full=full)


def _run(operator: FiniteSumOperator, d: int, method: str, options: dict, budget: int) -> dict[str, Any]:
    start = time.perf_counter()
    result = monotone_inclusion(operator, torch.zeros(2 * d, dtype=DOUBLE), method=method, tol=TOL,
                                max_oracle_calls=budget, options=options, record_history=True)
    seconds = time.perf_counter() - start
    calls = [int(h["oracle_calls"]) for h in result.history]
    residuals = [float(h["residual_norm"]) for h in result.history]
    return {"success": bool(result.success), "status": result.status.name, "oracle_calls": int(result.oracle_calls),
            "residual": float(result.residual_norm), "seconds": seconds, "trace": (calls, residuals)}


def run_monotone(ctx: BenchContext) -> tuple[str, dict[str, Any], list]:
    n, d = 1000, 10
    lams = [0.02] if ctx.quick else [0.02, 0.005]
    seeds = [ctx.seed] if ctx.quick else [ctx.seed, ctx.seed + 1, ctx.seed + 2]
    budget = 3 * 10 ** 7
    figures: dict[str, Any] = {"n": n, "d": d, "tol": TOL, "problems": {}}
    rows, plots = [], []
    with torch_threads(1):
        for lam in lams:
            operator = game(n, d, lam, ctx.seed)
            key = f"lambda={lam}"
            entry: dict[str, Any] = {"L_F": operator.full_lipschitz, "L": operator.lipschitz, "methods": {}}
            # quick mode: only the step of each sweep that won in full mode
            sweeps = {"extragradient": [0.9], "halpern": [0.5]} if ctx.quick else \
                {"extragradient": [0.25, 0.5, 0.9], "halpern": [0.125, 0.25, 0.5]}
            best: dict[str, dict[str, Any]] = {}
            for method, scales in sweeps.items():
                runs = {}
                for scale in scales:
                    options = {"step": scale / operator.full_lipschitz}
                    if method == "halpern":
                        options["restart"] = True
                    runs[scale] = _run(operator, d, method, options, budget)
                chosen = min(runs, key=lambda s: (not runs[s]["success"], runs[s]["oracle_calls"]))
                best[method] = dict(runs[chosen], step_scale=chosen)
                entry["methods"][method] = {"sweep": {str(s): {k: v for k, v in r.items() if k != "trace"}
                                                      for s, r in runs.items()}, "best_step_scale": chosen}
            vr_runs = [_run(operator, d, "vr-halpern", {"restart": True, "seed": s}, budget) for s in seeds]
            calls = [r["oracle_calls"] for r in vr_runs]
            best["vr-halpern"] = dict(vr_runs[0], oracle_calls_mean=sum(calls) / len(calls),
                                      oracle_calls_std=float(torch.tensor(calls, dtype=DOUBLE).std()) if len(calls) > 1 else 0.0)
            entry["methods"]["vr-halpern"] = {"seeds": seeds, "runs": [{k: v for k, v in r.items() if k != "trace"}
                                                                      for r in vr_runs]}
            if not ctx.quick:
                for method in ("halpern", "vr-halpern"):
                    options = {"step": 0.25 / operator.full_lipschitz} if method == "halpern" else {}
                    plain = _run(operator, d, method, options, budget)
                    entry["methods"][method]["without_restart"] = {k: v for k, v in plain.items() if k != "trace"}
            vr_calls = best["vr-halpern"]["oracle_calls_mean"]
            for method in ("vr-halpern", "halpern", "extragradient"):
                r = best[method]
                ratio = r["oracle_calls"] / vr_calls if r["success"] else math.nan
                rows.append([lam, method, r["status"], r["oracle_calls"], r["oracle_calls"] / n, ratio,
                             r["residual"], r["seconds"]])
            entry["ratio_halpern_over_vr"] = best["halpern"]["oracle_calls"] / vr_calls
            entry["ratio_extragradient_over_vr"] = best["extragradient"]["oracle_calls"] / vr_calls
            entry["vr_halpern_fewest"] = bool(best["vr-halpern"]["success"] and all(
                vr_calls < best[m]["oracle_calls"] or not best[m]["success"] for m in ("halpern", "extragradient")))
            figures["problems"][key] = entry
            plots.append(_plot(ctx, key, best))
    markdown = "\n".join([
        "### (c) Finite-sum monotone inclusion: single-component oracle calls to residual 1e-6",
        f"Regularized bilinear game, n = {n} components, x, y ∈ ℝ^{d}; deterministic methods: best of a "
        "3-step sweep (quick: the full-mode winners only); the Halpern methods restart when the residual halves; ratio = calls / VR-Halpern's.",
        "",
        markdown_table(["λ", "method", "status", "oracle calls", "epochs (calls/n)", "ratio to VR-Halpern",
                        "residual", "time s"], rows)])
    return markdown, figures, plots


def _plot(ctx: BenchContext, key: str, best: dict[str, dict[str, Any]]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, r in best.items():
        calls, residuals = r["trace"]
        ax.semilogy(calls, residuals, label=method)
    ax.axhline(TOL, color="gray", linestyle=":")
    ax.set_xlabel("single-component oracle calls")
    ax.set_ylabel("natural residual ‖z − J_G(z − F(z))‖")
    ax.set_title(f"finite-sum bilinear game, {key}")
    ax.legend()
    path = ctx.out_dir / f"fixed_point_monotone_{key.replace('=', '_')}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
