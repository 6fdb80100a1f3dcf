"""The damped step of quasi-ELK: a Kalman filter over time, solved with parallel scans.

ELK (Gonzalez et al., "Towards Scalable and Stable Parallelization of Nonlinear RNNs", NeurIPS
2024) damps DEER like Levenberg-Marquardt: the linearized dynamics around the current guess
``y``, ``h_t = f(y_{t-1}) + D_t (h_{t-1} - y_{t-1}) + w_t`` with ``w_t ~ N(0, 1)``, are combined
with the observation ``y_t = h_t + v_t``, ``v_t ~ N(0, 1/lam)``, and the new guess is the
*filtered* mean (the reference implementation, lindermanlab/elk, uses the filter). Per coordinate,
with diagonal Jacobians ``D_t`` (quasi-ELK), the predicted variances obey a Moebius recurrence

    P_t = D_t^2 P_{t-1} / (1 + lam P_{t-1}) + 1,    P_1 = 1,

i.e. a linear recurrence of 2x2 matrices in homogeneous coordinates ``P_t = p_t / q_t``,
``(p_t, q_t) = [[D_t^2 + lam, 1], [lam, 1]] (p_{t-1}, q_{t-1})``, computed by a chunked scan that
renormalizes every product (the scale of a homogeneous vector is free). With the gain
``k_t = 1 / (1 + lam P_t)`` the step ``delta = m - y`` of the filtered mean is one affine scan,

    delta_t = k_t (D_t delta_{t-1} + f(y_{t-1}, x_t) - y_t).

``|k_t D_t| < 1`` once the filter is in steady state, so the scan is stable for any
``lam > 0`` even where the dynamics are not (``|D_t| > 1``), unlike DEER's. As lam -> 0 the step
becomes the quasi-DEER step, as lam grows a vanishing Jacobi step.

Unlike DEER, a damped step does not make the first unconverged state exact, so it loses the
T-iteration guarantee; ELK with a fixed lam can need more than T iterations on unstable
dynamics. Here the states before the first residual above a threshold (the converged prefix) are
conditioned on as known (zero variance, zero step) and that first state, the frontier, gets
``lam = 0``: it becomes exact, so the prefix grows by at least one state per step and the
T-iteration guarantee holds again, while the states beyond get the damped filter. The threshold
is well below the solve's tolerance (:mod:`.newton` uses ``tol / 64``): a prefix state is never
moved again, so its residual must already be too small to matter for the states' error.
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


def elk_filter_step(D: torch.Tensor, rhs: torch.Tensor, damping: torch.Tensor, threshold: float) -> torch.Tensor:
    """The quasi-ELK step ``delta`` (filtered mean minus the current states), frontier undamped.

    Args:
        D: ``df/dh`` diagonals ``(B, T, d)`` at ``(h_{t-1}, x_t)``; ``D[:, 0]`` is ignored.
        rhs: ``f(h_{t-1}, x_t) - h_t``, ``(B, T, d)``.
        damping: ``lam`` per batch member, ``(B,)``, nonnegative.
        threshold: residual below which a state counts as converged (and is not moved).
    """
    B, T, d = rhs.shape
    unconverged = rhs.abs().amax(2) > threshold  # (B, T)
    frontier = torch.where(unconverged.any(1), unconverged.to(torch.int8).argmax(1), T).view(B, 1, 1)
    t = torch.arange(T, device=rhs.device).view(1, T, 1)
    known = t < frontier  # converged prefix: zero variance, zero step
    lam = torch.where(t <= frontier, 0.0, damping.view(B, 1, 1).to(rhs.dtype)).expand(B, T, d)
    D = torch.where(t == 0, 0.0, D)
    one, zero = torch.ones_like(D), torch.zeros_like(D)
    p, q = projective_scan((torch.where(known, zero, D * D + lam), torch.where(known, zero, one),
                            torch.where(known, zero, lam), one), (zero[:, 0], one[:, 0]))
    # k = 1 / (1 + lam p/q) = q / (q + lam p); exactly 1 where lam = 0 (p/q may be huge there)
    gain = torch.where(lam > 0, q / (q + lam * p), 1.0)
    offset = torch.where(known, 0.0, gain * rhs)
    return scan_batched(gain * D, offset, zero[:, 0], "diagonal")
