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
* ``"projected-cg"`` (KKT systems [[H, Jᵀ], [J, 0]] only; :func:`projected_cg`): adaptive
  sketches — each step projects onto one sketched equation pₖᵀ(Hx − r_x) = 0 with pₖ H-conjugate
  to the earlier ones, i.e. conjugate gradients on H restricted to null(J). It converges at the
  rate of the reduced condition number of H, not of the indefinite K, and a step costs one
  product with H (a Hessian-vector product when K is a :class:`KKTOperator`).

Random sketches come in rounds (about an epoch, N/q of them): W, Sᵀb and M_j = (W_jW_jᵀ)⁻¹W_j for the
whole round are formed by one product with K (a row gather for a dense K with coordinate
sketches) and batched factorizations, so an iteration is two small batched products,
z ← z − M_jᵀ(W_j z − S_jᵀb), and no host sync.

``K`` is a dense (B, N, N) tensor or, for a symmetric K, a callable V ↦ KV on blocks (B, N, q)
— matrix-free, e.g. :class:`KKTOperator` for [[H + δI, Jᵀ], [J, 0]] with Hessian-vector products,
so the (N × N) matrix is never formed.

Cost and when it pays. Projected CG: on the constrained logistic regression of ``torchnewton
bench constrained`` (reduced Hessian condition number ≈ 4 near the solution) a KKT solve to the
sharpened θ takes 3–6 CG steps, so an sqp iteration with ∇²L formed costs forming plus a few
products instead of forming plus LDLᵀ and LU — whole sqp solves take 0.6–0.75x the CPU time of
direct ones from n = 300 to 4000 (forming ∇²L, which both pay, is most of the rest). The sqp's
default with this sketch is matrix-free (a :class:`KKTOperator` of Hessian-vector products, ∇²L
never formed): then an iteration is a handful of O(Nn) products, and the same iterates cost
0.5x of direct's time per iteration at n = 300, 0.17x at n = 1000 and 0.065x at n = 4000. Random sketches:
block Kaczmarz contracts the error roughly by 1 − q σ_min(K)²/‖K‖_F² per
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
from .batched import matvec
from .krylov import cg_iterations
from .operator import MatrixFreeOperator
from .solution import LinearSolution

