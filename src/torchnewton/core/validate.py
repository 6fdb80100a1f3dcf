"""Argument checks shared by every entry point. They run before any work and name the argument."""
from __future__ import annotations

from typing import Any, Iterable

import torch


def check_tensor(value: Any, name: str, *, ndim: int | tuple[int, ...] | None = None,
                 floating: bool = True, finite: bool = True) -> torch.Tensor:
    """Return ``value`` if it is a real floating tensor of the right rank with finite entries."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and (not value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{name} must have a real floating dtype (float32/float64/...), got {value.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.dim() not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                             f"got shape {tuple(value.shape)}")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or Inf)")
    return value


def check_same_device(tensors: Iterable[tuple[str, Any]]) -> None:
    """All tensors among ``(name, value)`` pairs must live on one device."""
    first: tuple[str, torch.device] | None = None
    for name, value in tensors:
        if not isinstance(value, torch.Tensor):
            continue
        if first is None:
            first = (name, value.device)
        elif value.device != first[1]:
            raise ValueError(f"{name} is on {value.device} but {first[0]} is on {first[1]}; "
                             "move them to one device")


def check_method(method: str, valid: Iterable[str], name: str = "method") -> str:
    """Normalize a case-insensitive method string; unknown ones list the valid choices."""
    if not isinstance(method, str):
        raise TypeError(f"{name} must be a string, got {type(method).__name__}")
    key = method.lower().replace("_", "-")
    valid = list(valid)
    if key not in valid:
        raise ValueError(f"unknown {name} {method!r}; valid choices: {', '.join(valid)}")
    return key


def check_positive(value: Any, name: str, *, integer: bool = False, allow_zero: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_options(options: dict[str, Any] | None, valid: Iterable[str]) -> dict[str, Any]:
    """Unknown option names are an error, not silently ignored."""
    options = dict(options or {})
    valid = set(valid)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown options {unknown}; valid options: {', '.join(sorted(valid))}")
    return options
