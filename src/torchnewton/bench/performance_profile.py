"""Dolan–Moré performance profiles (Dolan & Moré 2002, "Benchmarking optimization software with
performance profiles").

For solver s and problem p with cost t_{p,s} (∞ when s fails on p), the ratio
r_{p,s} = t_{p,s} / min_s t_{p,s}; the profile ρ_s(τ) is the fraction of problems with r_{p,s} ≤ τ.
ρ_s(1) is how often s is the cheapest, ρ_s(∞) how often it solves the problem at all.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def performance_ratios(costs: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Ratios per solver; problems no solver solves are dropped, failures are ∞."""
    table = np.array([costs[s] for s in costs], dtype=float)  # (solvers, problems)
    best = np.min(table, axis=0)
    keep = np.isfinite(best)
    ratios = table[:, keep] / best[keep]
    return {s: ratios[i] for i, s in enumerate(costs)}


def plot_profile(costs: dict[str, list[float]], path: Path, *, title: str, tau_max: float = 100.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = performance_ratios(costs)
    taus = np.logspace(0, np.log10(tau_max), 400)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for solver, r in ratios.items():
        fraction = [(r <= t).mean() if r.size else 0.0 for t in taus]
        ax.step(taus, fraction, where="post", label=solver, linestyle="-" if solver.startswith("tn:") else "--")
    ax.set_xscale("log")
    ax.set_xlabel("τ (cost within a factor τ of the best)")
    ax.set_ylabel("fraction of problems")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
