"""Randomized iterative sketching (sketch-and-project) for a batch of square systems K z = b.

Each iteration draws a random sketch S (N, q) and projects the iterate onto the solutions of the
sketched system SᵀK z = Sᵀb in the Euclidean norm (Gower & Richtárik 2015, "Randomized iterative
methods for linear systems"):

    W = KᵀS,   z ← z − W (WᵀW)⁻¹ (Wᵀz − Sᵀb).

The sketched residual Sᵀ(Kz − b) = Wᵀz − Sᵀb needs only W, so an iteration never forms the full
residual; that is computed (and synchronized with the host) once every ``check_every``
iterations to test the caller's accuracy condition ‖Kz − b‖ ≤ θ‖b‖ (θ per member). This is the
inner solver of Hong, Na, Mahoney & Kolar (ICML 2023, "Constrained Optimization via Exact
Augmented Lagrangian and Randomized Iterative Sketching"), whose experiments use single-row
randomized Kaczmarz and single Gaussian vectors; here both come in blocks of q:

* ``"coordinate"`` (block Kaczmarz): S picks q rows, W = the rows of K, so an iteration costs
  O(Nq) plus a q × q solve. Rows are drawn without replacement in random order per epoch
  (random reshuffling).
* ``"gaussian"``: S has i.i.d. N(0, 1) entries; W = KᵀS costs q products with K.

Sketches come in rounds (about an epoch, N/q of them): W, Sᵀb and M_j = (W_jW_jᵀ)⁻¹W_j for the
whole round are formed by one product with K (a row gather for a dense K with coordinate
sketches) and batched factorizations, so an iteration is two small batched products,
z ← z − M_jᵀ(W_j z − S_jᵀb), and no host sync.

``K`` is a dense (B, N, N) tensor or, for a symmetric K, a callable V ↦ KV on blocks (B, N, q)
— matrix-free, e.g. :class:`KKTOperator` for [[H + δI, Jᵀ], [J, 0]] with Hessian-vector products,
so the (N × N) matrix is never formed.

Cost and when it pays: block Kaczmarz contracts the error roughly by 1 − q σ_min(K)²/‖K‖_F² per
iteration, so a solve to accuracy θ costs about (‖K‖_F²/σ_min²)·log(1/θ)·N operations on a dense
K — cheaper than an O(N³) factorization only when the scaled condition number ‖K‖_F²/σ_min² is
well below N², i.e. for well-conditioned systems and loose θ. Measured on the constrained
logistic-regression benchmark (``torchnewton bench constrained``): to θ = 0.1 one dense solve
takes a few hundred Kaczmarz iterations, about as long as forming ∇²L and factoring at n ≈ 300
and 0.4–0.7x of it at n = 2000; the tight θ of the sharpened rule near the solution needs
hundreds of thousands, so a whole sqp solve with sketched steps is many times slower than with
direct ones. Gaussian sketches through Hessian-vector products need about N products to
reach θ = 0.1, no fewer than forming ∇²L.

Example:
    >>> K = torch.tensor([[[4.0, 1.0], [1.0, -3.0]]], dtype=torch.float64)
    >>> b = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> out = sketch_solve(K, b, torch.tensor([1e-10], dtype=torch.float64), sketch_size=1)
    >>> bool(torch.allclose(K[0] @ out.x[0], b[0]))
    True
"""
from __future__ import annotations

from typing import Callable, Union

import torch

from ..core.status import Status
from .solution import LinearSolution

SKETCHES = ("gaussian", "coordinate")
Operator = Callable[[torch.Tensor], torch.Tensor]
_SHIFT = 1e-12  # relative shift of the q × q Gram matrices: keeps Cholesky alive on dependent rows


