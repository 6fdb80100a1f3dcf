"""What every functional entry point does before and after the loop: validate, batch, build the Result."""
from __future__ import annotations

from typing import Any

import torch

from ..core.counters import Counters
from ..core.result import Result
from ..core.status import Status
from ..core.validate import check_same_device, check_tensor
from .loop import LoopOutput

_MESSAGES = {int(code): code.message for code in Status}


def prepare_x0(x0: Any, batch: bool, args: tuple) -> torch.Tensor:
    """Validate x0 and return it as a detached (B, n) batch (B = 1 without ``batch``)."""
    check_tensor(x0, "x0", ndim=2 if batch else 1)
    if x0.shape[-1] == 0 or (batch and x0.shape[0] == 0):
        raise ValueError(f"x0 must not be empty, got shape {tuple(x0.shape)}")
    check_same_device([("x0", x0)] + [(f"args[{i}]", a) for i, a in enumerate(args)])
    x = x0.detach().clone()
    return x if batch else x.unsqueeze(0)


def check_callable(value: Any, name: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def check_output(value: Any, name: str, expected: tuple[int, ...]) -> None:
    """A user function's output on x0 must be a tensor of the expected batched shape."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != expected:
        raise ValueError(f"{name} returned shape {tuple(value.shape)}, expected {expected}")


def build_result(loop: LoopOutput, counters: Counters, batch: bool, x: torch.Tensor,
                 **fields: Any) -> Result:
    """Assemble the Result; without ``batch`` the batch of one is squeezed to scalars."""
    status, nit = loop.status, loop.nit
    success = status == int(Status.SUCCESS)
    messages = [_MESSAGES[code] for code in status.tolist()]
    extras = fields.pop("extras", {})
    if not batch:
        squeeze = lambda t: t[0] if isinstance(t, torch.Tensor) and t.dim() > 0 else t
        fields = {k: squeeze(v) for k, v in fields.items()}
        extras = {k: squeeze(v) for k, v in extras.items()}
        return Result(x=x[0], success=bool(success[0]), status=Status(int(status[0])), message=messages[0],
                      nit=int(nit[0]), nfev=counters.nfev, njev=counters.njev, nhev=counters.nhev,
                      nlinsolve=counters.nlinsolve, history=_squeeze_history(loop.history), extras=extras, **fields)
    return Result(x=x, success=success, status=status, message=messages, nit=nit, nfev=counters.nfev,
                  njev=counters.njev, nhev=counters.nhev, nlinsolve=counters.nlinsolve,
                  history=loop.history, extras=extras, **fields)


def _squeeze_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (float(v[0]) if isinstance(v, torch.Tensor) and v.dim() == 1 else v) for k, v in h.items()}
            for h in history]
