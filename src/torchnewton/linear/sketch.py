"""Randomized iterative sketching (sketch-and-project) for a batch of square systems K z = b.

Each iteration draws a random sketch S (N, q) and projects the iterate onto the solutions of the
sketched system SᵀK z = Sᵀb in the Euclidean norm (Gower & Richtárik 2015, "Randomized iterative
methods for linear systems"):

    z ← z − KᵀS (SᵀKKᵀS)⁺ Sᵀ(K z − b).

It needs only the products KᵀS and a q × q solve per iteration, so its cost per iteration is
O(N²q) instead of the O(N³) of a factorization; the expected error contracts linearly. This is
the inner solver of Hong, Na, Mahoney & Kolar (ICML 2023, "Constrained Optimization via Exact
Augmented Lagrangian and Randomized Iterative Sketching"), run until the caller's accuracy
condition ‖K z − b‖ ≤ θ‖b‖ holds (θ per member).

When to use it: this implementation takes K as a dense (B, N, N) tensor, so every iteration pays
O(N²q) for KᵀS and O(N²) for the residual, on top of forming K — with many inner iterations per
outer step it is 40–100x slower per outer iteration than the direct LDLᵀ solve of :mod:`torchnewton.solvers.constrained.kkt` at
every size the benchmarks reach (N up to a few hundred). It is here to study the paper's
inexact-solve convergence (linear with θ fixed, superlinear with θ_k → 0), not for speed; a
speed advantage at large N needs a matrix-free sketch (touching only the sketched rows of K,
products with ∇²L by Hessian-vector products), which this module does not provide.

Example:
    >>> K = torch.tensor([[[4.0, 1.0], [1.0, -3.0]]], dtype=torch.float64)
    >>> b = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> out = sketch_solve(K, b, torch.tensor([1e-10], dtype=torch.float64), sketch_size=1)
    >>> bool(torch.allclose(K[0] @ out.x[0], b[0]))
    True
"""
from __future__ import annotations

import torch

from ..core.status import Status
from .batched import matvec
from .solution import LinearSolution

SKETCHES = ("gaussian", "coordinate")


def sketch_solve(K: torch.Tensor, b: torch.Tensor, accuracy: torch.Tensor, *, x0: torch.Tensor | None = None,
                 sketch_size: int | None = None, sketch: str = "gaussian", max_iter: int = 1000,
                 generator: torch.Generator | None = None) -> LinearSolution:
    """Sketch-and-project until ‖Kz − b‖ ≤ accuracy·‖b‖ per member, or ``max_iter`` iterations.

    ``sketch="gaussian"`` draws S with i.i.d. N(0, 1) entries; ``"coordinate"`` picks q distinct
    rows (block Kaczmarz). ``sketch_size`` q defaults to max(1, N // 4).
    """
    batch, size = b.shape
    q = max(1, size // 4) if sketch_size is None else min(int(sketch_size), size)
    z = torch.zeros_like(b) if x0 is None else x0.clone()
    target = accuracy * b.norm(dim=-1)
    residual = matvec(K, z) - b
    active = residual.norm(dim=-1) > target
    iterations = torch.zeros(batch, dtype=torch.long, device=b.device)
    Kt = K.transpose(-1, -2)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        if sketch == "gaussian":
            S = torch.randn(batch, size, q, dtype=b.dtype, device=b.device, generator=generator)
            KtS = Kt @ S  # (B, N, q)
            sketched = (S.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)
        else:
            rows = torch.rand(batch, size, generator=generator, device=b.device).argsort(-1)[:, :q]
            KtS = torch.gather(Kt, 2, rows.unsqueeze(1).expand(batch, size, q))
            sketched = torch.gather(residual, 1, rows)
        gram = KtS.transpose(-1, -2) @ KtS
        y = torch.linalg.lstsq(gram, sketched.unsqueeze(-1), driver="gelsd" if b.device.type == "cpu" else None
                               ).solution.squeeze(-1)
        z = torch.where(active.unsqueeze(-1), z - (KtS @ y.unsqueeze(-1)).squeeze(-1), z)
        iterations = iterations + active.long()
        residual = matvec(K, z) - b
        active = active & (residual.norm(dim=-1) > target) & torch.isfinite(z).all(-1)
    norm = residual.norm(dim=-1)
    status = torch.where(norm <= target, int(Status.SUCCESS), int(Status.MAX_ITER))
    status = torch.where(torch.isfinite(norm), status, int(Status.BREAKDOWN))
    return LinearSolution(x=z, status=status, iterations=iterations, residual_norm=norm)
