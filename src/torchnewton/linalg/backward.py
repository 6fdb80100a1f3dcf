"""Gradients of the polar factor and the matrix square root by solving Lyapunov equations.

Both backward passes reduce to the Lyapunov equation H X + X H = C with H symmetric positive
(semi)definite. As in Lin & Maji's "Fast Differentiable Matrix Square Root" (ICLR 2022), it is
solved with the matrix sign function, using only matrix products: with T = [[I, X], [0, I]],

    M = [[H, -C], [0, -H]] = T diag(H, -H) T^{-1}  =>  sign(M) = [[I, -2X], [0, -I]],

and the Newton–Schulz sign iteration M <- M (3I - M^2) / 2 keeps the block structure. Writing
M_k = [[P, Q], [0, -P]], one step is

    P <- P (3I - P^2) / 2,      Q <- (3Q - P^2 Q + P Q P - Q P^2) / 2,

P -> I and Q -> -2X. M is scaled by ||H||_F (sign(sM) = sign(M)); a singular H is shifted by
n eps ||H||_F so the iteration terminates and returns a large but finite solution.

Polar factor (A = Q H, Q Q^T = I for wide A, H = (A A^T)^{1/2}): for the upstream gradient G,

    dL/dA = W Q + H^{-1} (G - G Q^T Q),      H W + W H = G Q^T - Q G^T,

and H^{-1} = Y with H Y + Y H = 2I, so both come from one batched sign iteration. Tall A is
handled through the transpose. Square root (S = A^{1/2}, S dS + dS S = dA): dL/dA = Y with
S Y + Y S = G; inverse square root (Z = S^{-1}, dZ = -Z dS Z): S Y + Y S = -Z G Z.
"""
from __future__ import annotations

import torch

from .iteration import iterate_to_tolerance
from .norms import frobenius_norm
from .validate import default_max_steps, default_tol


def solve_lyapunov(H: torch.Tensor, C: torch.Tensor, *, tol: float | None = None) -> torch.Tensor:
    """Solve H X + X H = C for symmetric positive semidefinite H (..., n, n).

    ``C`` (..., n, n) may carry extra leading dimensions that broadcast against H (several
    right-hand sides share one iteration). Computed in at least float32.

    Example:
        >>> H = torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))
        >>> solve_lyapunov(H, torch.ones(2, 2, dtype=torch.float64))
        tensor([[0.5000, 0.2500],
                [0.2500, 0.1667]], dtype=torch.float64)
    """
    work = torch.promote_types(torch.promote_types(H.dtype, C.dtype), torch.float32)
    H, C = H.to(work), C.to(work)
    n = H.shape[-1]
    eye = torch.eye(n, dtype=work, device=H.device)
    norm = frobenius_norm(H)
    shift = n * torch.finfo(work).eps * norm + torch.finfo(work).tiny
    scale = norm + shift
    P = (H + shift * eye) / scale
    Q = -C / scale
    P = P.expand(torch.broadcast_shapes(P.shape, Q.shape))
    tol = default_tol(work) if tol is None else tol

    def step(state: tuple[torch.Tensor, torch.Tensor], k: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        P, Q = state
        P2 = P @ P
        Q_new = 0.5 * (3.0 * Q - P2 @ Q + (P @ Q) @ P - Q @ P2)
        P_new = 1.5 * P - 0.5 * (P @ P2)
        change = torch.linalg.matrix_norm(P_new - P) / n**0.5
        # Q can overflow while P stays finite; report that as a non-finite residual.
        q_norm = torch.linalg.matrix_norm(Q_new)
        return (P_new, Q_new), torch.where(q_norm.isfinite(), change, q_norm)

    (P, Q), _ = iterate_to_tolerance(step, (P, Q), tol=tol, max_steps=default_max_steps(work))
    return -0.5 * Q


def polar_backward(A: torch.Tensor, Q: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """dL/dA for Q = polar(A), given grad = dL/dQ (see the module docstring for the formula)."""
    if A.shape[-2] > A.shape[-1]:
        return polar_backward(A.mT, Q.mT, grad.mT).mT
    dtype = A.dtype
    work = torch.promote_types(dtype, torch.float32)
    A, Q, grad = A.to(work), Q.to(work), grad.to(work)
    m, n = A.shape[-2:]
    H = A @ Q.mT
    H = 0.5 * (H + H.mT)
    skew = grad @ Q.mT - Q @ grad.mT
    if m == n:
        return (solve_lyapunov(H, skew) @ Q).to(dtype)
    eye = torch.eye(m, dtype=work, device=A.device).expand_as(skew)
    W, H_inv = solve_lyapunov(H.unsqueeze(-3), torch.stack([skew, 2.0 * eye], dim=-3)).unbind(-3)
    return (W @ Q + H_inv @ (grad - (grad @ Q.mT) @ Q)).to(dtype)


def sqrtm_backward(S: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """dL/dA for S = A^{1/2}, given grad = dL/dS: the Y with S Y + Y S = grad."""
    return solve_lyapunov(S, grad).to(S.dtype)


def inv_sqrtm_backward(S: torch.Tensor, Z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """dL/dA for Z = A^{-1/2} = S^{-1}, given grad = dL/dZ: S Y + Y S = -Z grad Z."""
    return solve_lyapunov(S, -(Z @ grad @ Z)).to(S.dtype)