class KKTOperator:
    """V ↦ [[H + δI, Jᵀ], [J, 0]] V for blocks V (B, n + m, q), matrix-free in H.

    ``hessp`` maps (B, n, q) blocks to H times them (batched Hessian-vector products); ``J`` is
    (B, m, n); ``shift`` δ (B,) or None.

    Example:
        >>> H = torch.eye(2, dtype=torch.float64).expand(1, 2, 2)
        >>> op = KKTOperator(lambda V: H @ V, torch.ones(1, 1, 2, dtype=torch.float64))
        >>> op(torch.eye(3, dtype=torch.float64).expand(1, 3, 3))[0]
        tensor([[1., 0., 1.],
                [0., 1., 1.],
                [1., 1., 0.]], dtype=torch.float64)
    """

    def __init__(self, hessp: Operator, J: torch.Tensor, shift: torch.Tensor | None = None):
        self.hessp, self.J, self.shift = hessp, J, shift
        self.n = J.shape[-1]

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        Vx, Vl = V[:, : self.n], V[:, self.n:]
        top = self.hessp(Vx) + self.J.transpose(-1, -2) @ Vl
        if self.shift is not None:
            top = top + self.shift.view(-1, 1, 1) * Vx
        return torch.cat([top, self.J @ Vx], 1)


