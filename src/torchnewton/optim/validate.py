"""Argument checks shared by the optimizers: clear errors before any state is created.

torch.optim raises ``ValueError`` for an invalid hyperparameter and refuses sparse or complex
parameters it cannot handle; every optimizer here does the same, naming the argument.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch


def check_nonnegative(name: str, value: Any) -> None:
    """``value`` is a finite real number >= 0 (a 1-element tensor counts, as in torch.optim)."""
    number = _real(name, value)
    if not number >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    number = _real(name, value)
    if not number > 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_unit_interval(name: str, value: Any, *, closed_right: bool = False) -> None:
    """``value`` in [0, 1) (or [0, 1] with ``closed_right``): a momentum or a beta."""
    number = _real(name, value)
    upper_ok = number <= 1.0 if closed_right else number < 1.0
    if not (number >= 0.0 and upper_ok):
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")


def check_betas(name: str, betas: Any) -> None:
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        check_unit_interval(f"{name}[{i}]", beta)


def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_gradient(param: torch.Tensor, optimizer: str) -> None:
    """Refuse what the update cannot handle, as torch.optim does: sparse gradients, complex values."""
    if param.grad is not None and param.grad.is_sparse:
        raise RuntimeError(f"{optimizer} does not support sparse gradients")
    if torch.is_complex(param):
        raise RuntimeError(f"{optimizer} does not support complex parameters")


def _real(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} given as a tensor must have one element, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)
