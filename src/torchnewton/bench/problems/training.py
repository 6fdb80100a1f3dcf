"""Training runs for optimizer benchmarks: one loop, one schedule, one clock for every optimizer.

A run is fixed by (task, optimizer, learning rate, seed, step budget): the seed sets the model's
initialization and the order of the training minibatches, so two optimizers with the same seed
start from the same weights and see the same batches. Every optimizer gets the same learning-
rate schedule, a multiplier on each param group's initial ``lr``:

    linear warm-up over the first ``warmup`` fraction of the steps, constant, then a linear
    decay to 0 over the last ``decay`` fraction ("trapezoidal" / warmup-stable-decay),

applied to every param group (for a hybrid optimizer both its matrix lr and its AdamW lr), as
``torch.optim.lr_scheduler.LambdaLR`` would. The clock counts only training (batch, forward,
backward, ``optimizer.step()``), not the validation evaluations; ``optimizer.step()`` is also
timed alone.

Besides the validation loss a run records the training loss of every minibatch (the final
training loss is their mean over the last evaluation interval, the usual logged figure: noisy, but
the same for every optimizer) and, for a task with a ``val_accuracy(model)`` method (a classifier),
the final validation accuracy, so a reader can tell a better fit from a better-calibrated one.

Steps to a target loss under a decaying schedule are measured by a budget scan (``budget_scan``):
the loss a run reaches at step B of a schedule that decays to 0 at T > B is not the loss of a run
whose schedule decays to 0 at B (the annealing phase gives most of the final drop), so each budget
B gets its own run under ``schedule(step, B)``, and the steps to a target are

    B*(target) = min { B in the scanned budgets : mean over seeds of L_B(seed) <= target },

L_B(seed) the final validation loss of the run with budget B: the budget-aware comparison of
Kaddour et al. 2023, "No Train No Gain: Revisiting Efficient Training Algorithms for
Transformer-based Language Models", and of Wen et al. 2025, "Fantastic Pretraining Optimizers and
Where to Find Them" (speedups as ratios of the budgets reaching one loss), and the way the
modded-nanogpt speedrun records count steps to a target loss (each record its own schedule).

Example:
    >>> from torchnewton.bench.problems.digits_cnn import DigitsTask
    >>> curve = train(DigitsTask(batch_size=16), lambda m, lr: torch.optim.AdamW(m.parameters(), lr),
    ...               lr=1e-3, seed=0, steps=4, eval_every=2)
    >>> curve.steps
    [0, 2, 4]
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
from torch import nn

WARMUP, DECAY = 0.05, 0.3


class TrainingTask(Protocol):
    name: str

    def describe(self) -> str: ...
    def model(self, seed: int) -> nn.Module: ...
    def batch(self, generator: torch.Generator) -> Any: ...
    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...
    def val_loss(self, model: nn.Module) -> float: ...
    # optional: def val_accuracy(self, model: nn.Module) -> float (classifiers)


# an optimizer-like object: step(), zero_grad(), param_groups
BuildOptimizer = Callable[[nn.Module, float], Any]


@dataclass
class Curve:
    """Validation loss at ``steps`` (0 = initialization), training seconds at those steps, the
    duration of every ``optimizer.step()`` and the training loss of every minibatch; the final
    validation accuracy (None: the task has no accuracy). ``diverged``: the training loss became
    non-finite; the run stopped there and its final loss is +inf."""

    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    batch_loss: list[float] = field(default_factory=list)
    val_accuracy: float | None = None
    diverged: bool = False

    @property
    def final(self) -> float:
        return math.inf if self.diverged else self.val_loss[-1]

    def final_train_loss(self, window: int) -> float:
        """Mean training (minibatch) loss of the last ``window`` steps; +inf for a diverged run."""
        if self.diverged or not self.batch_loss:
            return math.inf
        return statistics.fmean(self.batch_loss[-window:])

    def record(self, step: int, seconds: float, val_loss: float) -> None:
        self.steps.append(step)
        self.seconds.append(seconds)
        self.val_loss.append(val_loss)


def schedule(step: int, total: int, warmup: float = WARMUP, decay: float = DECAY) -> float:
    """The lr multiplier at ``step`` (0-based) of ``total``.

    Example:
        >>> [round(schedule(s, 40), 2) for s in (0, 1, 20, 39)]
        [0.5, 1.0, 1.0, 0.08]
    """
    warm = max(1, round(warmup * total))
    cool = max(1, round(decay * total))
    if step < warm:
        return (step + 1) / warm
    return min(1.0, (total - step) / cool)


def train(task: TrainingTask, build: BuildOptimizer, *, lr: float, seed: int, steps: int,
          eval_every: int) -> Curve:
    """Train ``task.model(seed)`` for ``steps`` steps with ``build(model, lr)``."""
    model = task.model(seed)
    optimizer = build(model, lr)
    groups = optimizer.param_groups
    initial = [g["lr"] for g in groups]
    generator = torch.Generator().manual_seed(seed)
    curve = Curve()
    curve.record(0, 0.0, task.val_loss(model))
    clock = 0.0
    for step in range(steps):
        start = time.perf_counter()
        factor = schedule(step, steps)
        for group, lr0 in zip(groups, initial):
            group["lr"] = lr0 * factor
        loss = task.loss(model, task.batch(generator))
        if not torch.isfinite(loss):
            curve.diverged = True
            break
        curve.batch_loss.append(loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        before_step = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        curve.step_seconds.append(end - before_step)
        clock += end - start
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            value = task.val_loss(model)
            if not math.isfinite(value):
                curve.diverged = True
                break
            curve.record(step + 1, clock, value)
    accuracy = getattr(task, "val_accuracy", None)
    if accuracy is not None and not curve.diverged:
        curve.val_accuracy = accuracy(model)
    return curve


@dataclass
class LrSweep:
    """Runs of one optimizer: ``runs[lr][seed]``. The best lr has the lowest final validation loss
    averaged over ``sweep_seeds`` (a diverged run counts as +inf); it alone is also run on the
    remaining ``seeds``."""

    runs: dict[float, dict[int, Curve]]
    sweep_seeds: tuple[int, ...]
    seeds: tuple[int, ...]

    def mean_final(self, lr: float, seeds: tuple[int, ...] | None = None) -> float:
        finals = self.finals(lr, seeds or self.sweep_seeds)
        return math.inf if not all(map(math.isfinite, finals)) else statistics.fmean(finals)

    def finals(self, lr: float, seeds: tuple[int, ...] | None = None) -> list[float]:
        return [self.runs[lr][s].final for s in (seeds or self.seeds)]

    def final_train_losses(self, window: int) -> list[float]:
        """The best lr's final training loss (``Curve.final_train_loss``) on every seed."""
        return [self.runs[self.best_lr][s].final_train_loss(window) for s in self.seeds]

    def final_accuracies(self) -> list[float] | None:
        """The best lr's final validation accuracy on every seed (None: not measured or diverged)."""
        values = [self.runs[self.best_lr][s].val_accuracy for s in self.seeds]
        return None if any(v is None for v in values) else values

    @property
    def best_lr(self) -> float:
        return min(self.runs, key=self.mean_final)

    def mean_curve(self) -> tuple[list[int], list[float], list[float]]:
        """(steps, validation loss, seconds) of the best lr averaged over ``seeds``; from the
        first evaluation a diverged seed misses, the loss is +inf."""
        curves = [self.runs[self.best_lr][s] for s in self.seeds]
        longest = max(curves, key=lambda c: len(c.steps))
        losses, seconds = [], []
        for i in range(len(longest.steps)):
            values = [c.val_loss[i] if i < len(c.val_loss) else math.inf for c in curves]
            losses.append(statistics.fmean(values) if all(map(math.isfinite, values)) else math.inf)
            seconds.append(statistics.fmean(c.seconds[min(i, len(c.seconds) - 1)] for c in curves))
        return list(longest.steps), losses, seconds


