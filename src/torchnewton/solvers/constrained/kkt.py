"""The Newton (KKT) system of a constrained problem, with inertia correction.

    [ W + δI   Jᵀ ] [Δx]   [r_x]
    [ J        0  ] [Δλ] = [r_c]

A step from it is a descent step for the merit functions only if W is positive definite on the
null space of J, i.e. if the KKT matrix has inertia (n, m, 0) (Gould 1985). Where it has not,
δ climbs the ladder of Wächter & Biegler (2006, Ipopt §3.1): from δ_last/3 (or 1e-4 the first
time), times 8 (100 the first time) until it does.

Solvers (``kind``):

* ``"direct"``: where W + δI + ρJᵀJ is positive definite (one ``cholesky_ex``) and the LU pivots
  of K are clear of zero, K has inertia (n, m, 0) (Finsler's lemma; see :func:`_direct`);
  elsewhere a symmetric indefinite factorization K = PLDLᵀPᵀ (Bunch–Kaufman, LAPACK
  ``sytrf`` through ``torch.linalg.ldl_factor_ex``) gives the inertia by Sylvester's law from the
  1×1 and 2×2 blocks of D; the step comes from an LU solve (``lu_factor``/``lu_solve``: on small
  batched systems both are ~25x cheaper than an eigendecomposition, and ``ldl_solve`` is not).
  Members whose D has a (numerically) zero eigenvalue — rank-deficient J, dependent or
  inconsistent constraints — fall back to a symmetric eigendecomposition and its pseudo-inverse
  solve, which yields the least-squares step instead of a blow-up (what the infeasibility test
  needs).
* ``"minres"``: MINRES (Paige & Saunders 1975) to the relative accuracy θ.
* ``"sketch"``: randomized iterative sketching (:mod:`torchnewton.linear.sketch`, block Kaczmarz
  by default) to the relative accuracy θ. Kaczmarz and Gaussian sketches contract slowly on the
  indefinite K (whole solves 18–27x slower than ``"direct"`` at n ≤ 100): they serve the paper's
  convergence study. ``sketch="projected-cg"`` (conjugate gradients on ∇²L restricted to null(J),
  each step a sketch-and-project step along an H-conjugate direction) reaches θ in a few steps
  and makes a whole sqp solve cheaper than ``"direct"`` from n ≈ 300 (``torchnewton bench
  constrained``): 0.6–0.75x CPU time with W formed, and far less where W is given as a product.

W is a dense (B, n, n) matrix or, with ``kind="sketch"``, a product V ↦ WV on (B, n, q) blocks
(a Lagrangian Hessian-vector product, :meth:`.ConstrainedProblem.lagrangian_hessp`): K is then
the :class:`~torchnewton.linear.sketch.KKTOperator` [[W + δI, Jᵀ], [J, 0]] with δ as its
``shift``, never formed, and the curvature test below costs one product.

The iterative solvers do not see the inertia; they take the inertia-free test of Chiang &
Zavala (2016) instead: Δxᵀ(W + δI)Δx ≥ κ‖Δx‖² (κ = 1e-8), raising δ by the same ladder otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ...core.fusion import Fusion
from ...core.status import Status
from ...linear.krylov import minres
from ...linear.batched import matvec
from .lean import constant, finite
from ...linear.sketch import SKETCHES, KKTOperator, sketch_solve

KKT_SOLVERS = ("direct", "minres", "sketch")
_DELTA_MIN, _DELTA_FIRST, _DELTA_MAX = 1e-20, 1e-4, 1e40
_EAGER = Fusion(enabled=False)


@dataclass
class KKTStep:
    dx: torch.Tensor  # (B, n)
    dlam: torch.Tensor  # (B, m)
    delta: torch.Tensor  # (B,) regularization used
    status: torch.Tensor  # (B,) SUCCESS, SINGULAR (no δ gave the right inertia) or the solver's status
    iterations: torch.Tensor  # (B,) inner iterations of an iterative solver


@dataclass
class KKTSolver:
    """``kind`` one of :data:`KKT_SOLVERS`; ``sketch_size``/``sketch``/``max_iter`` for the inner solvers."""

    kind: str = "direct"
    sketch_size: int | None = None
    sketch: str = "coordinate"
    max_iter: int | None = None
    generator: torch.Generator | None = None
    calls: int = 0
    # the solve's :class:`~torchnewton.core.fusion.Fusion`: compiled, K's assembly and the direct
    # solver's arithmetic around its factorizations run fused (the factorizations stay eager)
    fusion: Fusion = field(default_factory=Fusion)

    def solve(self, W: torch.Tensor | Callable[[torch.Tensor], torch.Tensor], J: torch.Tensor, r_x: torch.Tensor,
              r_c: torch.Tensor, delta_last: torch.Tensor, accuracy: torch.Tensor | None = None) -> KKTStep:
        """The step for W dense (B, n, n), or W a product V ↦ WV on (B, n, q) blocks (matrix-free;
        ``kind="sketch"`` only): then K is the :class:`.KKTOperator` [[W + δI, Jᵀ], [J, 0]], never formed."""
        n = r_x.shape[-1]
        m = r_c.shape[-1]
        if callable(W) and not isinstance(W, torch.Tensor):
            if self.kind != "sketch":
                raise ValueError(f"a matrix-free W (a Hessian-vector product) needs kkt_solver='sketch'; "
                                 f"got {self.kind!r}")
            def system(delta: torch.Tensor | None):
                return KKTOperator(W, J, delta)
            rhs = torch.cat([r_x, r_c], -1)
        else:
            K, rhs = self.fusion(assemble, W, J, r_x, r_c)

            def system(delta: torch.Tensor | None):
                if delta is None:
                    return K
                on_x = torch.cat([W.new_ones(n), W.new_zeros(m)])  # δ shifts the x block only
                return K + torch.diag_embed(delta.unsqueeze(-1) * on_x)
        delta = torch.zeros_like(delta_last)
        # δ = 0 first, for every member
        gram: dict = {}  # JᵀJ and its largest entry: the same for every δ
        z, done, status, iterations = self._attempt(system(None), rhs, n, accuracy, gram)
        self.calls += 1
        status = torch.where(done, status, constant(int(Status.SINGULAR), status))
        first = True
        while not bool(done.all()):
            if first:
                start = torch.where(delta_last > 0, torch.clamp(delta_last / 3, min=_DELTA_MIN),
                                    torch.full_like(delta_last, _DELTA_FIRST))
                delta = torch.where(done, delta, start)
            else:
                factor = torch.where(delta_last > 0, 8.0, 100.0).to(delta.dtype)
                delta = torch.where(done, delta, delta * factor)
            first = False
            if bool((delta[~done] > _DELTA_MAX).all()):
                break
            trial, ok, trial_status, trial_iterations = self._attempt(system(delta), rhs, n, accuracy, gram)
            self.calls += 1
            take = ~done
            z = torch.where(take.unsqueeze(-1), trial, z)
            status = torch.where(take & ok, trial_status, status)
            iterations = torch.where(take, iterations + trial_iterations, iterations)
            done = done | ok
        return KKTStep(dx=z[:, :n], dlam=z[:, n:], delta=delta, status=status, iterations=iterations)

    def _attempt(self, K: torch.Tensor | KKTOperator, rhs: torch.Tensor, n: int, accuracy: torch.Tensor | None,
                 gram: dict | None = None):
        """(z, right inertia?, status, iterations) for one δ; K dense or a :class:`.KKTOperator`;
        ``gram``: :func:`_direct`'s cache of JᵀJ across the δ ladder."""
        batch = rhs.shape[0]
        zeros = torch.zeros(batch, dtype=torch.long, device=rhs.device)
        if self.kind == "direct":
            return _direct(K, rhs, n, zeros, gram, self.fusion)
        theta = accuracy if accuracy is not None else torch.full((batch,), 1e-8, dtype=rhs.dtype, device=rhs.device)
        if self.kind == "minres":
            solution = minres(K, rhs, rtol=float(theta.min()), max_iter=self.max_iter)
        else:
            solution = sketch_solve(K, rhs, theta, sketch_size=self.sketch_size, sketch=self.sketch,
                                    max_iter=self.max_iter or 1000, generator=self.generator)
        z = solution.x
        dx = z[:, :n]
        if isinstance(K, KKTOperator):  # one product: (W + δI)dx
            shifted = K.hessp(dx.unsqueeze(-1)).squeeze(-1)
            if K.shift is not None:
                shifted = shifted + K.shift.unsqueeze(-1) * dx
        else:
            shifted = matvec(K[:, :n, :n], dx)
        curvature = (dx * shifted).sum(-1)
        ok = (curvature >= 1e-8 * (dx * dx).sum(-1)) & finite(z).all(-1)
        # an inner solve stopped by its cap still gives a usable inexact step: the outer method
        # judges progress by its merit and success by the KKT tolerance, never by this status
        status = torch.where(solution.status == int(Status.MAX_ITER), int(Status.SUCCESS), solution.status)
        return z, ok, status, solution.iterations


