"""GCRO-DR: restarted GMRES that deflates a recycled subspace, for a sequence of nonsymmetric systems.

Parks, de Sturler, Mackey, Johnson & Maiti, "Recycling Krylov subspaces for sequences of linear
systems", SIAM J. Sci. Comput. 28 (2006), right-preconditioned in the flexible form of Carvalho,
Gratton, Lago & Vasseur, "A flexible generalized conjugate residual method with inner
orthogonalization and deflated restarting", SIAM J. Matrix Anal. Appl. 32 (2011). The recycled
pair is U (k, n) in the space of the solution and C = A U orthonormal; each cycle runs
s = m − k Arnoldi steps of (I − CᵀC) A M⁻¹ and keeps D = M⁻¹ Vₛ (the solution directions):

    (I − CᵀC) A Dᵀ = Vₛ₊₁ᵀ H̄,   B = C A Dᵀ,   A [U; D]ᵀ = [C; Vₛ₊₁]ᵀ G,   G = [[I, B], [0, H̄]].

Because the top block of G is the identity, min ‖r − Ŵᵀ G y‖ splits: z minimizes ‖βe₁ − H̄z‖
(GMRES's Givens recurrence) and y_U = C r − B z, and x += Dᵀz + Uᵀy_U (no extra M⁻¹). After each
cycle U is replaced by the k harmonic Ritz vectors of smallest magnitude of A M⁻¹, the solutions
of Gᵀ G p = θ Gᵀ Ŵ V̂ᵀ p with V̂ = [S; Vₛ] and S = M U (so that A M⁻¹ Sᵀ = Cᵀ); with GP = QR, the
new pair is [U; D]ᵀ P R⁻¹, Qᵀ Ŵ, which keeps A Uᵀ = Cᵀ exactly whatever M is. For a new matrix
(or a new M) C = A U costs k products with A and none with M⁻¹: a preconditioner rebuilt per
system (an AMG hierarchy) is not applied k extra times. S is carried along by the same linear
combinations; after M changes it is only an approximation of M U, which affects which Ritz
vectors are kept, never the solution. Without M, S and U are the same tensor and D is Vₛ.

Rows are vectors here: V is (s+1, n), U, S and C are (k, n).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from ...core.status import Status
from ..iterative.common import Counted
from ..iterative.nonsymmetric import GivensLeastSquares

# Second Gram–Schmidt pass only when the first cancelled all but this fraction of ‖w‖. One pass
# of classical Gram–Schmidt is PETSc's GMRES default; in GMRES nearly every step cancels more
# than 1 − 1/√2 (Arnoldi's h_{j+1,j} ≪ ‖A v_j‖ near convergence), so the "twice is enough" test
# would reorthogonalize every step and double the cost, which at n ~ 10⁴ is the cost of the
# solve (a 5-point product is ~50 µs, one pass over a 60-vector basis ~1 ms). Measured on the
# convection–diffusion bench: identical product counts with 0.01 and with 1/√2.
REORTHOGONALIZE = 0.01
# Rows per Gram–Schmidt block: a block and w stay in the per-core cache (~1 MiB) between the
# product that forms the coefficients and the update that subtracts them, so each basis vector
# is read from memory once per pass instead of twice as in one (k + j, n) classical pass.
BLOCK_BYTES = 1 << 20


@dataclass
class CycleOutcome:
    x: torch.Tensor
    r: torch.Tensor
    U: torch.Tensor
    S: torch.Tensor
    C: torch.Tensor
    steps: int
    estimate: float


def smallest_harmonic_ritz(lhs: np.ndarray, rhs: np.ndarray, k: int) -> np.ndarray:
    """Real basis (m, ≤k) of the eigenvectors of lhs p = θ rhs p with smallest |θ|; a complex
    pair contributes its real and imaginary parts."""
    theta, vectors = scipy.linalg.eig(lhs, rhs)
    magnitude = np.where(np.isfinite(theta), np.abs(theta), np.inf)
    columns: list[np.ndarray] = []
    taken = np.zeros(len(theta), dtype=bool)
    for i in np.argsort(magnitude, kind="stable"):
        if len(columns) >= k or not np.isfinite(magnitude[i]):
            break
        if taken[i]:
            continue
        taken[i] = True
        v = vectors[:, i]
        if abs(theta[i].imag) > 1e-12 * max(abs(theta[i]), 1e-300):
            columns.extend([v.real, v.imag])
            # the conjugate partner among the values not yet taken (0·inf would be NaN)
            partner = np.argmin(np.where(taken, np.inf, np.abs(theta - np.conj(theta[i]))))
            taken[partner] = True
        else:
            columns.append(v.real)
    if not columns:
        return np.zeros((lhs.shape[0], 0))
    P = np.stack(columns[:k], axis=1)
    return np.linalg.qr(P)[0]  # any basis of the span will do; an orthonormal one is stable


def project_new_matrix(ops: Counted, U: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a new A (or M): C = A U orthonormal, U and S rescaled alike so that A Uᵀ = Cᵀ (k products
    with A, none with M⁻¹). Returns (U, S, C)."""
    AU = ops.A_rows(U)
    Q, R = torch.linalg.qr(AU.T)
    keep = R.diagonal().abs() > 1e-12 * R.diagonal().abs().max().clamp(min=1e-300)
    if not bool(keep.all()):  # a recycled direction A maps (numerically) into the others: drop it
        U, S, AU = U[keep], S[keep], AU[keep]
        Q, R = torch.linalg.qr(AU.T)
    same = S is U
    U = torch.linalg.solve_triangular(R.T, U, upper=False)
    S = U if same else torch.linalg.solve_triangular(R.T, S, upper=False)
    return U, S, Q.T.contiguous()