SKETCHES = ("gaussian", "coordinate", "projected-cg")
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
                 check_every: int | None = None, constraint_rows: int | None = None) -> LinearSolution:
    """Sketch-and-project until ‖Kz − b‖ ≤ accuracy·‖b‖ per member, or ``max_iter`` iterations.

    ``K`` dense (B, N, N) or a callable on (B, N, q) blocks (then K must be symmetric); ``b``
    (B, N); ``accuracy`` θ (B,) or a float; ``x0`` a warm start (B, N). ``sketch_size`` q defaults
    to min(N, 16) for ``"coordinate"`` (per row, the Gram work grows with q and the per-op overhead
    falls with it: 8–16 balance them at N ≈ 300–2000) and max(1, N // 4) for ``"gaussian"``;
    ``check_every`` (iterations between residual checks, each a product with K and a host
    sync) defaults to max(8, N // (4q)), so that checks cost at most about as much as iterations.

    ``"projected-cg"`` (a KKT system; :func:`projected_cg`) takes the constraint rows m from a
    :class:`KKTOperator`, from ``constraint_rows`` for another callable, and for a dense K from
    its trailing zero block; it is deterministic and ignores ``sketch_size``, ``generator`` and
    ``check_every``.
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
    if constraint_rows is not None and not 0 <= int(constraint_rows) < size:
        raise ValueError(f"constraint_rows must be in [0, {size}); got {constraint_rows}")
    theta = torch.as_tensor(accuracy, dtype=b.dtype, device=b.device).expand(batch)
    if sketch == "projected-cg":
        return projected_cg(K, b, theta, x0=x0, max_iter=max_iter, constraint_rows=constraint_rows)
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


_CURVATURE = 1e-8  # κ of the inertia-free test dᵀHd ≥ κ‖d‖² (Chiang & Zavala 2016), as the KKT step uses


def trailing_zero_block(K: torch.Tensor) -> int:
    """The largest m < N with K[:, N−m:, N−m:] = 0 in every member (B, N, N): the constraint rows of
    a KKT matrix [[H, Jᵀ], [J, 0]] (any m with a zero block is a valid saddle-point split)."""
    size = K.shape[-1]
    columns = torch.arange(size, device=K.device)
    last = torch.where((K != 0).any(0), columns, -1).amax(-1)  # the last nonzero column of each row
    suffix = last.flip(0).cummax(0).values  # suffix[k − 1]: the last nonzero column among the last k rows
    k = columns + 1
    zero = (suffix < size - k) & (k < size)
    return int(k[zero].max()) if bool(zero.any()) else 0


def projected_cg(K: Union[torch.Tensor, Operator], b: torch.Tensor, accuracy: torch.Tensor | float, *,
                 x0: torch.Tensor | None = None, max_iter: int = 1000,
                 constraint_rows: int | None = None) -> LinearSolution:
    """Projected conjugate gradients on a KKT system [[H, Jᵀ], [J, 0]] [x; λ] = [r_x; r_c] (B, n + m).

    The null-space method of Gould, Hribar & Nocedal (2001, "On the solution of equality
    constrained quadratic programming problems arising in optimization"): x starts at the
    least-norm solution Jᵀ(JJᵀ)⁻¹r_c of Jx = r_c, then CG runs on H restricted to null(J) with the
    projector P = I − Jᵀ(JJᵀ)⁻¹J as its preconditioner (every direction stays in null(J), so Jx = r_c
    throughout); λ = (JJᵀ)⁻¹J(r_x − Hx) at the end. The loop is :func:`~torchnewton.linear.krylov.cg`'s
    (:func:`~torchnewton.linear.krylov.cg_iterations` with M⁻¹ = P, the test on ‖Pr‖, the curvature
    threshold below and residual replacement, without which a tight θ such as 1e-11 is met by the
    recurred residual while the true one is several times larger). With these least-squares
    multipliers the KKT residual is exactly the projected residual P(r_x − Hx) (the constraint rows are met to rounding),
    so the stopping test ‖P(r_x − Hx)‖ ≤ θ‖b‖ is exactly the accuracy condition
    ‖Kz − b‖ ≤ θ‖b‖ that the sqp imposes on every inexact KKT step (θ_k = min(θ₀, ‖(∇ₓL, c)‖^β), the rule of
    Hong, Na, Mahoney & Kolar, ICML 2023, who meet it with random sketches). The outer method does
    not see which solver met it: the merit test, the tightening of θ where a step is no descent
    step, and the inertia-free curvature test are the same for every inner solver.

    As sketch-and-project: a CG step is the H-norm projection onto the solutions of the sketched
    system pₖᵀ(Hx − r_x) = 0 with the adaptive sketch pₖ, a direction H-conjugate to the earlier
    ones, so the projections compose — after k steps x is the H-norm projection onto the
    solutions of all k sketched equations. With conjugate sketches the error contracts by
    (√κ − 1)/(√κ + 1) per step, κ the condition number of H on null(J), instead of the
    1 − q σ_min²/‖K‖_F² of random (block Kaczmarz, Gaussian) sketches of the indefinite K, and each
    step costs one product with H alone (a Hessian-vector product matrix-free) and O(nm).

    Where H is not positive definite on null(J) CG meets a direction d with dᵀHd ≤ κ‖d‖² (κ =
    1e-8); the member stops with status NEGATIVE_CURVATURE and x = ``direction`` = (d, 0), which the
    inertia-free test of the KKT step rejects, raising its inertia correction δ.

    ``K`` a dense (B, N, N) tensor (m from its trailing zero block unless ``constraint_rows``
    says), a :class:`KKTOperator`, or a callable on (B, N, q) blocks with ``constraint_rows`` = m.

    Example:
        >>> H = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64)).expand(1, 2, 2)
        >>> op = KKTOperator(lambda V: H @ V, torch.ones(1, 1, 2, dtype=torch.float64))
        >>> out = projected_cg(op, torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64), 1e-12)
        >>> out.x.round(decimals=10)  # min x₁² + x₂²/2 s.t. x₁ + x₂ = 3
        tensor([[ 1.,  2., -2.]], dtype=torch.float64)
    """
    batch, size = b.shape
    theta = torch.as_tensor(accuracy, dtype=b.dtype, device=b.device).expand(batch)
    hess, J = _kkt_parts(K, b, constraint_rows)
    m = J.shape[1]
    n = size - m
    r_x, r_c = b[:, :n], b[:, n:]
    factor = _gram_factor(J) if m else None

    def gram_solve(v: torch.Tensor) -> torch.Tensor:  # (JJᵀ)⁻¹ v
        return torch.cholesky_solve(v.unsqueeze(-1), factor).squeeze(-1) if m else v

    def project(v: torch.Tensor) -> torch.Tensor:
        # twice: one step of iterative refinement keeps Jx = r_c to rounding over many CG steps
        # (Gould, Hribar & Nocedal 2001, §6); O(nm) each, small next to a product with H
        for _ in range(2 if m else 0):
            v = v - matvec(J.transpose(-1, -2), gram_solve(matvec(J, v)))
        return v

    x = matvec(J.transpose(-1, -2), gram_solve(r_c)) if m else torch.zeros_like(r_x)
    if x0 is not None:
        x = x + project(x0[:, :n])
    # CG on H with P as the preconditioner: r = r_x − Hx stays the unprojected residual (λ is read
    # from it), Pr the projected one the test is on; κ‖p‖² the inertia-free curvature threshold
    H = MatrixFreeOperator(hess, (batch, n, n), dtype=b.dtype, device=b.device)
    run = cg_iterations(H, r_x, x, project, theta * b.norm(dim=-1), max_iter, curvature=_CURVATURE,
                        residual_replacement=True, preconditioned_norm=True)
    negative = run.status == int(Status.NEGATIVE_CURVATURE)
    lam = gram_solve(matvec(J, run.r)) if m else run.r.new_zeros(batch, 0)
    x = torch.where(negative.unsqueeze(-1), run.direction, run.x)
    lam = torch.where(negative.unsqueeze(-1), torch.zeros_like(lam), lam)
    z = torch.cat([x, lam], -1)
    status = torch.where(torch.isfinite(z).all(-1), run.status, int(Status.BREAKDOWN))
    product = (lambda V: K @ V) if isinstance(K, torch.Tensor) else K
    return LinearSolution(x=z, status=status, iterations=run.iterations,
                          residual_norm=lambda: (product(z.unsqueeze(-1)).squeeze(-1) - b).norm(dim=-1),
                          direction=torch.cat([run.direction, torch.zeros_like(lam)], -1))


def _gram_factor(J: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of JJᵀ; members where it fails (dependent rows) get the shifted one of :func:`_factor`."""
    gram = J @ J.transpose(-1, -2)
    L, info = torch.linalg.cholesky_ex(gram)
    return torch.where((info == 0).view(-1, 1, 1), L, _factor(gram))