def _threshold(K: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return K.shape[-1] * torch.finfo(K.dtype).eps * scale.clamp(min=torch.finfo(K.dtype).tiny)


def block_eigenvalues(LD: torch.Tensor, pivots: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (B, N) of the block-diagonal D of a Bunch–Kaufman factorization (same inertia as K).

    LAPACK marks a 2×2 block by two equal negative pivots; its off-diagonal entry sits below the
    diagonal of LD. Runs of negative pivots are whole blocks, so a block starts where the running
    count of negative pivots is odd.
    """
    d = LD.diagonal(dim1=-2, dim2=-1)
    below = torch.nn.functional.pad(LD.diagonal(offset=-1, dim1=-2, dim2=-1), (0, 1))
    paired = pivots < 0
    start = paired & (paired.cumsum(-1) % 2 == 1)
    second = paired & ~start
    following = torch.roll(d, -1, -1)
    mean = 0.5 * (d + following)
    radius = torch.sqrt((0.5 * (d - following)) ** 2 + below ** 2)
    values = torch.where(start, mean + radius, d)
    return torch.where(second, torch.roll(mean - radius, 1, -1), values)


def assemble(W: torch.Tensor, J: torch.Tensor, r_x: torch.Tensor, r_c: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, rhs) = ([[W, Jᵀ], [J, 0]], [r_x; r_c]) for dense W (B, n, n), J (B, m, n)."""
    zeros = J.new_zeros(J.shape[0], J.shape[-2], J.shape[-2])
    return torch.cat([torch.cat([W, J.transpose(-1, -2)], -1), torch.cat([J, zeros], -1)], -2), \
        torch.cat([r_x, r_c], -1)


def _direct(K: torch.Tensor, rhs: torch.Tensor, n: int, zeros: torch.Tensor, gram: dict | None = None,
            fusion: Fusion | None = None):
    """(z, inertia (n, m, 0)?, status, iterations): the LU solve, its inertia from one Cholesky
    factorization where that proves it, from LDLᵀ (:func:`_direct_ldl`) elsewhere.

    With W = K[:n, :n] and J = K[n:, :n]: if W + ρJᵀJ ≻ 0 for some ρ ≥ 0, then ZᵀWZ = Zᵀ(W + ρJᵀJ)Z ≻ 0
    for a basis Z of null(J), so a regular K has inertia (n, m, 0) (Gould 1985; J then has full row
    rank). A successful ``cholesky_ex`` of W + ρJᵀJ, ρ = 100·max|W|/max|JᵀJ| (large enough for the
    reduced curvature of every iterate seen on the HS problems, small enough that its rounding,
    ~100·eps·max|W|, cannot hide the curvature along null(J)), and LU pivots all well above the
    singularity threshold settle a member with two factorizations that a batch of small systems runs
    several times faster than ``ldl_factor_ex`` and the block eigenvalues of D. The solution is the
    same LU solve either way; only the members this test cannot settle (wrong inertia, K nearly
    singular, ρ too small) take the LDLᵀ path, so the answer is that of the LDLᵀ test except where
    the two disagree within rounding. ``gram``: a dict that keeps JᵀJ and max|JᵀJ| for the next δ
    (only W's block of K changes along the ladder). ``fusion``: runs the arithmetic between the
    factorizations (:func:`_shifted_block`, :func:`_settled`).
    """
    fusion = fusion if fusion is not None else _EAGER
    known = (gram["JtJ"], gram["size"]) if gram else (None, None)
    W, threshold, JtJ, size = fusion(_shifted_block, K, n, *known)
    if gram is not None and not gram and JtJ is not None:
        gram.update(JtJ=JtJ, size=size)
    LU, lu_pivots, lu_info = torch.linalg.lu_factor_ex(K)
    z = torch.linalg.lu_solve(LU, lu_pivots, rhs.unsqueeze(-1)).squeeze(-1)
    _, chol_info = torch.linalg.cholesky_ex(W)
    clear = fusion(_settled, LU, lu_info, chol_info, threshold, z)
    if bool(clear.all()):
        return z, clear, zeros, zeros
    if not bool(clear.any()):  # no member settled (a nonconvex start): LDLᵀ on the whole batch, same LU solve
        return _direct_ldl(K, rhs, n, zeros, (lu_info, z))
    rows = (~clear).nonzero().squeeze(1)
    z_rest, ok_rest, _, _ = _direct_ldl(K[rows], rhs[rows], n, zeros[rows], (lu_info[rows], z[rows]))
    return z.index_copy(0, rows, z_rest), clear.index_copy(0, rows, ok_rest), zeros, zeros


def _shifted_block(K: torch.Tensor, n: int, JtJ: torch.Tensor | None, size: torch.Tensor | None):
    """(W + ρJᵀJ, the LU pivots' threshold, JᵀJ, max|JᵀJ|) of K (JᵀJ and its size where known;
    W itself and Nones where m = 0): the arithmetic of :func:`_direct` before its factorizations."""
    W, J = K[:, :n, :n], K[:, n:, :n]
    if J.shape[-2]:
        if JtJ is None:
            JtJ = torch.bmm(J.transpose(-1, -2), J)
            size = JtJ.abs().amax((-2, -1)).clamp(min=torch.finfo(K.dtype).tiny)
        rho = _RHO * W.abs().amax((-2, -1)) / size
        W = W + rho.view(-1, 1, 1) * JtJ
    return W, _CLEAR_MARGIN * _threshold(K, K.abs().amax((-2, -1))), JtJ, size


def _settled(LU: torch.Tensor, lu_info: torch.Tensor, chol_info: torch.Tensor, threshold: torch.Tensor,
             z: torch.Tensor) -> torch.Tensor:
    """Members whose inertia the Cholesky factorization proves and whose LU pivots are clear of zero."""
    # both infos are ≥ 0: their bitwise or is zero exactly where both are
    return ((chol_info | lu_info) == 0) & (LU.diagonal(dim1=-2, dim2=-1).abs().amin(-1) > threshold) & \
        finite(z).all(-1)


_RHO = 100.0  # ρ of W + ρJᵀJ relative to max|W|/max|JᵀJ|
_CLEAR_MARGIN = 1e3  # the Cholesky-proved inertia asks for LU pivots this far above the singularity threshold


def _direct_ldl(K: torch.Tensor, rhs: torch.Tensor, n: int, zeros: torch.Tensor,
                solved: tuple[torch.Tensor, torch.Tensor] | None = None):
    """(z, inertia (n, m, 0)?, status, iterations) by LDLᵀ inertia + LU solve, eigh where K is singular;
    ``solved``: (the LU factorization's info, z) where the LU solve is done already."""
    LD, pivots, info = torch.linalg.ldl_factor_ex(K)
    values = block_eigenvalues(LD, pivots)
    threshold = _threshold(K, K.abs().amax((-2, -1)).unsqueeze(-1))
    if solved is None:
        LU, lu_pivots, lu_info = torch.linalg.lu_factor_ex(K)
        z = torch.linalg.lu_solve(LU, lu_pivots, rhs.unsqueeze(-1)).squeeze(-1)
    else:
        lu_info, z = solved
    regular_z = finite(z).all(-1)  # true for every regular member: only the fallback below needs a mask
    regular = (values.abs() > threshold).all(-1) & (info == 0) & (lu_info == 0) & regular_z
    ok = (values > threshold).sum(-1) == n
    if not bool(regular.all()):
        z_pinv, ok_pinv = _pseudo_inverse(K, rhs, n)
        z = torch.where(regular.unsqueeze(-1), z, z_pinv)
        ok = torch.where(regular, ok, ok_pinv)
        regular_z = finite(z).all(-1)
        z = torch.where(regular_z.unsqueeze(-1), z, torch.zeros_like(z))
    return z, ok & regular_z, zeros, zeros


def _pseudo_inverse(K: torch.Tensor, rhs: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimum-norm least-squares solution from an eigendecomposition, and whether n eigenvalues are positive."""
    values, vectors = torch.linalg.eigh(K)
    threshold = _threshold(K, values.abs().amax(-1, keepdim=True))
    kept = values.abs() > threshold
    inverse = torch.where(kept, 1.0 / torch.where(kept, values, torch.ones_like(values)), torch.zeros_like(values))
    coefficients = (vectors.transpose(-1, -2) @ rhs.unsqueeze(-1)).squeeze(-1) * inverse
    return (vectors @ coefficients.unsqueeze(-1)).squeeze(-1), (values > threshold).sum(-1) == n


def check_kkt_options(kind: str, sketch: str) -> None:
    if kind not in KKT_SOLVERS:
        raise ValueError(f"options['kkt_solver']={kind!r}; valid choices: {', '.join(KKT_SOLVERS)}")
    if sketch not in SKETCHES:
        raise ValueError(f"options['sketch']={sketch!r}; valid choices: {', '.join(SKETCHES)}")
