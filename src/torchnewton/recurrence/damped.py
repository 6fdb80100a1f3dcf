"""The Levenberg-Marquardt step of quasi-ELK, solved exactly with parallel scans.

ELK (Gonzalez et al., "Towards Scalable and Stable Parallelization of Nonlinear RNNs", 2024)
stabilizes DEER by damping: minimize ``||r + R delta||^2 + lam ||delta||^2`` where ``R = dr/dH`` is
unit lower bidiagonal with ``-D_t`` below the diagonal. The paper solves it as a Kalman smoother;
here the same step is computed through the identity

    delta = -(R^T R + lam I)^{-1} R^T r = -R^T (R R^T + lam I)^{-1} r.

With diagonal Jacobians ``D_t`` (quasi-ELK), ``M = R R^T + lam I`` is, per coordinate, symmetric
tridiagonal with diagonal ``1 + lam + D_t^2`` (``D_1 = 0``: h_0 is not an unknown) and
off-diagonal ``-D_t``. Its LDL^T factorization has pivots

    w_1 = 1 + lam,   w_t = 1 + lam + D_t^2 - D_t^2 / w_{t-1}   (all >= 1 + lam),

a Moebius recurrence, i.e. a linear recurrence of 2x2 matrices in homogeneous coordinates
``w_t = p_t / q_t``, ``(p_t, q_t) = [[1 + lam + D_t^2, -D_t^2], [1, 0]] (p_{t-1}, q_{t-1})``, computed by a
chunked scan that renormalizes every product (the scale of a homogeneous vector is free). Then
two affine scans finish the solve:

    u_t = r_t + (D_t / w_{t-1}) u_{t-1}        (forward),
    y_t = u_t / w_t + (D_{t+1} / w_t) y_{t+1}  (reverse),
    delta_t = -(y_t - D_{t+1} y_{t+1}).

As lam -> 0 the step becomes the quasi-Newton (quasi-DEER) step ``-R^{-1} r``; as lam grows it
shrinks toward the gradient step ``-R^T r / lam``.
"""
from __future__ import annotations

import math

import torch

from .scan import default_chunk_size, scan_batched

Pair = tuple[torch.Tensor, torch.Tensor]
Matrix = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _normalized(p: torch.Tensor, q: torch.Tensor) -> Pair:
    scale = torch.maximum(p.abs(), q.abs()).clamp_min(torch.finfo(p.dtype).tiny)
    return p / scale, q / scale


def _apply(m: Matrix, v: Pair) -> Pair:
    return _normalized(m[0] * v[0] + m[1] * v[1], m[2] * v[0] + m[3] * v[1])


def _compose(later: Matrix, earlier: Matrix) -> Matrix:
    a, b, c, d = later
    e, f, g, h = earlier
    entries = (a * e + b * g, a * f + b * h, c * e + d * g, c * f + d * h)
    scale = torch.stack([x.abs() for x in entries]).amax(0).clamp_min(torch.finfo(a.dtype).tiny)
    return tuple(x / scale for x in entries)  # type: ignore[return-value]


def projective_scan(m: Matrix, v0: Pair, chunk: int | None = None) -> Pair:
    """Normalized ``v_t = M_t v_{t-1}`` for 2x2 matrices given entrywise, each ``(B, T, ...)``.

    Returns ``(p_t, q_t)`` up to a positive scale per t: only their ratio is meaningful.
    """
    T = m[0].shape[1]
    L = max(chunk or default_chunk_size(T), 2)
    if T <= L:
        v, ps, qs = v0, [], []
        for t in range(T):
            v = _apply(tuple(x[:, t] for x in m), v)  # type: ignore[arg-type]
            ps.append(v[0])
            qs.append(v[1])
        return torch.stack(ps, 1), torch.stack(qs, 1)
    nc = math.ceil(T / L)
    pad = nc * L - T
    if pad:
        fill = (1.0, 0.0, 0.0, 1.0)  # identity: leaves the padded tail's predecessors unchanged
        m = tuple(torch.cat([x, torch.full_like(x[:, :1], f).expand(-1, pad, *x.shape[2:])], 1)
                  for x, f in zip(m, fill))
    m = tuple(x.reshape(x.shape[0], nc, L, *x.shape[2:]) for x in m)
    prod = tuple(x[:, :, 0] for x in m)
    for j in range(1, L):
        prod = _compose(tuple(x[:, :, j] for x in m), prod)  # type: ignore[arg-type]
    # The vector entering chunk c is the carry through the products of chunks 0..c-1.
    ends = projective_scan(prod, v0, L)  # type: ignore[arg-type]
    v = (torch.cat([v0[0].unsqueeze(1), ends[0][:, :-1]], 1), torch.cat([v0[1].unsqueeze(1), ends[1][:, :-1]], 1))
    ps, qs = [], []
    for j in range(L):
        v = _apply(tuple(x[:, :, j] for x in m), v)  # type: ignore[arg-type]
        ps.append(v[0])
        qs.append(v[1])
    p = torch.stack(ps, 2).reshape(m[0].shape[0], nc * L, *m[0].shape[3:])[:, :T]
    q = torch.stack(qs, 2).reshape(m[0].shape[0], nc * L, *m[0].shape[3:])[:, :T]
    return p, q


def levenberg_marquardt_step(D: torch.Tensor, r: torch.Tensor, damping: torch.Tensor) -> torch.Tensor:
    """The damped step ``-(R^T R + lam I)^{-1} R^T r`` for diagonal Jacobians.

    Args:
        D: ``df/dh`` diagonals ``(B, T, d)`` at ``(h_{t-1}, x_t)``; ``D[:, 0]`` is ignored.
        r: residuals ``h_t - f(h_{t-1}, x_t)``, ``(B, T, d)``.
        damping: ``lam`` per batch member, ``(B,)``, nonnegative.
    """
    B, T, d = r.shape
    D = torch.cat([torch.zeros_like(D[:, :1]), D[:, 1:]], 1)
    D2 = D * D
    diag = 1 + damping.view(B, 1, 1) + D2
    ones = torch.ones_like(r[:, 0])
    p, q = projective_scan((diag, -D2, torch.ones_like(D), torch.zeros_like(D)), (ones, ones))
    w = p / q
    w_prev = torch.cat([torch.ones_like(w[:, :1]), w[:, :-1]], 1)
    zeros = torch.zeros_like(r[:, 0])
    u = scan_batched(D / w_prev, r, zeros, "diagonal")
    D_next = torch.cat([D[:, 1:], torch.zeros_like(D[:, :1])], 1)
    y = scan_batched(D_next / w, u / w, zeros, "diagonal", reverse=True)
    y_next = torch.cat([y[:, 1:], torch.zeros_like(y[:, :1])], 1)
    return D_next * y_next - y