def lr_sweep(task: TrainingTask, build: BuildOptimizer, grid: tuple[float, ...], *,
             sweep_seeds: tuple[int, ...], seeds: tuple[int, ...], steps: int, eval_every: int,
             track: Callable[..., Any] = lambda iterable, **kwargs: iterable) -> LrSweep:
    """Train every lr of ``grid`` on ``sweep_seeds``, then the best lr on the rest of ``seeds``."""
    if not grid or not set(sweep_seeds) <= set(seeds):
        raise ValueError(f"need a non-empty grid and sweep_seeds within seeds, got {grid}, {sweep_seeds}, {seeds}")
    run = lambda lr, seed: train(task, build, lr=lr, seed=seed, steps=steps, eval_every=eval_every)
    runs = {lr: {seed: run(lr, seed) for seed in sweep_seeds} for lr in track(grid, desc="lr sweep")}
    sweep = LrSweep(runs, tuple(sweep_seeds), tuple(seeds))
    best = sweep.best_lr
    for seed in seeds:
        if seed not in runs[best]:
            runs[best][seed] = run(best, seed)
    return sweep


def steps_to(target: float, steps: list[int], losses: list[float]) -> int | None:
    """The first step whose loss is at or below ``target`` (None: never)."""
    return next((s for s, v in zip(steps, losses) if v <= target), None)


