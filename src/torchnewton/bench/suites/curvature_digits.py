"""Part (b) of the curvature benchmark: second-order optimizers training on scikit-learn's digits.

Task: ``sklearn.datasets.load_digits`` (1797 8x8 images, 10 classes), one fixed split (a
permutation from seed 0: 360 validation, 1437 training images), pixels standardized with the
training mean and standard deviation. Two models, both trained with the mean cross-entropy:

- MLP: 64 -> 64 -> 64 -> 10 with ReLU (9.1k parameters);
- CNN: conv 3x3 (1 -> 8, same) -> ReLU -> conv 3x3 stride 2 (8 -> 16) -> ReLU -> linear 256 -> 10
  (3.8k parameters), every layer a plain ``nn.Conv2d`` / ``nn.Linear`` that KFAC can hook.

Every optimizer gets the same models, initializations, minibatch sequence (batch 64, drawn from a
generator seeded by the run's seed), step budget and constant learning rate; no weight decay.
Each is swept over >= 3 learning rates, every lr on every seed; the best lr is the one with the
lowest mean final validation loss (a diverged seed counts as +inf). The target validation loss is
AdamW's mean final loss at its best lr; "steps / seconds to target" is the first evaluation at or
below it (median over the seeds that reach it). Seconds count training only (batch, forward, backward, step), not the
evaluations; every optimizer of a round runs in turn, the order rotating from round to round.
One torch thread (the models are tiny; more threads only add hand-off noise).
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from torchnewton.bench.suite import BenchContext, markdown_table, torch_threads

ADAM_LRS = {"quick": (3e-3, 1e-2, 3e-2), "full": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)}
KFAC_LRS = {"quick": (0.01, 0.03, 0.1), "full": (0.001, 0.003, 0.01, 0.03, 0.1)}
# Muon's orthogonal update has unit singular values: its useful lr range sits above Adam's.
MUON_LRS = {"quick": (0.01, 0.03, 0.1), "full": (0.003, 0.01, 0.03, 0.1, 0.3)}
SHAMPOO_LRS = {"quick": (0.01, 0.03, 0.1), "full": (0.003, 0.01, 0.03, 0.1, 0.3)}
HESSIAN_LRS = {"quick": (0.03, 0.1, 0.3), "full": (0.01, 0.03, 0.1, 0.3, 1.0)}
PRECONDITION_FREQUENCY = 10
BATCH = 64
VAL_SIZE = 360


@dataclass(frozen=True)
class Contender:
    """An optimizer in the benchmark: ``build(model, lr)``, its lr grid, whether its backward
    needs ``create_graph=True`` (the Hessian-diagonal methods) and its settings in words."""

    name: str
    source: str
    lrs: dict[str, tuple[float, ...]]
    build: Callable[[nn.Module, float], Any]
    settings: str
    create_graph: bool = False


@dataclass
class Run:
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    failure: str = ""

    @property
    def final(self) -> float:
        return math.inf if self.failure else self.val_loss[-1]


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def digits_data() -> Data:
    """The fixed, standardized split (float32)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    val, train = order[:VAL_SIZE], order[VAL_SIZE:]
    mean, std = x[train].mean(0), x[train].std(0)
    std[std == 0] = 1.0  # the always-blank corner pixels
    x = (x - mean) / std
    return Data(x[train], y[train], x[val], y[val])


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))


MODELS = {"MLP": mlp, "CNN": cnn}


def contenders() -> tuple[list[Contender], dict[str, str]]:
    """The optimizers that import here, and the reason for each one that does not."""
    found, missing = [], {}
    for make in (_adamw, _kfac, _shampoo, _soap, _adahessian, _muon, _peer_shampoo, _peer_soap,
                 _peer_adahessian, _heavyball_soap):
        try:
            found.append(make())
        except ImportError as error:
            missing[make.__name__.lstrip("_")] = f"{type(error).__name__}: {error}"
    return found, missing


