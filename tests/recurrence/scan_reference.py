"""The plain-Python reference of the linear scan, shared by the scan tests."""
from __future__ import annotations

import torch


def loop(A, b, h0, structure, reverse):
    """Plain-Python reference, time step by time step, of torch ops with their own derivatives."""
    T = b.shape[-2]
    order = range(T - 1, -1, -1) if reverse else range(T)
    h, out = h0, [None] * T
    for t in order:
        if structure == "diagonal":
            Ah = A[..., t, :] * h
        elif structure == "dense":
            Ah = (A[..., t, :, :] @ h.unsqueeze(-1)).squeeze(-1)
        else:
            nb, k = A.shape[-3], A.shape[-1]
            Ah = (A[..., t, :, :, :] @ h.reshape(*h.shape[:-1], nb, k, 1)).reshape(h.shape)
        h = Ah + b[..., t, :]
        out[t] = h
    return torch.stack(out, -2)
