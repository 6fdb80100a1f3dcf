"""The optimizers torchnewton's Muon family is measured against, built the same way for any model.

Every builder takes ``(model, lr, adamw_lr)`` and returns an object with ``step()``,
``zero_grad()`` and ``param_groups`` (what the training loop and its lr schedule use):

- ``torch.optim.AdamW`` on every parameter (``lr``; ``adamw_lr`` unused);
- ``torch.optim.Muon`` on the hidden matrices plus a separate ``torch.optim.AdamW`` (at
  ``adamw_lr``) on the rest, stepped together (torch's Muon accepts only 2-D parameters; its
  Newton–Schulz runs in bfloat16 whatever the device);
- pytorch-optimizer's ``Muon``, ``AdaMuon`` and ``NorMuon`` (Kim, pytorch_optimizer), which
  take the same ``use_muon`` param groups as torchnewton, so the split is identical.

The split of parameters is ``torchnewton.optim.param_groups(model)`` for every hybrid optimizer:
hidden matrices to the matrix method, embeddings, the output head, norms and biases to AdamW.
Shared hyperparameters: betas (0.9, 0.95), eps 1e-8, no weight decay, momentum 0.95 with
Nesterov; each library's default shape scaling of the matrix lr where it is Keller Jordan's
sqrt(max(1, rows/cols)) (torch.optim.Muon, pytorch-optimizer's Muon and NorMuon), and
pytorch-optimizer's AdaMuon with its default RMS-0.2 scaling (its lr is AdamW-sized).

heavyball's Muon is not among the peers: it compiles its update with torch.compile (about 20 s
for the first step of a small MLP on this CPU), and turning that off means setting a module-level
switch of the library (``heavyball.utils.compile_mode``) for the whole process.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

BETAS = (0.9, 0.95)
EPS = 1e-8
MOMENTUM = 0.95

Build = Callable[[nn.Module, float, float], Any]


class Unavailable(Exception):
    """An optimizer whose module or class cannot be imported here (the reason is the message)."""


@dataclass(frozen=True)
class OptimizerSpec:
    """A benchmarked optimizer: ``name`` (report row), ``source`` (library), ``lr_kind`` (which
    learning-rate grid: "adamw" for AdamW-sized lrs, "muon" for Muon-sized ones, or a method's own
    key), ``build`` (raises ``Unavailable`` when the implementation is missing) and ``quick``
    (whether the quick benchmark runs it, or only the full one)."""

    name: str
    source: str
    lr_kind: str
    build: Build
    quick: bool = True


def load(module: str, name: str) -> Any:
    """``module.name``, or ``Unavailable`` saying which import failed."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise Unavailable(f"{module}.{name} not available ({type(error).__name__}: {error})") from None


def split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(hidden matrices, the rest) by ``torchnewton.optim.param_groups``."""
    from torchnewton.optim import param_groups

    matrices: list[nn.Parameter] = []
    others: list[nn.Parameter] = []
    for group in param_groups(model):
        (matrices if group["use_muon"] else others).extend(group["params"])
    return matrices, others


def use_muon_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Fresh ``use_muon`` groups (some libraries write defaults into the dicts they are given)."""
    matrices, others = split(model)
    return [{"params": matrices, "use_muon": True}, {"params": others, "use_muon": False}]


class OptimizerPair:
    """Two optimizers over disjoint parameters, stepped as one (torch.optim.Muon + AdamW)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)


def adamw(model: nn.Module, lr: float, adamw_lr: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=BETAS, eps=EPS, weight_decay=0.0)


def torch_muon(model: nn.Module, lr: float, adamw_lr: float) -> OptimizerPair:
    muon = load("torch.optim", "Muon")
    matrices, others = split(model)
    return OptimizerPair(
        muon(matrices, lr=lr, momentum=MOMENTUM, nesterov=True, weight_decay=0.0),
        torch.optim.AdamW(others, lr=adamw_lr, betas=BETAS, eps=EPS, weight_decay=0.0))


def pytorch_optimizer_build(name: str, **options: Any) -> Build:
    def build(model: nn.Module, lr: float, adamw_lr: float) -> Any:
        cls = load("pytorch_optimizer", name)
        return cls(use_muon_groups(model), lr=lr, weight_decay=0.0, adamw_lr=adamw_lr,
                   adamw_betas=BETAS, adamw_wd=0.0, **options)
    return build


PEERS = (
    OptimizerSpec("AdamW", "torch.optim", "adamw", adamw),
    OptimizerSpec("torch.optim.Muon (+AdamW)", "torch.optim", "muon", torch_muon),
    OptimizerSpec("pytorch_optimizer.Muon", "pytorch-optimizer", "muon",
                  pytorch_optimizer_build("Muon", momentum=MOMENTUM, nesterov=True, adamw_eps=EPS)),
    OptimizerSpec("pytorch_optimizer.AdaMuon", "pytorch-optimizer", "po_adamuon",
                  pytorch_optimizer_build("AdaMuon", betas=BETAS, eps=EPS), quick=False),
    OptimizerSpec("pytorch_optimizer.NorMuon", "pytorch-optimizer", "po_normuon",
                  pytorch_optimizer_build("NorMuon", momentum=MOMENTUM, nesterov=True, adamw_eps=EPS),
                  quick=False),
)