def _adamw() -> Contender:
    return Contender("AdamW", "torch", ADAM_LRS,
                     lambda m, lr: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0),
                     "betas (0.9, 0.999), eps 1e-8")


def _kfac() -> Contender:
    from torchnewton.optim.kfac import KFAC

    return Contender("KFAC", "torchnewton", KFAC_LRS,
                     lambda m, lr: KFAC(m, lr=lr, momentum=0.0, damping=1e-2, kl_clip=1e-2,
                                        curvature="gauss-newton", inverse_update_frequency=PRECONDITION_FREQUENCY),
                     "Monte-Carlo Fisher (sampled targets), damping 1e-2, KL clip 1e-2, factor decay 0.95, "
                     f"inverses (eigh) every {PRECONDITION_FREQUENCY} steps, no momentum")


def _shampoo() -> Contender:
    from torchnewton.optim.shampoo import Shampoo

    return Contender("Shampoo", "torchnewton", ADAM_LRS,
                     lambda m, lr: Shampoo(m.parameters(), lr=lr,
                                           precondition_frequency=PRECONDITION_FREQUENCY),
                     "Adam grafting, betas (0.9, 0.999), summed factors, eps 1e-6, "
                     f"inv_root (Newton) every {PRECONDITION_FREQUENCY} steps from step {PRECONDITION_FREQUENCY} "
                     "(grafting alone before)")


def _soap() -> Contender:
    from torchnewton.optim.soap import SOAP

    return Contender("SOAP", "torchnewton", ADAM_LRS,
                     lambda m, lr: SOAP(m.parameters(), lr=lr, weight_decay=0.0,
                                        precondition_frequency=PRECONDITION_FREQUENCY),
                     f"betas (0.95, 0.95), power-QR refresh every {PRECONDITION_FREQUENCY} steps")


def _adahessian() -> Contender:
    from torchnewton.optim.adahessian import AdaHessian

    return Contender("AdaHessian", "torchnewton", HESSIAN_LRS,
                     lambda m, lr: AdaHessian(m.parameters(), lr=lr, seed=0),
                     "betas (0.9, 0.999), eps 1e-4, Hessian power 1, spatial averaging", create_graph=True)


def _muon() -> Contender:
    from torchnewton.optim import Muon, param_groups

    return Contender("Muon", "torchnewton", MUON_LRS,
                     lambda m, lr: Muon(param_groups(m), lr=lr, adamw_lr=1e-2),
                     "hidden matrices (conv kernels flattened), AdamW at 1e-2 (AdamW's best MLP lr) on the rest")


def _peer_shampoo() -> Contender:
    from pytorch_optimizer import Shampoo as PeerShampoo

    return Contender("Shampoo", "pytorch-optimizer", SHAMPOO_LRS,
                     lambda m, lr: PeerShampoo(m.parameters(), lr=lr,
                                               preconditioning_compute_steps=PRECONDITION_FREQUENCY),
                     f"Gupta et al. (no grafting, no momentum), SVD roots every {PRECONDITION_FREQUENCY} steps")


def _peer_soap() -> Contender:
    from pytorch_optimizer import SOAP as PeerSOAP

    return Contender("SOAP", "pytorch-optimizer", ADAM_LRS,
                     lambda m, lr: PeerSOAP(m.parameters(), lr=lr, weight_decay=0.0,
                                            precondition_frequency=PRECONDITION_FREQUENCY),
                     f"the authors' algorithm, refresh every {PRECONDITION_FREQUENCY} steps")


def _peer_adahessian() -> Contender:
    from pytorch_optimizer import AdaHessian as PeerAdaHessian

    return Contender("AdaHessian", "pytorch-optimizer", HESSIAN_LRS,
                     lambda m, lr: PeerAdaHessian(m.parameters(), lr=lr),
                     "betas (0.9, 0.999), eps 1e-16, no spatial averaging", create_graph=True)


