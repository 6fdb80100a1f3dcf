"""Training benchmark of ``torchnewton.optim`` (the Muon family) against AdamW, torch.optim.Muon
and pytorch-optimizer's Muon (and, in full mode, its AdaMuon and NorMuon).

Two tasks (``bench/problems``): a character-level Transformer on ``pydoc_data.topics`` and a
small CNN on scikit-learn's digits. For each task every optimizer trains the same model from the
same initializations on the same minibatches, for the same number of steps, under the same lr
schedule (``problems.training``):

1. AdamW's lr sweep first; its best lr is then the ``adamw_lr`` of every hybrid optimizer
   (embeddings, output head, norms and biases), so the hybrids differ only in the matrix update;
2. every other optimizer's sweep of its own lr (a grid around the lr scale of its update rule:
   AdamW-sized, Muon-sized, ...), the best by the final validation loss averaged over the sweep
   seeds;
3. the best lr on the remaining seeds: the final validation loss is reported as mean ± std over
   seeds 0, 1, 2. The sweep runs on all three seeds where that is cheap (the CNN) and on seed 0
   alone for the Transformer (``Plan.sweep_seeds``).

A control row trains only the parameters outside the hidden matrices (AdamW at AdamW's best lr,
hidden matrices frozen at their initialization): where it, too, reaches AdamW's loss, the task's
budget does not separate the matrix updates, and the goal line says so.

Steps to AdamW's loss: the first evaluation step at which an optimizer's validation loss,
averaged over the three seeds, is at or below AdamW's seed-averaged final validation loss
(AdamW's own count is computed the same way).

Budget scan (the goal's measure of steps to AdamW's loss): under a schedule that decays to 0 at the
budget, the loss an optimizer has at 70 % of a long run is not the loss it reaches with a schedule
of 70 % of the steps; the curve intersection above mostly measures where the annealing phase
falls. So torchnewton's Muon, torch.optim.Muon (the reference) and AdamW (the check of the
method: a well-tuned AdamW should not reach its own full-budget loss with fewer steps) are rerun at
their best lr of the full-budget sweep for budgets of ``Plan.budget_fractions`` of the steps, each
with the whole schedule compressed to the budget, on the same seeds (same initializations, the
first minibatches of the same order; ``training.budget_scan``). The lr is not re-tuned per budget:
a sweep containing it could only lower a shorter budget's loss, so for Muon the scan is
conservative (and AdamW's check of the method lenient). An optimizer's steps to AdamW's loss are the smallest budget whose seed-mean final
validation loss is at or below AdamW's seed-mean final loss (the full budget's runs are the
sweep's); the goal divides them by AdamW's own smallest such budget (the full one unless a shorter
AdamW run reaches it too).

Optimizer step time: ``optimizer.step()`` alone, each optimizer at its best lr, measured in
interleaved rounds on one fixed gradient (``training.interleaved_step_times``); median and minimum
over rounds, and torch.optim.Muon's median divided by each median (> 1: faster than
torch.optim.Muon).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchnewton.bench.peers.optimizers import BETAS, EPS, PEERS, OptimizerSpec, Unavailable, load, split
from torchnewton.bench.problems.char_transformer import CharConfig, CharTask
from torchnewton.bench.problems.digits_cnn import DigitsTask
from torchnewton.bench.problems.training import (
    BudgetScan,
    LrSweep,
    TrainingTask,
    budget_scan,
    interleaved_step_times,
    lr_sweep,
    median_and_min,
    steps_to,
)
from torchnewton.bench.suite import BenchContext, Section, markdown_table, torch_threads

SEEDS = (0, 1, 2)
BASELINE = "AdamW"
TORCH_MUON = "torch.optim.Muon (+AdamW)"
OURS = "torchnewton Muon"
STEP_GOAL = 0.7
SCANNED = (OURS, TORCH_MUON, BASELINE)  # the budget scan's optimizers: the goal's, the reference, the control


@dataclass(frozen=True)
class Plan:
    """One task's budget. An optimizer's lr grid is ``centers[spec.lr_kind] * factors`` (rounded
    to 2 significant digits); the kind "frozen" (the control) has the single lr 0.
    ``budget_fractions``: the shorter budgets of the budget scan, as fractions of ``steps``
    (empty: no scan)."""

    task: TrainingTask
    steps: int
    eval_every: int
    sweep_seeds: tuple[int, ...]
    timing_rounds: int
    centers: dict[str, float]
    factors: tuple[float, ...]
    budget_fractions: tuple[float, ...] = ()

    def budgets(self) -> tuple[int, ...]:
        """The scanned budgets in steps, the full one (the sweep's runs) last."""
        return tuple(sorted({max(1, round(f * self.steps)) for f in self.budget_fractions} | {self.steps}))

    def grid(self, kind: str) -> tuple[float, ...]:
        if kind == "frozen":
            return (0.0,)
        return tuple(float(f"{self.centers[kind] * f:.2g}") for f in self.factors)


# Grid centers, placed at each method's best lr in pilot runs (seed 0, quick sizes): "adamw" and
# "muon" are AdamW-sized and Muon-sized lrs; AuON's update has Frobenius norm <= 1, so its spectral
# norm matches Muon's (1) only for a rank-one momentum and is smaller otherwise: Muon-sized lrs or
# larger; ROOT, AdaMuon and NorMuon scale to update RMS 0.2 (AdamW-sized lrs); "clip" is
# SpectralClip(AdamW) with max_sv = 1, whose matrix steps are at most lr in spectral norm
# (Muon-sized lrs).
CHAR_CENTERS = {"adamw": 0.01, "muon": 0.025, "auon": 0.03, "hybrid_auon": 0.004, "pion": 0.004, "root": 0.01,
                "adamuon": 3e-3, "normuon": 0.025, "po_adamuon": 0.01, "po_normuon": 0.025, "clip": 0.03}
DIGITS_CENTERS = {"adamw": 0.01, "muon": 0.01, "auon": 0.08, "hybrid_auon": 0.1, "pion": 0.1, "root": 0.012,
                  "adamuon": 0.03, "normuon": 3e-3, "po_adamuon": 0.01, "po_normuon": 0.01, "clip": 0.02}
# full mode: larger Transformer, longer runs; centers moved where full-size pilots (seed 0) found
# the best lr at the end of the quick centers' grid
CHAR_FULL_CENTERS = {**CHAR_CENTERS, "adamw": 0.0025, "hybrid_auon": 0.02, "pion": 0.02, "adamuon": 0.012,
                     "normuon": 0.006, "po_adamuon": 0.012}
DIGITS_FULL_CENTERS = {**DIGITS_CENTERS, "auon": 0.16, "hybrid_auon": 0.05, "adamuon": 0.015}
# The digits CNN runs without normalization (``DigitsTask(norm=False)``), the model the centers above
# were piloted on. Its conv-BN-ReLU form (norm=True, the standard small CNN) was measured too with
# this suite's code (lr_sweep, steps_to; 3 seeds): Muon starts far faster (mean val loss 0.34 vs
# AdamW's 1.11 at step 20 of 100) and ends at a lower or equal validation loss, yet reaches AdamW's
# final loss late. Pilots (a variant with a bias before each BN: the same function, another head
# initialization), best lrs inside their grids:
#   quick: AdamW lrs 0.002-0.016, best 0.004, 0.0560; Muon 0.01-0.32, best 0.08, 0.0475;
#          reached at 90 % of AdamW's steps (per seed 90/100, never, 70/80);
#   full:  AdamW 0.00025-0.008, best 0.001, 0.0457; Muon 0.005-0.16, best 0.02, 0.0448;
#          reached at 240 of 270 steps, 89 % (per seed 240/270, never, 195/255).
# Whole runs of the suite on norm=True (every optimizer; other centers not re-piloted):
#   quick (centers AdamW 0.004, Muon 0.08; both best lrs then at the top of their grids, 0.01 and
#          0.2): 0.0470 vs 0.0495, reached at 100 %;
#   full  (centers 0.002 / 0.04; AdamW best 0.002 inside, Muon best 0.08 at the top of a
#          non-monotone sweep, 0.0379 0.0487 0.0454 0.0343 for 0.01-0.08): 0.0343 vs 0.0365,
#          reached at 270 of 285 steps, 95 % (torch.optim.Muon 74 %, ROOT 74 %).
# The sweeps' seed-to-seed spread (std ~0.01) is larger than the optimizers' differences. Both
# optimizers approach the same floor (about 0.035-0.045 on the 360 validation images, set by a few
# hard ones), so the <= 70 % goal is met by neither model; the task stays the one whose family-wide
# centers were piloted.
# Budget scans (``training.budget_scan``; full digits plan with AdamW, torch.optim.Muon, torchnewton
# Muon and the control only; budgets 150 180 210 240 300):
#   norm=False (the task): torchnewton Muon's seed-mean final loss misses AdamW's 0.0730 at every
#          budget (0.161 0.126 0.097 0.085 0.086), torch.optim.Muon too; AdamW's own 240-step run
#          reaches it (0.0721 ± 0.0155, a noise-level tie);
#   norm=True (centers AdamW 0.002, Muon 0.04): torchnewton Muon (best lr 0.08, the grid's top)
#          reaches AdamW's 0.0365 from 180 steps (60 %; 0.0345 ± 0.0091), torch.optim.Muon only at
#          300; AdamW's shorter budgets miss. The margins (~0.002) are a fifth of the seed std: not
#          robust enough to switch the task for.
# Why Muon misses on norm=False (full plan, 3 seeds, the suite's train/budget_scan; details in the
# issue-14 report): it is neither worse fitting nor a global temperature. At Muon's best lr (0.005)
# the train loss (0.0015 vs 0.0010), the val accuracy (0.982 vs 0.981) and the logit RMS (10.3 vs
# 10.2) match AdamW's, and the val loss after the best temperature (fitted on the val images, a
# diagnostic only) stays apart (0.076 ± 0.014 vs 0.062 ± 0.002). The val loss is set by ~5
# confidently wrong images (80 % of it; its standard error over the 360 images is 0.03-0.05 per
# model), and Muon's lr has a narrow window: at 0.0025 the hidden matrices barely leave their
# initialization (spectral norm 0.99 from 0.80; AdamW's grows to 5.6) and the model underfits
# (train loss 0.038); at 0.01-0.02 the logits grow (RMS 15-19, best temperature 2-3) and a few
# wrong images blow the loss up at 97-98 % accuracy. None of the principled changes gives <= 70 %:
# weight decay for every optimizer (0.1, 0.3; AdamW re-swept, its best lr the hybrids' adamw_lr)
# helps both alike (full budget Muon 0.063 vs AdamW 0.069 at 0.1, 0.068 vs 0.063 at 0.3), and
# Muon's 210-step runs miss AdamW's full loss (0.095, 0.069); conv1 to AdamW, momentum 0.9, no
# Nesterov, adjust_lr "spectral" or "match_rms_adamw", adamw_lr x0.5 / x2: 0.077-0.088 at best.
DIGITS_NORM = False
# the budget scan's shorter budgets (fractions of the step budget), the goal's 70 % among them;
# quick mode scans two (four cost ~58 s more CPU on this machine, past the quick budget)
QUICK_BUDGETS = (0.5, 0.7)
FULL_BUDGETS = (0.5, 0.6, 0.7, 0.8)


def _plans(quick: bool) -> list[Plan]:
    if quick:
        char = CharTask(CharConfig(layers=2, d_model=64, heads=4, context=32), batch_size=16, val_windows=64)
        digits = DigitsTask(channels=(16, 32), hidden=64, batch_size=64, norm=DIGITS_NORM)
        factors = (0.4, 1.0, 2.5)
        return [Plan(char, steps=100, eval_every=10, sweep_seeds=(0,), timing_rounds=20,
                     centers=CHAR_CENTERS, factors=factors, budget_fractions=QUICK_BUDGETS),
                Plan(digits, steps=100, eval_every=10, sweep_seeds=SEEDS, timing_rounds=20,
                     centers=DIGITS_CENTERS, factors=factors, budget_fractions=QUICK_BUDGETS)]
    char = CharTask(CharConfig(layers=2, d_model=128, heads=4, context=64), batch_size=16, val_windows=128)
    # the digits are few (1437 training images): a larger CNN would only overfit sooner, so the
    # full mode keeps the quick model and trains it three times longer
    digits = DigitsTask(channels=(16, 32), hidden=64, batch_size=64, norm=DIGITS_NORM)
    # longer schedules tend to prefer smaller lrs than the quick pilots: the grid reaches 8x below
    factors = (0.125, 0.25, 0.5, 1.0, 2.0)
    return [Plan(char, steps=400, eval_every=20, sweep_seeds=(0,), timing_rounds=50,
                 centers=CHAR_FULL_CENTERS, factors=factors, budget_fractions=FULL_BUDGETS),
            Plan(digits, steps=300, eval_every=15, sweep_seeds=SEEDS, timing_rounds=50,
                 centers=DIGITS_FULL_CENTERS, factors=factors, budget_fractions=FULL_BUDGETS)]


# ----------------------------------------------------------------------------- the torchnewton family

def _family(module: str, name: str):
    """A ``torchnewton.optim.<module>.<name>`` matrix optimizer on ``param_groups(model)``."""
    def build(model: torch.nn.Module, lr: float, adamw_lr: float) -> Any:
        from torchnewton.optim import param_groups

        cls = load(f"torchnewton.optim.{module}", name)
        return cls(param_groups(model), lr=lr, adamw_lr=adamw_lr, adamw_betas=BETAS, adamw_eps=EPS)
    return build


def _spectral_clip(inner: str, max_sv: float):
    """SpectralClip around AdamW or torchnewton's Muon, clipping the hidden matrices only: the
    embeddings, output head, norms and biases take plain AdamW steps at AdamW's best lr, the
    same split as every hybrid here (clipping the embedding's and head's updates to spectral norm
    max_sv per unit lr would hold back their learning, a different comparison)."""
    def build(model: torch.nn.Module, lr: float, adamw_lr: float) -> Any:
        clip = load("torchnewton.optim.spectral_clip", "SpectralClip")
        matrices, others = split(model)
        rest = {"params": others, "max_sv": None}  # a group's own max_sv: None turns clipping off
        if inner == "AdamW":
            base = torch.optim.AdamW([{"params": matrices}, {**rest, "lr": adamw_lr}], lr=lr, betas=BETAS,
                                     eps=EPS, weight_decay=0.0)
        else:
            muon = load("torchnewton.optim.muon", "Muon")
            base = muon([{"params": matrices, "use_muon": True}, {**rest, "use_muon": False}], lr=lr,
                        adamw_lr=adamw_lr, adamw_betas=BETAS, adamw_eps=EPS)
        return clip(base, max_sv=max_sv)
    return build


def _frozen_matrices(model: torch.nn.Module, lr: float, adamw_lr: float) -> torch.optim.AdamW:
    """The control: AdamW on everything but the hidden matrices, which keep their initial values."""
    return torch.optim.AdamW(split(model)[1], lr=adamw_lr, betas=BETAS, eps=EPS, weight_decay=0.0)


CONTROL = "control: hidden matrices frozen"
FAMILY = (
    OptimizerSpec(OURS, "torchnewton", "muon", _family("muon", "Muon")),
    OptimizerSpec("AuON", "torchnewton", "auon", _family("auon", "AuON")),
    OptimizerSpec("HybridAuON", "torchnewton", "hybrid_auon", _family("auon", "HybridAuON")),
    OptimizerSpec("Pion", "torchnewton", "pion", _family("pion", "Pion")),
    OptimizerSpec("ROOT", "torchnewton", "root", _family("root", "ROOT")),
    OptimizerSpec("AdaMuon", "torchnewton", "adamuon", _family("adamuon", "AdaMuon")),
    OptimizerSpec("NorMuon", "torchnewton", "normuon", _family("adamuon", "NorMuon")),
    OptimizerSpec("SpectralClip(AdamW)", "torchnewton", "clip", _spectral_clip("AdamW", max_sv=1.0)),
    OptimizerSpec("SpectralClip(Muon)", "torchnewton", "muon", _spectral_clip("Muon", max_sv=1.0), quick=False),
    OptimizerSpec(CONTROL, "control", "frozen", _frozen_matrices),
)
SPECS = PEERS + FAMILY


def _available(plan: Plan, quick: bool) -> tuple[list[OptimizerSpec], dict[str, str]]:
    """The specs to run (those whose class imports, probed by building one on the task's model;
    in quick mode only those marked ``quick``) and, for the others, why not."""
    ready, skipped = [], {}
    for spec in SPECS:
        if quick and not spec.quick:
            skipped[spec.name] = "not run in quick mode (full mode only, to keep the quick budget)"
            continue
        try:
            spec.build(plan.task.model(0), 1e-3, 1e-3)
            ready.append(spec)
        except Unavailable as reason:
            skipped[spec.name] = str(reason)
    return ready, skipped


# ----------------------------------------------------------------------------- the suite

def run(ctx: BenchContext) -> Section:
    return run_plans(ctx, _plans(ctx.quick))


def run_plans(ctx: BenchContext, plans: list[Plan]) -> Section:
    """The suite on the given tasks and budgets (``run`` uses the quick or full ones)."""
    torch.manual_seed(ctx.seed)
    figures: dict[str, Any] = {"protocol": {"seeds": list(SEEDS), "threads": 1, "betas": list(BETAS),
                                            "eps": EPS, "weight_decay": 0.0, "momentum": 0.95}}
    goals: list[list[Any]] = []
    parts, plots = [], []
    # the models are small: one thread is as fast as two for them and keeps the timings steady
    with torch_threads(1):
        for plan in plans:
            part, task_figures = _task(ctx, plan, goals)
            parts.append(part)
            figures[plan.task.name] = task_figures
            plots.append(_plot(ctx, plan.task.name, task_figures["optimizers"]))
    summary = "### Goals\n\n" + markdown_table(["goal", "measured", "met"], goals) + "\n\n" + PROTOCOL
    return Section(title="optim: training the Muon family", markdown="\n\n".join([summary] + parts),
                   figures=figures, plots=plots)


PROTOCOL = (
    "Protocol: every optimizer trains the same model from the same initialization (seed) on the same "
    "minibatches for the same number of steps, under the same schedule (5 % linear warm-up, linear decay "
    "to 0 over the last 30 %), betas (0.9, 0.95), eps 1e-8, no weight decay, momentum 0.95 (Nesterov) "
    "for the Muon-type methods. Each optimizer sweeps its lr on the task's sweep seeds; the best lr "
    "(lowest mean final validation loss over those seeds) is then run on the other seeds, and the final "
    "validation loss is the mean ± sample std over seeds 0, 1, 2. The hybrids' AdamW part (embeddings, "
    "output head, norms, biases; `torchnewton.optim.param_groups`) uses AdamW's best lr. \"Steps to "
    "AdamW's loss\": first evaluation at which the seed-averaged validation loss reaches AdamW's "
    "seed-averaged final loss. \"Final train loss\": the mean minibatch training loss over the last "
    "evaluation interval (the model in training mode); \"final val accuracy\": the fraction of validation "
    "examples classified correctly at the end (classifiers only, \"-\" otherwise); both mean ± std over "
    "the 3 seeds at the best lr, shown beside the validation loss because a few confidently wrong "
    "validation examples can move the loss without changing the fit or the accuracy. "
    "Budget scan (the goal lines' steps to AdamW's loss): torchnewton Muon, torch.optim.Muon and AdamW at "
    "their best lr of the full-budget sweep (not re-tuned) are rerun for shorter budgets, each with the "
    "whole schedule (warm-up, decay to 0) compressed to it, on seeds 0, 1, 2; the steps to AdamW's loss are "
    "the smallest budget whose seed-mean final validation loss is at or below AdamW's full-budget one, "
    "divided by AdamW's own smallest such budget. The goal is judged by the scan, not by the curve "
    "intersection, because under a schedule that decays to 0 at the budget the intersection mostly "
    "measures where the final decay falls: a run's loss at 70 % of a long schedule is not what a 70 % "
    "schedule reaches. AdamW's own scan is the check of the method: its shorter budgets should miss its "
    "full-budget loss. "
    "Step time: `optimizer.step()` alone, in interleaved rounds on one fixed "
    "gradient, 1 thread; \"vs torch Muon\" = torch.optim.Muon's median / this median, and the same "
    "for the minima, which other work on the machine disturbs less (> 1: faster). "
    "Seconds in the plots count training only (forward, backward, step), on a machine that may be shared "
    "with other work. \"(edge)\": the best lr is at the end of its grid.")


def _task(ctx: BenchContext, plan: Plan, goals: list) -> tuple[str, dict[str, Any]]:
    name = plan.task.name
    specs, skipped = _available(plan, ctx.quick)
    by_name = {s.name: s for s in specs}

    def sweep(spec: OptimizerSpec, adamw_lr: float) -> LrSweep:
        return lr_sweep(plan.task, lambda model, lr: spec.build(model, lr, adamw_lr), plan.grid(spec.lr_kind),
                        sweep_seeds=plan.sweep_seeds, seeds=SEEDS, steps=plan.steps,
                        eval_every=plan.eval_every, track=lambda it, desc: ctx.track(it, desc=f"{name} {spec.name}"))

    sweeps = {BASELINE: sweep(by_name[BASELINE], 0.0)}
    adamw_lr = sweeps[BASELINE].best_lr
    for spec in ctx.track([s for s in specs if s.name != BASELINE], desc=f"{name} optimizers"):
        sweeps[spec.name] = sweep(spec, adamw_lr)

    steps_b, losses_b, _ = sweeps[BASELINE].mean_curve()
    target = losses_b[-1] if math.isfinite(losses_b[-1]) else None  # None: a seed of AdamW diverged
    baseline_steps = None if target is None else steps_to(target, steps_b, losses_b)
    builds = {n: ((lambda spec: lambda model, lr: spec.build(model, lr, adamw_lr))(by_name[n]), s.best_lr)
              for n, s in sweeps.items()}
    times = interleaved_step_times(plan.task, builds, rounds=plan.timing_rounds)
    reference = median_and_min(times[TORCH_MUON]) if TORCH_MUON in times else None

    entries = {n: _entry(by_name[n], plan, s, times[n], reference, target, baseline_steps)
               for n, s in sweeps.items()}
    scans = {}
    if plan.budget_fractions and target is not None:
        for n in ctx.track([n for n in SCANNED if n in sweeps], desc=f"{name} budget scan"):
            scan = budget_scan(plan.task, builds[n][0], lr=sweeps[n].best_lr, seeds=SEEDS,
                               budgets=plan.budgets(), known={plan.steps: sweeps[n].finals(sweeps[n].best_lr)})
            scans[n] = _scan_entry(scan, plan.steps, target)
        if BASELINE in scans:
            adamw_budget = scans[BASELINE]["smallest_reaching_budget"]
            for e in scans.values():
                b = e["smallest_reaching_budget"]
                e["fraction_of_adamw_budget"] = None if b is None or not adamw_budget else b / adamw_budget
    _goals(goals, name, entries, baseline_steps, scans)
    figures = {"task": plan.task.describe(), "steps": plan.steps, "eval_every": plan.eval_every,
               "sweep_seeds": list(plan.sweep_seeds), "adamw_lr_of_hybrids": adamw_lr,
               "target_val_loss": target, "adamw_steps_to_target": baseline_steps, "not_run": skipped,
               "optimizers": entries, "budget_scan": scans}
    return _markdown(plan, figures), figures


def _entry(spec: OptimizerSpec, plan: Plan, sweep: LrSweep, times: list[float],
           reference: tuple[float, float] | None,
           target: float | None, baseline_steps: int | None) -> dict[str, Any]:
    """Every figure of one optimizer on one task (JSON-able)."""
    steps, losses, seconds = sweep.mean_curve()
    reached = None if target is None else steps_to(target, steps, losses)
    finals = sweep.finals(sweep.best_lr)
    train_losses = sweep.final_train_losses(plan.eval_every)
    accuracies = sweep.final_accuracies()
    finite = all(map(math.isfinite, finals + train_losses))
    median, fastest = median_and_min(times)
    grid = plan.grid(spec.lr_kind)
    return {
        "source": spec.source, "lr_grid": list(grid), "best_lr": sweep.best_lr,
        "best_lr_at_grid_edge": len(grid) > 1 and sweep.best_lr in (grid[0], grid[-1]),
        "sweep": {str(lr): {"seeds": list(sweep.sweep_seeds),
                            "final_val_loss": [_json_number(v) for v in sweep.finals(lr, sweep.sweep_seeds)],
                            "diverged": [runs[s].diverged for s in sweep.sweep_seeds]}
                  for lr, runs in sweep.runs.items()},
        "final_val_loss_per_seed": [_json_number(v) for v in finals],
        "final_val_loss_mean": statistics.fmean(finals) if finite else None,
        "final_val_loss_std": statistics.stdev(finals) if finite else None,
        "final_train_loss_per_seed": [_json_number(v) for v in train_losses],
        "final_train_loss_mean": statistics.fmean(train_losses) if finite else None,
        "final_train_loss_std": statistics.stdev(train_losses) if finite else None,
        "final_val_accuracy_per_seed": accuracies,
        "final_val_accuracy_mean": None if accuracies is None else statistics.fmean(accuracies),
        "final_val_accuracy_std": None if accuracies is None else statistics.stdev(accuracies),
        "steps_to_adamw_final": reached,
        "fraction_of_adamw_steps": reached / baseline_steps if reached is not None and baseline_steps else None,
        "seconds_to_adamw_final": None if reached is None else seconds[steps.index(reached)],
        "step_seconds_median": median, "step_seconds_min": fastest,
        "step_time_speedup_vs_torch_muon": reference[0] / median if reference else None,
        "step_time_speedup_vs_torch_muon_by_min": reference[1] / fastest if reference else None,
        "mean_curve": {"steps": steps, "val_loss": [_json_number(v) for v in losses], "seconds": seconds},
    }


def _scan_entry(scan: BudgetScan, steps: int, target: float) -> dict[str, Any]:
    """The figures of one optimizer's budget scan against ``target`` (JSON-able)."""
    budgets = sorted(scan.finals)
    smallest = scan.smallest_reaching(target)
    return {
        "lr": scan.lr, "seeds": list(scan.seeds), "budgets": budgets,
        "fractions_of_steps": [b / steps for b in budgets],
        "final_val_loss_per_seed": {str(b): [_json_number(v) for v in scan.finals[b]] for b in budgets},
        "final_val_loss_mean": {str(b): _json_number(scan.mean(b)) for b in budgets},
        "final_val_loss_std": {str(b): _json_number(scan.std(b)) for b in budgets},
        "reaches_target": {str(b): scan.mean(b) <= target for b in budgets},
        "smallest_reaching_budget": smallest,
        "smallest_reaching_fraction_of_steps": None if smallest is None else smallest / steps,
    }


def _json_number(value: float) -> float | None:
    """A diverged run's +inf as None, which JSON can hold."""
    return value if math.isfinite(value) else None


def _markdown(plan: Plan, figures: dict[str, Any]) -> str:
    name, entries = plan.task.name, figures["optimizers"]
    rows, sweep_rows = [], []
    for n, e in entries.items():
        fraction, speedup = e["fraction_of_adamw_steps"], e["step_time_speedup_vs_torch_muon"]
        rows.append([n, e["source"], f"{e['best_lr']:g}" + (" (edge)" if e["best_lr_at_grid_edge"] else ""),
                     _mean_std(e, "final_val_loss"), _mean_std(e, "final_train_loss"),
                     _mean_std(e, "final_val_accuracy"),
                     "not reached" if e["steps_to_adamw_final"] is None else e["steps_to_adamw_final"],
                     "-" if fraction is None else f"{100 * fraction:.0f} %",
                     "-" if e["seconds_to_adamw_final"] is None else f"{e['seconds_to_adamw_final']:.2f}",
                     f"{1e3 * e['step_seconds_median']:.3f}", f"{1e3 * e['step_seconds_min']:.3f}",
                     "-" if speedup is None else f"{speedup:.2f}x",
                     "-" if speedup is None else f"{e['step_time_speedup_vs_torch_muon_by_min']:.2f}x"])
        for lr, run in e["sweep"].items():
            values = run["final_val_loss"]
            shown = ("diverged" if any(run["diverged"]) else f"{values[0]:.4f}" if len(values) == 1
                     else f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}")
            sweep_rows.append([n, lr, shown, ", ".join(map(str, run["seeds"])),
                               "best" if float(lr) == e["best_lr"] else ""])
    seeds = ", ".join(map(str, plan.sweep_seeds))
    lines = [f"### {name}: {figures['task']}",
             f"{plan.steps} steps, validation every {plan.eval_every}; lr sweep on seed(s) {seeds}. AdamW's "
             f"best lr {figures['adamw_lr_of_hybrids']:g} is the AdamW-part lr of every hybrid. AdamW's "
             f"seed-averaged final validation loss {_number(figures['target_val_loss'])} is reached by AdamW "
             f"itself at step {figures['adamw_steps_to_target']}.",
             markdown_table(["optimizer", "library", "best lr", "final val loss (3 seeds)",
                             "final train loss", "final val accuracy", "steps to AdamW's loss",
                             "% of AdamW's steps", "seconds to AdamW's loss",
                             "step ms (median)", "step ms (min)", "vs torch Muon (median)",
                             "vs torch Muon (min)"], rows)]
    if figures["budget_scan"]:
        lines += [f"#### {name}: budget scan (each budget its own whole schedule, best lr of the {plan.steps}-step "
                  f"sweep, not re-tuned; final validation loss, mean ± std over seeds 0, 1, 2; target: AdamW's "
                  f"final loss {_number(figures['target_val_loss'])})",
                  markdown_table(["optimizer", "lr", "budget (steps)", "% of steps", "final val loss",
                                  "per seed", "reaches AdamW's loss"], _scan_rows(figures["budget_scan"])),
                  "Smallest budget reaching AdamW's final loss: " + "; ".join(
                      f"{n} {_scan_result(e)}" for n, e in figures["budget_scan"].items()) + "."]
    if figures["not_run"]:
        lines.append("\n".join(f"- {n}: {why}" for n, why in figures["not_run"].items()))
    lines += [f"#### {name}: learning-rate sweep (final validation loss on the sweep seeds {seeds}; "
              "mean ± std where several)",
              markdown_table(["optimizer", "lr", "final val loss", "seeds", ""], sweep_rows)]
    return "\n\n".join(lines)


def _scan_rows(scans: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for n, e in scans.items():
        for b, fraction in zip(e["budgets"], e["fractions_of_steps"]):
            mean, std, seeds = (e[key][str(b)] for key in ("final_val_loss_mean", "final_val_loss_std",
                                                              "final_val_loss_per_seed"))
            rows.append([n, f"{e['lr']:g}", b, f"{100 * fraction:.0f} %",
                         "diverged" if mean is None else f"{mean:.4f} ± {std:.4f}",
                         ", ".join("diverged" if v is None else f"{v:.4f}" for v in seeds),
                         "yes" if e["reaches_target"][str(b)] else "no"])
    return rows


def _scan_result(entry: dict[str, Any]) -> str:
    b = entry["smallest_reaching_budget"]
    if b is None:
        return "none of " + ", ".join(map(str, entry["budgets"]))
    text = f"{b} steps ({100 * entry['smallest_reaching_fraction_of_steps']:.0f} % of the budget"
    fraction = entry.get("fraction_of_adamw_budget")
    return text + ("" if fraction is None else f", {100 * fraction:.0f} % of AdamW's") + ")"


def _goals(goals: list, task: str, entries: dict[str, Any], baseline_steps: int | None,
           scans: dict[str, Any]) -> None:
    """The goal lines of one task. Steps to AdamW's loss are judged by the budget scan where the task
    has one (the curve intersection under the full schedule is shown beside it), else by the
    intersection."""
    ours = entries.get(OURS)
    if ours is None:
        goals.append([f"{task}: {OURS} reaches AdamW's final val loss in <= 70 % of AdamW's steps",
                      f"{OURS} not available", "not met"])
        return
    reached, fraction = ours["steps_to_adamw_final"], ours["fraction_of_adamw_steps"]
    intersection = ("AdamW's final loss not reached" if reached is None
                    else f"{reached} of {baseline_steps} steps ({100 * fraction:.0f} %)")
    scan = scans.get(OURS)
    if scan is not None and BASELINE in scans:
        fraction = scan["fraction_of_adamw_budget"]
        adamw = scans[BASELINE]
        shorter = [b for b in adamw["budgets"] if b < adamw["smallest_reaching_budget"]]
        measured = (f"budget scan: {_scan_result(scan)}; AdamW itself needs {adamw['smallest_reaching_budget']} "
                    f"steps (" + (f"its budgets {', '.join(map(str, shorter))} miss its full-budget loss"
                                 if shorter else "no shorter budget scanned") + "); "
                    f"curve intersection under the full schedule: {intersection}")
    else:
        measured = intersection
    measured += f" (final loss {_loss_text(ours)} vs AdamW {_loss_text(entries[BASELINE])}"
    if ours["final_val_accuracy_mean"] is not None and entries[BASELINE]["final_val_accuracy_mean"] is not None:
        measured += (f"; val accuracy {ours['final_val_accuracy_mean']:.4f} vs "
                     f"{entries[BASELINE]['final_val_accuracy_mean']:.4f}")
    measured += ")"
    met = "met" if fraction is not None and fraction <= STEP_GOAL else "not met"
    control = entries.get(CONTROL, {}).get("steps_to_adamw_final")
    if control is not None:
        measured += (f"; but the control with frozen hidden matrices reaches AdamW's loss too (step {control}): "
                     "on this budget the task does not separate the matrix updates")
        met += " (uninformative)"
    goals.append([f"{task}: {OURS} reaches AdamW's final val loss in <= 70 % of AdamW's steps", measured, met])
    speedup = ours["step_time_speedup_vs_torch_muon"]
    goals.append([f"{task}: {OURS} optimizer.step() no slower than torch.optim.Muon(+AdamW)",
                  "torch.optim.Muon not available" if speedup is None
                  else f"{speedup:.2f}x (median {1e3 * ours['step_seconds_median']:.3f} ms vs "
                       f"{1e3 * ours['step_seconds_median'] * speedup:.3f} ms)",
                  "met" if speedup is not None and speedup >= 1.0 else "not met"])


def _mean_std(entry: dict[str, Any], figure: str) -> str:
    """"mean ± std" of a per-seed figure; "diverged" for a diverged run, "-" where not measured."""
    if entry[f"{figure}_mean"] is None:
        return "-" if entry[f"{figure}_per_seed"] is None else "diverged"
    return f"{entry[f'{figure}_mean']:.4f} ± {entry[f'{figure}_std']:.4f}"


def _loss_text(entry: dict[str, Any]) -> str:
    return _number(entry["final_val_loss_mean"])


def _number(value: float | None) -> str:
    return "diverged" if value is None else f"{value:.4f}"


def _plot(ctx: BenchContext, task: str, entries: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colors = plt.get_cmap("tab20").colors
    styles = {"torch.optim": "--", "pytorch-optimizer": ":", "torchnewton": "-"}
    tail = []
    for i, (name, e) in enumerate(entries.items()):
        curve = e["mean_curve"]
        kept = [j for j, v in enumerate(curve["val_loss"]) if v is not None]
        losses = [curve["val_loss"][j] for j in kept]
        tail += losses[1:]
        style = dict(color=colors[i % len(colors)], linestyle=styles.get(e["source"], "-"),
                     linewidth=2.2 if name in (OURS, BASELINE, TORCH_MUON) else 1.2,
                     label=f"{name} (lr {e['best_lr']:g})")
        by_step.plot([curve["steps"][j] for j in kept], losses, **style)
        by_time.plot([curve["seconds"][j] for j in kept], losses, **style)
    by_step.set_xlabel("step")
    by_time.set_xlabel("training seconds (forward, backward, step; 1 thread)")
    by_step.set_ylabel("validation loss (mean of 3 seeds, best lr; log scale)")
    for ax in (by_step, by_time):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
        ax.grid(True, which="both", alpha=0.3)
        if tail:  # leave out the loss at initialization, which would flatten the curves
            ax.set_ylim(min(tail) * 0.97, max(tail) * 1.03)
    by_time.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{task}: validation loss vs steps and vs seconds")
    fig.tight_layout()
    path = ctx.out_dir / f"optim_{task}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
