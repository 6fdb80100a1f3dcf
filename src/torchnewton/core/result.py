"""The one result type returned by every solver entry point."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .status import Status


@dataclass
class Result:
    """Outcome of a solve, scipy.optimize-shaped.

    Under batching every tensor field has a leading batch dimension and ``success``/``status``
    are per problem (bool / int64 tensors); otherwise they are scalars (``bool``/``Status``).
    ``history`` is a list of per-iteration dicts (only filled when recording is enabled).
    Extra per-family fields (``cost`` for least squares, ``multipliers`` ...) live in ``extras``
    and are also readable as attributes.
    """

    x: torch.Tensor
    success: Any
    status: Any
    message: Any
    fun: torch.Tensor | None = None
    jac: torch.Tensor | None = None
    grad: torch.Tensor | None = None
    nit: Any = 0
    nfev: int = 0
    njev: int = 0
    nhev: int = 0
    nlinsolve: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    method: Any = None  # the method that produced the answer where a solve may try several (root)

    def __getattr__(self, name: str) -> Any:
        extras = self.__dict__.get("extras", {})
        if name in extras:
            return extras[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        lines = []
        for f in fields(self):
            if f.name in ("history", "extras") or (f.name == "method" and self.method is None):
                continue
            lines.append(f"{f.name:>9}: {_short(getattr(self, f.name))}")
        for k, v in self.extras.items():
            lines.append(f"{k:>9}: {_short(v)}")
        lines.append(f"{'history':>9}: {len(self.history)} records")
        return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() <= 8:
            return str(value.detach().cpu().tolist())
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, Status):
        return value.name
    if isinstance(value, list) and len(value) > 4:
        counts = {item: value.count(item) for item in dict.fromkeys(value)}
        return "; ".join(f"{n}× {item}" for item, n in counts.items())
    return str(value)
