"""Make an indefinite Hessian positive definite by the smallest workable shift τI.

Nocedal & Wright, Numerical Optimization, Alg. 3.3 ("Cholesky with added multiple of the
identity"): try a Cholesky factorization of H + τI, starting from τ = 0 when the diagonal is
positive, and double τ (from β·max|Hᵢⱼ|) until it succeeds. Every member of a batch gets its own
τ; all members are factorized together at each try. The result is a reusable
:class:`~torchnewton.linear.CholeskyFactor` (lazy Hessians reuse it for several steps).
"""
from __future__ import annotations

import functools

import torch

from ..linear import CholeskyFactor
from .members import FLOAT_MATRIX_MAX_N, FloatOps, identity, lean


def shifted_cholesky(H: torch.Tensor, *, beta: float = 1e-3, max_tries: int = 80,
                     initial: torch.Tensor | None = None,
                     floor: torch.Tensor | None = None) -> tuple[CholeskyFactor, torch.Tensor]:
    """(factor of H + τI, τ (B,)) with τ ≥ 0 the first shift on the doubling ladder that works.

    The ladder starts at ``initial`` (B,) when given (a Levenberg–Marquardt damping that must be
    kept if it already works), otherwise at 0 or just past the most negative diagonal entry; each
    failed try doubles τ, to at least ``floor`` (B,) (default β·max|Hᵢⱼ|).

    Example:
        >>> factor, tau = shifted_cholesky(torch.tensor([[[1.0, 0.0], [0.0, -1.0]]]))
        >>> bool(factor.ok), float(tau) > 1.0
        (True, True)
    """
    if lean(H):
        return _shifted_cholesky_one(H, beta, max_tries, initial, floor)
    scale = H.abs().amax(dim=(-1, -2)).clamp(min=torch.finfo(H.dtype).eps)
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    min_diag = H.diagonal(dim1=-2, dim2=-1).amin(-1)
    if floor is None:
        floor = beta * scale
    if initial is None:
        tau = torch.where(min_diag > 0, torch.zeros_like(scale), -min_diag + beta * scale)
    else:
        tau = initial.to(H.dtype)
    L, info = torch.linalg.cholesky_ex(H + tau.view(-1, 1, 1) * eye)
    ok = info == 0
    for _ in range(max_tries):
        if bool(ok.all()):
            break
        tau = torch.where(ok, tau, torch.maximum(2 * tau, floor))
        L_try, info = torch.linalg.cholesky_ex(H + tau.view(-1, 1, 1) * eye)
        L = torch.where(ok.view(-1, 1, 1), L, L_try)
        ok = ok | (info == 0)
    return CholeskyFactor(matrix=H + tau.view(-1, 1, 1) * eye, L=L, ok=ok), tau


def _shifted_cholesky_one(H: torch.Tensor, beta: float, max_tries: int, initial: torch.Tensor | None,
                          floor: torch.Tensor | None) -> tuple[CholeskyFactor, torch.Tensor]:
    """The same ladder for one problem on the CPU: τ and the tests on Python floats, one
    factorization per try (the same arithmetic, so the same τ and factor bitwise). max|Hᵢⱼ| and
    minᵢ Hᵢᵢ are exact, so a small H's are taken on its entries read back as floats."""
    n = H.shape[-1]
    if n <= FLOAT_MATRIX_MAX_N:
        rows = H.tolist()[0]
        largest = functools.reduce(FloatOps.maximum, (abs(v) for row in rows for v in row))
        scale = FloatOps.clamp(largest, min=torch.finfo(H.dtype).eps)
        min_diag = functools.reduce(FloatOps.minimum, (rows[i][i] for i in range(n)))
    else:
        scale, min_diag = torch.cat([H.abs().amax(dim=(-1, -2)).clamp(min=torch.finfo(H.dtype).eps),
                                     H.diagonal(dim1=-2, dim2=-1).amin(-1)]).tolist()
    eye = identity(n, H.dtype)
    floor = beta * scale if floor is None else float(floor)
    if initial is None:
        tau = 0.0 if min_diag > 0 else -min_diag + beta * scale
    else:
        tau = float(initial.to(H.dtype))
    # τ = 0 adds exact zeros: H itself, without the two torch calls of the shift
    shifted = H if tau == 0 else H + tau * eye
    L, info = torch.linalg.cholesky_ex(shifted)
    ok = int(info) == 0
    for _ in range(max_tries):
        if ok:
            break
        tau = FloatOps.maximum(2 * tau, floor)
        shifted = H + tau * eye
        L, info = torch.linalg.cholesky_ex(shifted)
        ok = int(info) == 0
    return CholeskyFactor(matrix=shifted, L=L, ok=info == 0), H.new_full((1,), tau)
