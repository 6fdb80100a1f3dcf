"""Choosing SOR's ω for each system of a sequence from iteration counts alone (a bandit problem).

Khodak, Chow, Balcan & Talwalkar, "Learning to Relax: Setting Solver Parameters Across a
Sequence of Linear System Instances" (ICLR 2024): with ω restricted to a grid, the cost of each
system (its iteration count, normalized to [0, 1] by the iteration cap) is a bandit loss, and
Tsallis-INF (Zimmert & Seldin 2021) attains regret O(√(KT)) against the best fixed ω in
hindsight. With a scalar context per system (e.g. a diagonal shift or diffusion coefficient),
ChebCB regresses each arm's cost on Chebyshev polynomials of the context and samples by
inverse-gap weighting, approaching the instance-optimal ω.

``omega="bandit"`` plays :class:`~torchnewton.linear.unimodal_bandit.UnimodalThompsonSampling`
by default (``algorithm="unimodal"``): the mean cost is unimodal in ω, and a bandit that only
explores around its leader reached 1.03x the best fixed ω's iterations on the paper's sequence at
T = 5000 where Tsallis-INF, which treats the 20 arms as unrelated, reached 1.18x (``bench linear
--full``, 10 seeds; 1.14x and 1.70x at T = 500), and it stayed ahead on the other sequences there. ``algorithm="tsallis-inf"`` plays the paper's algorithm, whose regret bound
holds for any (adversarial) sequence of costs; the unimodal bandit assumes i.i.d. systems.

Example:
    >>> bandit = TsallisINF(3, seed=0)
    >>> arm = bandit.select(); bandit.update(arm, 0.2)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .relaxation import sor
from .unimodal_bandit import UnimodalThompsonSampling

BANDIT_ALGORITHMS = ("unimodal", "tsallis-inf")


class TsallisINF:
    """½-Tsallis-INF for K arms (Zimmert & Seldin 2021):
    p_i = 4 / (η_t (L̂_i/s_t − x))², x the normalizer (Σp = 1), η_t = 2/√t, L̂ the importance-
    weighted cumulative losses. ``normalization="mean"`` divides L̂ by s_t, the mean loss observed
    so far — the normalization of Khodak et al.'s experiments, so that raw iteration counts of any
    size can be fed; ``"none"`` (s = 1) is the textbook algorithm for losses in [0, 1], for which
    the O(√(KT)) regret bound holds."""

    def __init__(self, n_arms: int, *, seed: int = 0, normalization: str = "mean"):
        if n_arms < 1:
            raise ValueError(f"n_arms must be >= 1, got {n_arms}")
        if normalization not in ("mean", "none"):
            raise ValueError(f"normalization must be 'mean' or 'none', got {normalization!r}")
        self.n_arms, self.normalization = n_arms, normalization
        self.cumulative = np.zeros(n_arms)
        self.t = 0
        self.observed = 0.0
        self.rng = np.random.default_rng(seed)
        self.probabilities = np.full(n_arms, 1.0 / n_arms)

    def _scale(self) -> float:
        if self.normalization == "none" or self.t <= 1 or self.observed <= 0:
            return 1.0
        return self.observed / (self.t - 1)

    def _distribution(self) -> np.ndarray:
        eta = 2.0 / math.sqrt(self.t)
        L = self.cumulative / self._scale()
        x = L.min() - 2.0 / eta  # here the smallest-loss arm alone has weight 1: Σp >= 1
        for _ in range(100):  # Newton on Σp(x) = 1, monotone from the left
            gap = eta * (L - x)
            p = 4.0 / gap**2
            f = p.sum() - 1.0
            if abs(f) < 1e-12:
                break
            x -= f / (2.0 * eta * (p / gap).sum())
        p = 4.0 / (eta * (L - x)) ** 2
        return p / p.sum()

    def select(self) -> int:
        self.t += 1
        self.probabilities = self._distribution()
        return int(self.rng.choice(self.n_arms, p=self.probabilities))

    def update(self, arm: int, loss: float) -> None:
        """Feed the loss (≥ 0; in [0, 1] for ``normalization="none"``) of the arm just played."""
        if not loss >= 0 or (self.normalization == "none" and loss > 1):
            raise ValueError(f"loss must be >= 0 (and <= 1 without normalization), got {loss}")
        self.observed += loss
        self.cumulative[arm] += loss / self.probabilities[arm]


class ChebyshevContextualBandit:
    """ChebCB (Khodak et al. 2024, §4): per arm, least-squares regression of the normalized
    loss on the Chebyshev polynomials T₀…T_d of the context (mapped to [−1, 1] from
    ``context_range``); the action is sampled by inverse-gap weighting (SquareCB, Foster &
    Rakhlin 2020): p_i = 1/(K + η_t (ŷ_i − ŷ*)) for every arm but the predicted best, which
    takes the rest. Losses are divided by their running mean; η_t = γ√(K t). This is a
    simplification of the authors' code, whose η_t is data-dependent (from the regression's
    residuals) and whose fit is box-constrained by a Lipschitz bound on the cost."""

    def __init__(self, n_arms: int, context_range: tuple[float, float], *, degree: int = 5, gamma: float = 4.0,
                 ridge: float = 1e-6, seed: int = 0):
        low, high = context_range
        if not high > low:
            raise ValueError(f"context_range must be (low, high) with high > low, got {context_range}")
        if n_arms < 1 or degree < 0:
            raise ValueError(f"n_arms must be >= 1 and degree >= 0, got {n_arms}, {degree}")
        self.n_arms, self.low, self.high, self.degree, self.gamma, self.ridge = n_arms, low, high, degree, gamma, ridge
        self.rng = np.random.default_rng(seed)
        self.gram = np.zeros((n_arms, degree + 1, degree + 1))
        self.moment = np.zeros((n_arms, degree + 1))
        self.coefficients = np.zeros((n_arms, degree + 1))  # each arm's fit, refreshed when it is played
        self.t = 0
        self.observed = 0.0
        self.probabilities = np.full(n_arms, 1.0 / n_arms)

    def features(self, context: float) -> np.ndarray:
        s = float(np.clip(2 * (context - self.low) / (self.high - self.low) - 1, -1, 1))
        return np.polynomial.chebyshev.chebvander(s, self.degree)[0]

    def predictions(self, context: float) -> np.ndarray:
        """Predicted loss of every arm at this context (0 for an arm never played, which makes
        it look best and so gets it tried)."""
        return self.coefficients @ self.features(context)

    def select(self, context: float) -> int:
        self.t += 1
        y = self.predictions(context)
        best = int(np.argmin(y))
        eta = self.gamma * math.sqrt(self.n_arms * self.t)
        scale = self.observed / (self.t - 1) if self.t > 1 and self.observed > 0 else 1.0
        p = 1.0 / (self.n_arms + eta * (y - y[best]) / scale)
        p[best] = 0.0
        p[best] = 1.0 - p.sum()
        self.probabilities = p
        return int(self.rng.choice(self.n_arms, p=p))

    def update(self, arm: int, context: float, loss: float) -> None:
        if not loss >= 0:
            raise ValueError(f"loss must be >= 0, got {loss}")
        self.observed += loss
        # raw sufficient statistics; the gaps are divided by the running mean loss in select
        phi = self.features(context)
        self.gram[arm] += np.outer(phi, phi)
        self.moment[arm] += loss * phi
        eye = self.ridge * np.eye(self.degree + 1)
        self.coefficients[arm] = np.linalg.lstsq(self.gram[arm] + eye, self.moment[arm], rcond=None)[0]


def make_bandit(algorithm: str, n_arms: int, *, seed: int = 0, normalization: str = "mean"):
    """The non-contextual bandit behind ``omega="bandit"``: ``"unimodal"`` (UTS over the ordered
    grid; losses fed raw, its draws scale with them) or ``"tsallis-inf"`` (losses over their
    running mean for ``normalization="mean"``, else taken as given in [0, 1])."""
    if algorithm == "unimodal":
        return UnimodalThompsonSampling(n_arms, seed=seed)
    if algorithm == "tsallis-inf":
        return TsallisINF(n_arms, seed=seed, normalization="mean" if normalization == "mean" else "none")
    raise ValueError(f"algorithm must be one of {BANDIT_ALGORITHMS}, got {algorithm!r}")


@dataclass
class RelaxationSequence:
    """Outcome of :func:`solve_sor_sequence`: per system the ω used, its iteration count and result."""

    omegas: list[float]
    iterations: list[int]
    results: list[Any] = field(repr=False)

    @property
    def total_iterations(self) -> int:
        return int(sum(self.iterations))


def solve_sor_sequence(systems: Sequence[tuple[Any, torch.Tensor]], *, omega: float | str = "bandit",
                       grid: Sequence[float] | None = None, contexts: Sequence[float] | None = None,
                       rtol: float = 1e-8, maxiter: int = 5000, seed: int = 0, degree: int = 5,
                       gamma: float = 4.0, normalization: str = "mean",
                       algorithm: str = "unimodal") -> RelaxationSequence:
    """Solve each (A, b) by SOR, choosing ω per system.

    ``omega`` is a fixed number, ``"bandit"`` (over ``grid``: ``algorithm="unimodal"``, the
    default, or ``"tsallis-inf"``, see :func:`make_bandit`) or ``"contextual"`` (ChebCB on
    ``contexts``, one scalar per system). Systems that hit ``maxiter`` cost maxiter
    (the paper's convention). The loss fed to the bandit is the iteration count minus one (the
    least any ω can cost), divided by the running mean loss (``normalization="mean"``, as in the
    paper's experiments) or by ``maxiter`` (``"maxiter"``: losses in [0, 1], the setting of the
    regret bound). The default grid is 1.0, 1.05, …, 1.9.
    """
    if normalization not in ("mean", "maxiter"):
        raise ValueError(f"normalization must be 'mean' or 'maxiter', got {normalization!r}")
    if algorithm not in BANDIT_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {BANDIT_ALGORITHMS}, got {algorithm!r}")
    grid = list(grid) if grid is not None else [1.0 + 0.05 * i for i in range(19)]
    if any(not 0 < w < 2 for w in grid):
        raise ValueError(f"every grid value must be in (0, 2), got {grid}")
    if omega == "contextual":
        if contexts is None or len(contexts) != len(systems):
            raise ValueError("omega='contextual' needs one context per system (contexts=)")
        contextual = ChebyshevContextualBandit(len(grid), (min(contexts), max(contexts) + 1e-12),
                                               degree=degree, gamma=gamma, seed=seed)
    elif omega == "bandit":
        bandit = make_bandit(algorithm, len(grid), seed=seed, normalization=normalization)
    elif isinstance(omega, str) or not isinstance(omega, (int, float)):
        raise ValueError(f"omega must be a number, 'bandit' or 'contextual', got {omega!r}")
    omegas, iterations, results = [], [], []
    for t, (A, b) in enumerate(systems):
        if omega == "bandit":
            arm = bandit.select()
        elif omega == "contextual":
            arm = contextual.select(float(contexts[t]))
        w = grid[arm] if isinstance(omega, str) else float(omega)
        result = sor(A, b, omega=w, rtol=rtol, maxiter=maxiter)
        cost = int(result.nit) if result.success else maxiter
        loss = max(cost - 1, 0) / (maxiter if normalization == "maxiter" else 1.0)
        if omega == "bandit":
            bandit.update(arm, loss)
        elif omega == "contextual":
            contextual.update(arm, float(contexts[t]), loss)
        omegas.append(w)
        iterations.append(cost)
        results.append(result)
    return RelaxationSequence(omegas, iterations, results)


def regret(chosen_costs: Sequence[float], table: np.ndarray) -> dict[str, float]:
    """Regret of a sequence of costs against the best fixed arm (columns of ``table`` (T, K),
    the cost of every arm on every system) and against the per-instance best arm."""
    table = np.asarray(table, dtype=float)
    total = float(np.sum(chosen_costs))
    fixed = table.sum(axis=0)
    best = int(np.argmin(fixed))
    return {"total": total, "best_fixed_total": float(fixed[best]), "best_fixed_arm": best,
            "regret_vs_best_fixed": total - float(fixed[best]),
            "ratio_vs_best_fixed": total / float(fixed[best]),
            "instance_optimal_total": float(table.min(axis=1).sum())}


def play_table(table: np.ndarray, *, omega: str = "bandit", contexts: Sequence[float] | None = None,
               seed: int = 0, degree: int = 5, gamma: float = 4.0, normalization: str = "mean",
               maxiter: int = 5000, algorithm: str = "unimodal") -> tuple[list[int], list[float]]:
    """Run a bandit against a precomputed cost table (T, K) — the iteration count of every grid ω
    on every system, e.g. from :func:`~torchnewton.linear.relaxation_table.sor_iteration_table`.
    SOR is deterministic, so this is the sequence :func:`solve_sor_sequence` would produce on the
    same systems (same ``seed``, ``normalization``, ``maxiter`` and ``algorithm``), at no solve cost. Returns
    (arms chosen, their costs)."""
    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError(f"table must be (T, K) with T >= 1, got shape {table.shape}")
    if normalization not in ("mean", "maxiter"):
        raise ValueError(f"normalization must be 'mean' or 'maxiter', got {normalization!r}")
    if algorithm not in BANDIT_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {BANDIT_ALGORITHMS}, got {algorithm!r}")
    count, arms = table.shape
    divisor = float(maxiter) if normalization == "maxiter" else 1.0
    if omega == "bandit":
        bandit = make_bandit(algorithm, arms, seed=seed, normalization=normalization)
    elif omega == "contextual":
        if contexts is None or len(contexts) != count:
            raise ValueError("omega='contextual' needs one context per system (contexts=)")
        contextual = ChebyshevContextualBandit(arms, (min(contexts), max(contexts) + 1e-12), degree=degree,
                                               gamma=gamma, seed=seed)
    else:
        raise ValueError(f"omega must be 'bandit' or 'contextual', got {omega!r}")
    chosen, costs = [], []
    for t in range(count):
        arm = bandit.select() if omega == "bandit" else contextual.select(float(contexts[t]))
        cost = float(table[t, arm])
        if omega == "bandit":
            bandit.update(arm, max(cost - 1, 0.0) / divisor)
        else:
            contextual.update(arm, float(contexts[t]), max(cost - 1, 0.0) / divisor)
        chosen.append(arm)
        costs.append(cost)
    return chosen, costs