def sketch_solve(K: Union[torch.Tensor, Operator], b: torch.Tensor, accuracy: torch.Tensor | float, *,
                 x0: torch.Tensor | None = None, sketch_size: int | None = None, sketch: str = "gaussian",
                 max_iter: int = 1000, generator: torch.Generator | None = None,
                 check_every: int | None = None) -> LinearSolution:
    """Sketch-and-project until ‖Kz − b‖ ≤ accuracy·‖b‖ per member, or ``max_iter`` iterations.

    ``K`` dense (B, N, N) or a callable on (B, N, q) blocks (then K must be symmetric); ``b``
    (B, N); ``accuracy`` θ (B,) or a float; ``x0`` a warm start (B, N). ``sketch_size`` q defaults
    to min(N, 16) for ``"coordinate"`` (per row, the Gram work grows with q and the per-op overhead
    falls with it: 8–16 balance them at N ≈ 300–2000) and max(1, N // 4) for ``"gaussian"``;
    ``check_every`` (iterations between residual checks, each a product with K and a host
    sync) defaults to max(8, N // (4q)), so that checks cost at most about as much as iterations.
    """
    dense = isinstance(K, torch.Tensor)
    if b.dim() != 2:
        raise ValueError(f"b must be (B, N); got shape {tuple(b.shape)}")
    batch, size = b.shape
    if dense and K.shape != (batch, size, size):
        raise ValueError(f"K must be (B, N, N) = {(batch, size, size)} to match b; got {tuple(K.shape)}")
    if not dense and not callable(K):
        raise TypeError(f"K must be a tensor or a callable V ↦ KV; got {type(K).__name__}")
    if sketch not in SKETCHES:
        raise ValueError(f"sketch={sketch!r}; valid choices: {', '.join(SKETCHES)}")
    if sketch_size is not None and int(sketch_size) < 1:
        raise ValueError(f"sketch_size must be >= 1; got {sketch_size}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0; got {max_iter}")
    if check_every is not None and check_every < 1:
        raise ValueError(f"check_every must be >= 1; got {check_every}")
    if x0 is not None and x0.shape != b.shape:
        raise ValueError(f"x0 must have b's shape {tuple(b.shape)}; got {tuple(x0.shape)}")
    theta = torch.as_tensor(accuracy, dtype=b.dtype, device=b.device).expand(batch)
    if sketch_size is None:
        q = min(size, 16) if sketch == "coordinate" else max(1, size // 4)
    else:
        q = min(int(sketch_size), size)
    if check_every is None:
        check_every = max(8, size // (4 * q))
    product = (lambda V: K @ V) if dense else K
    z = torch.zeros_like(b) if x0 is None else x0.clone()
    state = _Progress(product, b, theta, z)
    z = _iterate(K, b, z, q, sketch, max_iter, generator, check_every, state)
    norm = state.norm
    status = torch.where(norm <= state.target, int(Status.SUCCESS), int(Status.MAX_ITER))
    status = torch.where(torch.isfinite(norm) & torch.isfinite(z).all(-1), status, int(Status.BREAKDOWN))
    return LinearSolution(x=z, status=status, iterations=state.iterations, residual_norm=norm)


class _Progress:
    """Residual checks, the active mask and per-member iteration counts of one solve."""

    def __init__(self, product: Operator, b: torch.Tensor, theta: torch.Tensor, z: torch.Tensor):
        self.product, self.b = product, b
        self.target = theta * b.norm(dim=-1)
        self.iterations = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
        self.pending = 0  # iterations since the last check, counted into every active member at the check
        self.active = torch.ones(b.shape[0], dtype=torch.bool, device=b.device)
        self.check(z)

    def check(self, z: torch.Tensor) -> bool:
        """Update the residual norms and the active mask at z; True while some member is active."""
        self.iterations = self.iterations + self.pending * self.active.long()
        self.pending = 0
        self.norm = (self.product(z.unsqueeze(-1)).squeeze(-1) - self.b).norm(dim=-1)
        self.active = self.active & (self.norm > self.target) & torch.isfinite(self.norm)
        return bool(self.active.any())

    def mask(self) -> torch.Tensor:
        return self.active.unsqueeze(-1).to(self.b.dtype)


def _factor(gram: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of (G + εtr(G)/q I): the q × q projections, robust to dependent rows."""
    q = gram.shape[-1]
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp(min=torch.finfo(gram.dtype).tiny)
    eye = torch.eye(q, dtype=gram.dtype, device=gram.device)
    return torch.linalg.cholesky_ex(gram + (_SHIFT * scale).unsqueeze(-1).unsqueeze(-1) * eye).L


def _sketches(K, b, q: int, count: int, sketch: str, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` sketches at once: W (B, count, q, N) = SᵀK and Sᵀb (B, count, q, 1).

    Coordinate blocks are consecutive pieces of random permutations (no row twice in one
    permutation); a dense K gives them by gathering rows, an operator (symmetric K) by one
    product with the (N, count·q) block of unit vectors."""
    batch, size = b.shape
    if sketch == "gaussian":
        S = torch.randn(batch, size, count * q, dtype=b.dtype, device=b.device, generator=generator)
        W = (S.transpose(-1, -2) @ K) if isinstance(K, torch.Tensor) else K(S).transpose(-1, -2)
        return W.view(batch, count, q, size), (S.transpose(-1, -2) @ b.unsqueeze(-1)).view(batch, count, q, 1)
    per_permutation = max(1, size // q)
    permutations = -(-count // per_permutation)
    keys = torch.rand(batch, permutations, size, generator=generator, device=b.device)
    rows = keys.argsort(-1)[..., : per_permutation * q].reshape(batch, -1)[:, : count * q]
    if isinstance(K, torch.Tensor):
        W = K[torch.arange(batch, device=b.device).unsqueeze(-1), rows]
    else:
        S = torch.zeros(batch, size, count * q, dtype=b.dtype, device=b.device)
        S.scatter_(1, rows.unsqueeze(1), 1.0)
        W = K(S).transpose(-1, -2)
    return W.view(batch, count, q, size), torch.gather(b, 1, rows).view(batch, count, q, 1)


def _iterate(K, b, z, q, sketch, max_iter, generator, check_every, state: _Progress) -> torch.Tensor:
    """Rounds of sketches drawn and factored in batched ops; two small products per iteration."""
    batch, size = b.shape
    # a round: about one epoch (N/q sketches), at least 32 to amortize its batched ops, at most
    # 2²² entries of W per member
    per_round = max(1, min(max(size // q, 32), (1 << 22) // (size * q)))
    z = z.unsqueeze(-1)
    done = 0
    while done < max_iter and bool(state.active.any()):
        count = min(per_round, max_iter - done)
        W, sketched_b = _sketches(K, b, q, count, sketch, generator)
        # M_j = (W_j W_jᵀ)⁻¹ W_j, so that z ← z − M_jᵀ (W_j z − Sᵀb)
        M = torch.cholesky_inverse(_factor(W @ W.transpose(-1, -2))) @ W
        Mt = (M * state.mask().view(batch, 1, 1, 1)).transpose(-1, -2)
        Ws, Mts, cs = W.unbind(1), Mt.unbind(1), sketched_b.unbind(1)
        for j in range(count):
            z = torch.baddbmm(z, Mts[j], torch.baddbmm(cs[j], Ws[j], z, beta=-1), alpha=-1)
            done += 1
            state.pending += 1
            if done % check_every == 0 or j == count - 1:
                before = state.active
                if not state.check(z.squeeze(-1)):
                    return z.squeeze(-1)
                if not torch.equal(before, state.active):  # a member converged: freeze it
                    Mts = (Mt * state.mask().view(batch, 1, 1, 1)).unbind(1)
    return z.squeeze(-1)
