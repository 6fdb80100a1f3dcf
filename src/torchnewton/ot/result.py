"""OTResult: what every entropic OT solve returns."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..core.status import Status


@dataclass
class OTResult:
    """Outcome of :func:`torchnewton.ot.sinkhorn`.

    Tensors carry the caller's batch shape in front: ``plan`` (..., n, m); dual potentials ``f``
    (..., n) and ``g`` (..., m) with P_ij = exp((f_i + g_j − C_ij)/reg), in the gauge ⟨f, a⟩ = ⟨g, b⟩;
    ``cost`` = ⟨C, P⟩ (the linear transport cost, POT's ``sinkhorn2``); ``reg_cost`` =
    ⟨f, a⟩ + ⟨g, b⟩ − reg·Σ P, the dual value, which at the solution equals the primal
    ⟨C, P⟩ + reg·Σ P(log P − 1); ``marginal_error`` = ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁; ``nit`` iterations
    (Sinkhorn and Newton together); ``n_newton`` accepted Newton steps. Without batch dimensions
    ``status`` is a :class:`Status`, ``success`` a bool and ``nit``/``n_newton`` ints; with them,
    int64/bool tensors of the batch shape. ``history`` holds per-iteration records when
    ``log=True``.
    """

    plan: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    cost: torch.Tensor
    reg_cost: torch.Tensor
    marginal_error: torch.Tensor
    nit: Any
    n_newton: Any
    status: Any
    success: Any
    message: Any
    method: str
    history: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = []
        for item in fields(self):
            if item.name == "history":
                continue
            value = getattr(self, item.name)
            if isinstance(value, torch.Tensor):
                text = (str(value.detach().cpu().tolist()) if value.numel() <= 8
                        else f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})")
            elif isinstance(value, Status):
                text = value.name
            else:
                text = str(value)
            lines.append(f"{item.name:>14}: {text}")
        lines.append(f"{'history':>14}: {len(self.history)} records")
        return "\n".join(lines)