def block_orthogonalize(basis: torch.Tensor, w: torch.Tensor, block: int) -> torch.Tensor:
    """w −= basisᵀ h block by block (block modified Gram–Schmidt: classical within a block of
    rows, modified across blocks), in place; returns h = the coefficients (one per row)."""
    h = w.new_empty(basis.shape[0])
    for start in range(0, basis.shape[0], block):
        rows = basis[start: start + block]
        torch.mv(rows, w, out=h[start: start + block])
        w.addmv_(rows.T, h[start: start + block], alpha=-1)
    return h


def combine(Pt: torch.Tensor, recycled: torch.Tensor | None, fresh: torch.Tensor) -> torch.Tensor:
    """Pᵀ [recycled; fresh] without concatenating the two blocks of rows."""
    kk = 0 if recycled is None else recycled.shape[0]
    out = Pt[:, kk:] @ fresh
    if recycled is not None:
        out.addmm_(Pt[:, :kk], recycled)
    return out


def cycle(ops: Counted, x: torch.Tensor, r: torch.Tensor, U: torch.Tensor | None, S: torch.Tensor | None,
          C: torch.Tensor | None, m: int, k: int, tol: float, budget: int) -> CycleOutcome:
    """One GCRO-DR cycle from (x, r); at most ``budget`` products with A.

    C and the Arnoldi vectors live in one buffer Z = [C; V], so each step orthogonalizes against
    both in one pass (B's column and H's column at once, block Gram–Schmidt), repeated when the
    first pass cancelled all but ``REORTHOGONALIZE`` of ‖w‖."""
    n = r.shape[0]
    kk = 0 if C is None else C.shape[0]
    s = max(1, min(m - kk, budget, n - kk))
    Z = r.new_empty(kk + s + 1, n)
    # D = M⁻¹V (the flexible form's solution directions); without M it is V itself
    D = r.new_empty(s, n) if ops.precond is not None else None
    if C is not None:
        Z[:kk] = C
    c_r = C @ r if C is not None else r.new_zeros(0)
    rp = r - c_r @ C if C is not None else r
    beta = float(rp.norm())
    Z[kk] = rp / max(beta, 1e-300)
    lsq = GivensLeastSquares(beta)
    coefficients = np.zeros((kk + s + 1, s))  # column j: [B[:, j]; H̄[:, j]]
    steps, estimate = 0, beta
    tiny = torch.finfo(r.dtype).tiny
    w = torch.empty_like(r)
    block = max(1, BLOCK_BYTES // (n * r.element_size()))
    for j in range(s):
        if D is None:
            ops.mv(Z[kk + j], out=w)
        else:
            D[j] = ops.M1(Z[kk + j])
            ops.mv(D[j], out=w)
        before = float(w.norm())
        h = block_orthogonalize(Z[: kk + j + 1], w, block)
        after = float(w.norm())
        if after < REORTHOGONALIZE * before:
            h += block_orthogonalize(Z[: kk + j + 1], w, block)
            after = float(w.norm())
        Z[kk + j + 1] = w / max(after, tiny)
        column = h.tolist()
        coefficients[: kk + j + 1, j] = column
        coefficients[kk + j + 1, j] = after
        steps = j + 1
        # span numerically invariant (h_{j+1,j} at rounding level of ‖A v_j‖): the solution is in it
        lucky = after <= 1e-14 * before
        estimate = lsq.add_column(column[kk:] + [after])
        if not np.isfinite(estimate) or estimate <= tol or lucky:
            break
    V = Z[kk: kk + steps + 1]
    directions = V[:steps] if D is None else D[:steps]
    Bmat = coefficients[:kk, :steps]
    H = coefficients[kk: kk + steps + 1, :steps]
    z = lsq.solve(steps, r.dtype).to(r.device)
    step = z @ directions
    if U is not None:
        y_u = c_r - torch.from_numpy(Bmat).to(r) @ z
        step.addmv_(U.T, y_u)
    x = x + step
    r = rp - (torch.from_numpy(H).to(r) @ z) @ V
    # harmonic Ritz update of the recycled pair over V̂ = [S; Vₛ], Ŵ = [C; Vₛ₊₁]
    size = kk + steps
    G = np.zeros((size + 1, size))
    G[:kk, :kk] = np.eye(kk)
    G[:kk, kk:] = Bmat
    G[kk:, kk:] = H
    WV = np.zeros((size + 1, size))
    WV[kk:kk + steps, kk:] = np.eye(steps)
    if S is not None:
        WV[:kk, :kk] = (C @ S.T).cpu().numpy()
        WV[kk:, :kk] = (V @ S.T).cpu().numpy()
    finite = np.all(np.isfinite(G)) and np.all(np.isfinite(WV))
    P = smallest_harmonic_ritz(G.T @ G, G.T @ WV, min(k, size)) if finite and k > 0 else np.zeros((size, 0))
    if not np.all(np.isfinite(P)) or P.shape[1] == 0:
        empty = r.new_zeros(0, n)
        keep = (U, S, C) if U is not None else (empty, empty, empty)
        return CycleOutcome(x, r, *keep, steps, estimate)
    Q, R = np.linalg.qr(G @ P)
    Pt, Qt = torch.from_numpy(P.T.copy()).to(r), torch.from_numpy(Q.T.copy()).to(r)
    Rt = torch.from_numpy(R.T.copy()).to(r)
    U_new = torch.linalg.solve_triangular(Rt, combine(Pt, U, directions), upper=False)
    S_new = U_new if D is None else torch.linalg.solve_triangular(Rt, combine(Pt, S, V[:steps]), upper=False)
    C_new = Qt @ Z[: kk + steps + 1]    # Qᵀ Ŵ, Ŵ = [C; Vₛ₊₁] = the first rows of Z
    return CycleOutcome(x, r, U_new, S_new, C_new, steps, estimate)


def gcrodr(ops: Counted, b: torch.Tensor, x: torch.Tensor, U: torch.Tensor | None, *, m: int, k: int,
           tol: float, maxiter: int, S: torch.Tensor | None = None, reuse_C: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, int, Status, float]:
    """Solve A x = b (1-D b, x) to ‖b − Ax‖ ≤ tol with GCRO-DR(m, k), starting from the recycled
    U (and its preconditioned-side S = M U, U itself when not given; plain GMRES(m) for the first
    system). ``reuse_C`` = A U from the previous solve with the same A. Returns
    (x, U, S, C, iterations, status, ‖r‖)."""
    r = b - ops.A(x.unsqueeze(0))[0] if bool(x.any()) else b.clone()
    C = reuse_C
    if U is not None and U.shape[0] == 0:
        U = None
    if U is not None:
        S = U if S is None or S.shape != U.shape or ops.precond is None else S
        if C is None:
            U, S, C = project_new_matrix(ops, U, S)
        c_r = C @ r
        x = x + c_r @ U
        r = r - c_r @ C
    else:
        S = C = None
    nit = 0
    while True:
        rnorm = float(r.norm())
        if not np.isfinite(rnorm):
            return x, U, S, C, nit, Status.NONFINITE, rnorm
        if rnorm <= tol:
            r_true = b - ops.A(x.unsqueeze(0))[0]
            rnorm = float(r_true.norm())
            if rnorm <= tol:
                return x, U, S, C, nit, Status.SUCCESS, rnorm
            r = r_true  # rounding drift: go on from the true residual
        if nit >= maxiter:
            return x, U, S, C, nit, Status.MAX_ITER, rnorm
        out = cycle(ops, x, r, U, S, C, m, k, tol, maxiter - nit)
        x, r, nit = out.x, out.r, nit + out.steps
        if out.U.shape[0] > 0:
            U, S, C = out.U, out.S, out.C
