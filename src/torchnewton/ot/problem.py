"""The entropic transport problem after validation: marginals, cost and regularization as a batch.

Every solver in ``torchnewton.ot`` works on a flat batch: ``a`` (B, n), ``b`` (B, m), ``C``
(B, n, m) and ``reg`` (B,). The entry points accept any leading batch dimensions (broadcast
between ``a``, ``b`` and ``C``), check them here once, and reshape the results back.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.validate import check_positive, check_same_device, check_tensor


@dataclass
class TransportProblem:
    """A validated batch of entropic OT problems min ⟨C, P⟩ + reg·Σ P(log P − 1), P1 = a, Pᵀ1 = b.

    ``log_a``/``log_b`` are −inf on zero-mass entries, so their potentials are −inf inside the
    solvers and their rows/columns of the plan are exactly zero; ``mass`` is Σa (= Σb) per member.
    ``batch_shape`` is the caller's leading shape, restored on the result.
    """

    a: torch.Tensor
    b: torch.Tensor
    C: torch.Tensor
    reg: torch.Tensor
    log_a: torch.Tensor
    log_b: torch.Tensor
    mass: torch.Tensor
    batch_shape: torch.Size


def mass_tolerance(dtype: torch.dtype) -> float:
    """Relative difference of Σa and Σb still accepted as the same mass: rounding of a normalization,
    also one done in float32 before a conversion to float64."""
    return max(1e-6, 1e3 * float(torch.finfo(dtype).eps))


def prepare(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, reg: float) -> TransportProblem:
    """Check the arguments of an OT entry point and flatten their batch dimensions.

    Raises ``TypeError``/``ValueError`` naming the argument for: non-tensors, non-floating or
    mixed dtypes, mixed devices, shapes that do not fit ``C`` (…, n, m), non-finite values,
    negative masses, a zero total mass, Σa ≠ Σb beyond :func:`mass_tolerance`, and ``reg`` ≤ 0.
    Within that tolerance b is rescaled to a's mass, so that the marginals can be met exactly.
    """
    check_tensor(C, "C", finite=False)
    check_tensor(a, "a", finite=False)
    check_tensor(b, "b", finite=False)
    check_same_device([("C", C), ("a", a), ("b", b)])
    if not (a.dtype == b.dtype == C.dtype):
        raise TypeError(f"a, b and C must share one dtype, got {a.dtype}, {b.dtype} and {C.dtype}")
    if C.dim() < 2:
        raise ValueError(f"C must have shape (..., n, m), got {tuple(C.shape)}")
    if a.dim() < 1 or b.dim() < 1:
        raise ValueError(f"a and b must have shape (..., n) and (..., m), got {tuple(a.shape)} and {tuple(b.shape)}")
    n, m = C.shape[-2:]
    if a.shape[-1] != n:
        raise ValueError(f"a has {a.shape[-1]} entries but C has {n} rows (C is {tuple(C.shape)})")
    if b.shape[-1] != m:
        raise ValueError(f"b has {b.shape[-1]} entries but C has {m} columns (C is {tuple(C.shape)})")
    try:
        batch_shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    except RuntimeError as error:
        raise ValueError(f"batch dimensions of a {tuple(a.shape)}, b {tuple(b.shape)} and C {tuple(C.shape)} "
                         "do not broadcast") from error
    check_positive(reg, "reg")
    for name, value in (("C", C), ("a", a), ("b", b)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} contains non-finite values (NaN or Inf)")
    if bool((a < 0).any()):
        raise ValueError("a has negative entries; marginals must be nonnegative")
    if bool((b < 0).any()):
        raise ValueError("b has negative entries; marginals must be nonnegative")
    mass_a, mass_b = a.sum(-1), b.sum(-1)
    if bool((mass_a <= 0).any()) or bool((mass_b <= 0).any()):
        raise ValueError("a and b must each have a positive total mass")
    gap = (mass_a - mass_b).abs() / torch.maximum(mass_a, mass_b)
    if bool((gap > mass_tolerance(C.dtype)).any()):
        raise ValueError(f"a and b must have the same total mass (balanced OT); relative difference "
                         f"{float(gap.max()):.3g} (sums {mass_a.flatten()[:3].tolist()} vs "
                         f"{mass_b.flatten()[:3].tolist()} ...)")
    batch = int(torch.Size(batch_shape).numel())
    a = a.detach().expand(*batch_shape, n).reshape(batch, n)
    b = b.detach().expand(*batch_shape, m).reshape(batch, m)
    b = b * (a.sum(-1, keepdim=True) / b.sum(-1, keepdim=True))
    C = C.detach().expand(*batch_shape, n, m).reshape(batch, n, m)
    reg_t = torch.full((batch,), float(reg), dtype=C.dtype, device=C.device)
    neg_inf = torch.tensor(float("-inf"), dtype=C.dtype, device=C.device)
    log_a = torch.where(a > 0, torch.log(a), neg_inf)
    log_b = torch.where(b > 0, torch.log(b), neg_inf)
    return TransportProblem(a=a, b=b, C=C, reg=reg_t, log_a=log_a, log_b=log_b, mass=a.sum(-1),
                            batch_shape=torch.Size(batch_shape))