def smallest_budget(target: float, means: dict[int, float]) -> int | None:
    """The smallest budget whose seed-mean final loss is at or below ``target`` (None: none).

    Example:
        >>> smallest_budget(1.0, {50: 1.2, 70: 0.9, 100: 0.8})
        70
    """
    return min((b for b, v in means.items() if v <= target), default=None)


@dataclass
class BudgetScan:
    """One optimizer at one lr trained for several step budgets, each under its own whole schedule
    (``schedule(step, budget)``: warm-up and decay compressed to the budget): ``finals[budget]``
    holds the final validation loss of every seed in ``seeds`` (+inf: diverged)."""

    lr: float
    seeds: tuple[int, ...]
    finals: dict[int, list[float]]

    def mean(self, budget: int) -> float:
        values = self.finals[budget]
        return statistics.fmean(values) if all(map(math.isfinite, values)) else math.inf

    def std(self, budget: int) -> float:
        values = self.finals[budget]
        return statistics.stdev(values) if len(values) > 1 and all(map(math.isfinite, values)) else math.inf

    def smallest_reaching(self, target: float) -> int | None:
        """``B*(target)``: the smallest scanned budget whose seed-mean final loss is <= target."""
        return smallest_budget(target, {b: self.mean(b) for b in self.finals})


def budget_scan(task: TrainingTask, build: BuildOptimizer, *, lr: float, seeds: tuple[int, ...],
                budgets: tuple[int, ...], known: dict[int, list[float]] | None = None) -> BudgetScan:
    """Train ``build`` at ``lr`` for every budget in ``budgets`` on every seed, each run under the
    schedule of its own budget, evaluated once at its end. ``known[budget]``: the seeds' final
    losses of runs already made (a sweep's runs at the full budget are the same runs), not rerun.

    Example:
        >>> from torchnewton.bench.problems.digits_cnn import DigitsTask
        >>> scan = budget_scan(DigitsTask(batch_size=16), lambda m, lr: torch.optim.AdamW(m.parameters(), lr),
        ...                    lr=1e-3, seeds=(0, 1), budgets=(2, 4))
        >>> sorted(scan.finals), len(scan.finals[4])
        ([2, 4], 2)
    """
    if not seeds:
        raise ValueError("budget_scan: seeds must not be empty")
    if not budgets or any(not isinstance(b, int) or b < 1 for b in budgets):
        raise ValueError(f"budget_scan: budgets must be positive integers, got {budgets}")
    known = known or {}
    if any(len(v) != len(seeds) for v in known.values()):
        raise ValueError("budget_scan: every known budget needs one final loss per seed")
    finals = {b: list(known[b]) if b in known
              else [train(task, build, lr=lr, seed=s, steps=b, eval_every=b).final for s in seeds]
              for b in sorted(set(budgets))}
    return BudgetScan(lr, tuple(seeds), finals)


def interleaved_step_times(task: TrainingTask, builds: dict[str, tuple[BuildOptimizer, float]], *,
                           rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds of ``optimizer.step()`` alone for each optimizer, measured in turns.

    Each optimizer gets its own copy of ``task.model(seed)`` and the same gradient (one minibatch).
    In each round every optimizer steps once, in an order rotated from round to round, so slow
    drifts of the machine (other processes, CPU frequency) fall on all of them alike. A first,
    untimed round creates the optimizer states.
    """
    models = {name: task.model(seed) for name in builds}
    reference = task.model(seed)
    task.loss(reference, task.batch(torch.Generator().manual_seed(seed))).backward()
    gradients = [p.grad.detach().clone() for p in reference.parameters()]
    optimizers = {name: build(models[name], lr) for name, (build, lr) in builds.items()}
    names = list(builds)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds + 1):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            for p, g in zip(models[name].parameters(), gradients):
                p.grad = g.clone()
            start = time.perf_counter()
            optimizers[name].step()
            if r:
                times[name].append(time.perf_counter() - start)
    return times


def median_and_min(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), min(times)
