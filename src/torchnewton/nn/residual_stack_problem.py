"""A stack of residual blocks h_l = h_{l−1} + g_l(h_{l−1}), l = 1..L, as one recurrence over depth.

The hidden-state trace H = (h_1, ..., h_L) solves r_l(H) = h_l − h_{l−1} − g_l(h_{l−1}) = 0, the
recurrence system of :mod:`torchnewton.recurrence` with depth in the role of time and f_l(h) =
h + g_l(h). :class:`DepthProblem` evaluates all L blocks at once on (L, B, d) (their parameters
stacked along a leading layer dimension and called through ``torch.func.vmap`` of
``torch.func.functional_call``), so one Newton-type sweep costs one batched evaluation of the
stack, and plugs into the recurrence solvers:

* its ``"diagonal"`` Jacobian is the identity surrogate of SNLP's Identity-Newton (Han, Xu, Wang &
  Srivastava 2026, "SNLP: Layer-Parallel Inference via Structured Newton Corrections"): the
  Newton correction δ_l = δ_{l−1} + r_l becomes a prefix sum of the residuals;
* its ``"full"`` Jacobian is the exact I + ∂g_l/∂h, formed from JVPs (``torch.func.jacfwd``),
  for exact Newton (DEER over depth) and for the adjoint recurrence of the implicit gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..recurrence.problem import RecurrenceProblem, max_abs

# g(params_l, h_l) for one layer; vmapped over the layer dimension of params and h
LayerCall = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass
class DepthProblem(RecurrenceProblem):
    """The recurrence problem of a residual stack for inputs ``h0`` (B, d).

    ``us`` (B, L, 1) holds the layer index of every row: the recurrence contract calls
    ``transition`` on rows ordered (batch, layer), and the index tells each row its block.
    """

    layer_call: LayerCall | None = None
    params: dict[str, torch.Tensor] | None = None

    @classmethod
    def build(cls, layer_call: LayerCall, params: dict[str, torch.Tensor], h0: torch.Tensor,
              tol: float) -> "DepthProblem":
        B, L = h0.shape[0], next(iter(params.values())).shape[0]
        us = torch.arange(L, dtype=h0.dtype, device=h0.device).view(1, L, 1).expand(B, L, 1)
        problem = cls(transition=lambda h, u: h, linearize=lambda h, u: (h, h), structure="dense", h0=h0, us=us,
                      tol=tol, layer_call=layer_call, params=params)
        problem.transition = problem.rows_transition
        return problem

    @property
    def depth(self) -> int:
        return self.us.shape[1]

    def blocks(self, prev: torch.Tensor) -> torch.Tensor:
        """g_l(prev_l) for all l at once: prev (L, B, d) -> (L, B, d)."""
        return torch.func.vmap(self.layer_call)(self.params, prev)

    def rows_transition(self, prev_rows: torch.Tensor, u_rows: torch.Tensor) -> torch.Tensor:
        """f on rows ordered (batch, layer) covering every layer: h + g_l(h)."""
        L, d = self.depth, prev_rows.shape[-1]
        prev = prev_rows.reshape(-1, L, d).transpose(0, 1)
        return prev_rows + self.blocks(prev).transpose(0, 1).reshape(-1, d)

    def previous(self, h: torch.Tensor) -> torch.Tensor:
        """(h_0, ..., h_{L−1}) as (L, B, d) from the trace h (B, L, d)."""
        return torch.cat([self.h0.unsqueeze(1), h[:, :-1]], 1).transpose(0, 1)

    def residual_and_jacobian(self, h: torch.Tensor, kind: str, out: Any = None
                              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``f(h_{l−1}) − h_l`` (B, L, d), the Jacobians of ``kind`` and ``max_l |r_l|`` (B,).

        ``kind``: ``"none"``; ``"diagonal"``, the identity (Identity-Newton's surrogate), kept from
        ``out`` when given; ``"full"``, the exact I + ∂g_l/∂h (B, L, d, d) by forward mode.
        """
        self.counters.nfev += 1
        prev = self.previous(h)
        jac = None
        if kind == "full":
            self.counters.njev += 1
            per_row = torch.func.jacfwd(self.layer_call, argnums=1)
            # vmap over rows inside, over layers outside: (L, B, d, d)
            inner = torch.func.vmap(per_row, in_dims=(None, 0))
            jac_g = torch.func.vmap(inner)(self.params, prev)
            g = self.blocks(prev)
            eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
            jac = (jac_g + eye).transpose(0, 1).contiguous()
        else:
            g = self.blocks(prev)
            if kind == "diagonal":
                jac = out[1] if out is not None and out[1] is not None else torch.ones_like(h)
        rhs = (prev + g).transpose(0, 1) - h
        return rhs, jac, max_abs(rhs)