def _kkt_parts(K, b: torch.Tensor, constraint_rows: int | None) -> tuple[Operator, torch.Tensor]:
    """(v ↦ Hv on (B, n) vectors, J (B, m, n)) of a KKT matrix given densely, as a KKTOperator, or
    as a callable with ``constraint_rows``; ValueError where its constraint block is not zero."""
    batch, size = b.shape
    if isinstance(K, KKTOperator):
        shift = K.shift

        def hess(v: torch.Tensor) -> torch.Tensor:
            out = K.hessp(v.unsqueeze(-1)).squeeze(-1)
            return out if shift is None else out + shift.unsqueeze(-1) * v

        return hess, K.J
    if isinstance(K, torch.Tensor):
        m = trailing_zero_block(K) if constraint_rows is None else int(constraint_rows)
        n = size - m
        if bool((K[:, n:, n:] != 0).any()):
            raise ValueError(f"constraint_rows={m}: K's trailing {m} × {m} block must be zero for "
                             "sketch='projected-cg'")
        H = K[:, :n, :n]
        return (lambda v: matvec(H, v)), K[:, n:, :n]
    if constraint_rows is None:
        raise ValueError("sketch='projected-cg' with a callable K (other than a KKTOperator) needs "
                         "constraint_rows, the number m of constraint rows")
    m = int(constraint_rows)
    n = size - m
    units = torch.zeros(batch, size, m, dtype=b.dtype, device=b.device)
    units[:, n:] = torch.eye(m, dtype=b.dtype, device=b.device)
    columns = K(units)  # [Jᵀ; 0]
    if bool((columns[:, n:] != 0).any()):
        raise ValueError(f"constraint_rows={m}: K's trailing {m} × {m} block must be zero for "
                         "sketch='projected-cg'")

    def hess(v: torch.Tensor) -> torch.Tensor:
        padded = torch.cat([v, v.new_zeros(batch, m)], -1)
        return K(padded.unsqueeze(-1)).squeeze(-1)[:, :n]

    return hess, columns[:, :n].transpose(-1, -2)