def _heavyball_soap() -> Contender:
    import heavyball

    return Contender("SOAP", "heavyball", ADAM_LRS,
                     lambda m, lr: heavyball.SOAP(m.parameters(), lr=lr, weight_decay=0.0,
                                                  precondition_frequency=PRECONDITION_FREQUENCY),
                     f"betas (0.9, 0.95), refresh every {PRECONDITION_FREQUENCY} steps, eager (no torch.compile)")


@contextlib.contextmanager
def _heavyball_eager() -> Iterator[None]:
    """heavyball compiles its update with torch.compile (max-autotune) on first use: minutes on a
    CPU, for runs of a second. Its eager mode runs the same algorithm; the switch is global and
    read at every step, so it covers the whole benchmark and is restored afterwards."""
    try:
        import heavyball
    except ImportError:
        yield
        return
    before = heavyball.utils.compile_mode
    heavyball.utils.compile_mode = None
    try:
        yield
    finally:
        heavyball.utils.compile_mode = before


def train(make: Callable[[int], nn.Module], contender: Contender, data: Data, *, lr: float, seed: int,
          steps: int, eval_every: int) -> Run:
    """Train ``make(seed)`` with ``contender`` at ``lr``; a non-finite loss or an exception from the
    optimizer (a failed decomposition, a non-finite guard) ends the run as diverged."""
    began = time.perf_counter()
    model = make(seed)
    optimizer = contender.build(model, lr)
    generator = torch.Generator().manual_seed(1000 + seed)
    run = Run()
    run.steps.append(0)
    run.seconds.append(0.0)
    run.val_loss.append(_val_loss(model, data))
    clock = 0.0
    for step in range(steps):
        start = time.perf_counter()
        batch = torch.randint(0, len(data.y_train), (BATCH,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
        if not torch.isfinite(loss):
            run.failure = f"non-finite loss at step {step}"
            break
        loss.backward(create_graph=contender.create_graph)
        before_step = time.perf_counter()
        try:
            optimizer.step()
        except (RuntimeError, FloatingPointError, ValueError) as error:
            run.failure = f"step {step}: {type(error).__name__}"
            break
        end = time.perf_counter()
        run.step_seconds.append(end - before_step)
        clock += end - start
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            value = _val_loss(model, data)
            run.steps.append(step + 1)
            run.seconds.append(clock)
            run.val_loss.append(value)
            if not math.isfinite(value):
                run.failure = f"non-finite validation loss at step {step + 1}"
                break
    for p in model.parameters():  # a create_graph backward leaves graphs on the gradients
        p.grad = None
    run.wall_seconds = time.perf_counter() - began
    return run


def _val_loss(model: nn.Module, data: Data) -> float:
    model.eval()
    with torch.no_grad():
        value = F.cross_entropy(model(data.x_val), data.y_val).item()
    model.train()
    return value


def _rounds(jobs: list[list[Any]]) -> Iterator[Any]:
    """Every job of each round, the order rotated by one from round to round."""
    for r, round_jobs in enumerate(jobs):
        shift = r % len(round_jobs) if round_jobs else 0
        yield from round_jobs[shift:] + round_jobs[:shift]


def run_digits(ctx: BenchContext) -> tuple[str, dict, list[Path]]:
    mode = "quick" if ctx.quick else "full"
    steps, eval_every, n_seeds = (60, 5, 2) if ctx.quick else (300, 15, 3)
    seeds = [ctx.seed + s for s in range(n_seeds)]
    data = digits_data()
    found, missing = contenders()
    keys = [f"{c.name} ({c.source})" for c in found]
    runs: dict[tuple[str, str, float, int], Run] = {}
    rounds = [[(model_name, key, c, c.lrs[mode][i], seed) for model_name in MODELS
               for key, c in zip(keys, found) if i < len(c.lrs[mode])]
              for seed in seeds for i in range(max(len(c.lrs[mode]) for c in found))]
    with torch_threads(1), _heavyball_eager():
        for model_name, key, c, lr, seed in ctx.track(list(_rounds(rounds)), desc="digits runs"):
            runs[model_name, key, lr, seed] = train(MODELS[model_name], c, data, lr=lr, seed=seed,
                                                    steps=steps, eval_every=eval_every)
    best = {(m, key): min(c.lrs[mode], key=lambda lr: _mean_final(runs, m, key, lr, seeds))
            for m in MODELS for key, c in zip(keys, found)}
    figures: dict[str, Any] = {"mode": mode, "steps": steps, "eval_every": eval_every, "seeds": seeds,
                               "batch": BATCH, "unavailable": missing, "models": {}}
    sections = [_setup_text(found, missing, mode, steps, eval_every, seeds)]
    plots = []
    for model_name in MODELS:
        text, model_figures = _summarize(model_name, found, keys, runs, best, seeds, mode)
        sections.append(text)
        figures["models"][model_name] = model_figures
        plots.append(_plot(model_name, keys, runs, best, seeds, model_figures["target"], ctx.out_dir))
    return "\n\n".join(sections), figures, plots


def _mean_final(runs: dict, model_name: str, key: str, lr: float, seeds: list[int]) -> float:
    finals = [runs[model_name, key, lr, s].final for s in seeds]
    return statistics.fmean(finals) if all(math.isfinite(f) for f in finals) else math.inf


def _setup_text(found: list[Contender], missing: dict[str, str], mode: str, steps: int, eval_every: int,
                seeds: list[int]) -> str:
    lines = [
        f"scikit-learn digits (1437 train / 360 validation, standardized), batch {BATCH}, {steps} steps at a "
        f"constant lr, validation loss every {eval_every} steps; every lr of the sweep on seeds {seeds}, best lr by "
        f"mean final validation loss ({mode} mode; quick: 2 seeds, 3 lrs, 60 steps; full: 3 seeds, 5 lrs, "
        "300 steps). Target: AdamW's mean final validation loss at its best lr. Timings on one torch thread.",
        "",
        markdown_table(["optimizer", "source", "settings (lr swept, no weight decay)"],
                       [[c.name, c.source, c.settings] for c in found]),
    ]
    if missing:
        lines += ["", "Not run (not importable here): " + "; ".join(f"{k}: {v}" for k, v in missing.items())]
    return "\n".join(lines)


def _summarize(model_name: str, found: list[Contender], keys: list[str], runs: dict, best: dict,
               seeds: list[int], mode: str) -> tuple[str, dict[str, Any]]:
    adamw = keys[0]
    target = statistics.fmean(runs[model_name, adamw, best[model_name, adamw], s].final for s in seeds)
    reference_step = statistics.median(_all_step_seconds(runs, model_name, adamw, best, seeds))
    rows, sweep_rows, per = [], [], {}
    for key, c in zip(keys, found):
        lr = best[model_name, key]
        finals = [runs[model_name, key, lr, s].final for s in seeds]
        reached = [_first_at_or_below(runs[model_name, key, lr, s], target) for s in seeds]
        hits = [r for r in reached if r is not None]
        step_time = statistics.median(_all_step_seconds(runs, model_name, key, best, seeds) or [math.nan])
        lowest = [min(runs[model_name, key, lr, s].val_loss) for s in seeds]
        wall = sum(run.wall_seconds for (m, k, _, _), run in runs.items() if m == model_name and k == key)
        finite = [f for f in finals if math.isfinite(f)]
        mean = statistics.fmean(finite) if len(finite) == len(finals) else math.inf
        std = statistics.stdev(finals) if len(finite) == len(finals) and len(finals) > 1 else math.nan
        to_steps = statistics.median(h[0] for h in hits) if hits else None
        to_seconds = statistics.median(h[1] for h in hits) if hits else None
        per[key] = {"best_lr": lr, "final_val_loss": finals, "mean": mean, "std": std,
                    "lowest_val_loss": lowest, "wall_seconds_all_runs": wall,
                    "steps_to_target": [h and h[0] for h in reached],
                    "seconds_to_target": [h and h[1] for h in reached],
                    "median_step_ms": 1e3 * step_time, "step_time_vs_adamw": step_time / reference_step,
                    "sweep": {lr_: [runs[model_name, key, lr_, s].final for s in seeds] for lr_ in c.lrs[mode]},
                    "failures": {f"lr {lr_:g}, seed {s}": runs[model_name, key, lr_, s].failure
                                 for lr_ in c.lrs[mode] for s in seeds if runs[model_name, key, lr_, s].failure}}
        rows.append([c.name, c.source, f"{lr:g}", f"{mean:.4f} ± {std:.4f}" if math.isfinite(mean) else "diverged",
                     f"{statistics.fmean(lowest):.4f}",
                     f"{to_steps:g} ({len(hits)}/{len(seeds)})" if hits else f"not reached (0/{len(seeds)})",
                     f"{to_seconds:.2f}" if hits else "-", f"{1e3 * step_time:.2f}",
                     f"{step_time / reference_step:.2f}", f"{wall:.1f}"])
        sweep_rows.append([c.name, c.source] + [_sweep_cell(runs, model_name, key, lr_, seeds) for lr_ in c.lrs[mode]])
    width = max(len(c.lrs[mode]) for c in found)
    sweep_header = ["optimizer", "source"] + [f"lr {i + 1}" for i in range(width)]
    sweep_rows = [r + [""] * (len(sweep_header) - len(r)) for r in sweep_rows]
    text = "\n".join([
        f"**{model_name}** — target validation loss {target:.4f} (AdamW, best lr, mean over seeds)",
        "",
        markdown_table(["optimizer", "source", "best lr", "final val loss (mean ± std)", "lowest val loss (mean)",
                        "steps to target (median, seeds reached)", "seconds to target", "ms / step (median)",
                        "step time / AdamW", "wall s, all runs"], rows),
        "",
        f"{model_name} lr sweep (mean final validation loss over the seeds; lr in brackets, "
        "'diverged' if any seed diverged):",
        "",
        markdown_table(sweep_header, sweep_rows),
    ])
    return text, {"target": target, "optimizers": per}


def _sweep_cell(runs: dict, model_name: str, key: str, lr: float, seeds: list[int]) -> str:
    mean = _mean_final(runs, model_name, key, lr, seeds)
    return f"{mean:.4f} [{lr:g}]" if math.isfinite(mean) else f"diverged [{lr:g}]"


def _all_step_seconds(runs: dict, model_name: str, key: str, best: dict, seeds: list[int]) -> list[float]:
    return [t for s in seeds for t in runs[model_name, key, best[model_name, key], s].step_seconds]


def _first_at_or_below(run: Run, target: float) -> tuple[int, float] | None:
    for step, seconds, value in zip(run.steps, run.seconds, run.val_loss):
        if value <= target:
            return step, seconds
    return None


def _plot(model_name: str, keys: list[str], runs: dict, best: dict, seeds: list[int], target: float,
          out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in keys:
        curves = [runs[model_name, key, best[model_name, key], s] for s in seeds]
        length = min(len(c.val_loss) for c in curves)
        steps = curves[0].steps[:length]
        loss = [statistics.fmean(c.val_loss[i] for c in curves) for i in range(length)]
        seconds = [statistics.fmean(c.seconds[i] for c in curves) for i in range(length)]
        style = "-" if "torchnewton" in key or "AdamW" in key else "--"
        label = f"{key}, lr {best[model_name, key]:g}"
        by_step.plot(steps, loss, style, label=label)
        by_time.plot(seconds, loss, style, label=label)
    for ax, xlabel in ((by_step, "step"), (by_time, "training seconds")):
        ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (mean over seeds)")
        ax.grid(True, which="both", alpha=0.3)
    by_step.legend(fontsize=7)
    fig.suptitle(f"digits {model_name}: validation loss at each optimizer's best lr (dotted: target)")
    fig.tight_layout()
    path = out_dir / f"curvature_digits_{model_name.lower()}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
