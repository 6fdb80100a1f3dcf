"""Batched Krylov solvers: CG (with trust-region truncation), MINRES and restarted GMRES.

Each member of the batch converges on its own: once its residual meets the tolerance it stops
changing while the others go on, and its status says how it ended.

A batch of one problem on the CPU (a single solve) takes a lean path through CG and GMRES: the
same recurrences with the per-member scalars as Python floats, plain branches instead of masks
and no ``torch.where`` per iteration. In float64 it does the same arithmetic in the same order,
so it returns bitwise the batched result (in float32 the scalars round in double: round-off).

With a trust radius, CG also returns the model value m(x) = −bᵀx + ½xᵀAx of the step it returns
(``TrustRegionSolution.model``), from its scalar recurrences: no product with A beyond the solve.
From x₀ = 0, a CG step x + αp changes m by −α pᵀr + ½α² pᵀAp, and pᵀr = rᵀz (p is z plus a
multiple of the previous direction, which is orthogonal to r), so a full step α = rᵀz / pᵀAp
changes it by −½ α rᵀz and a step τ to the boundary by −τ rᵀz + ½τ² pᵀAp (Nocedal & Wright
§5.1, Thm. 5.2; GALAHAD's GLTR keeps the model value the same way).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..core.status import Status
from .operator import LinearOperator, as_operator
from .solution import LinearSolution

Preconditioner = Callable[[torch.Tensor], torch.Tensor]


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum(-1)


def _identity(r: torch.Tensor) -> torch.Tensor:
    return r


def _col(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(-1)


def _one_problem(b: torch.Tensor) -> bool:
    """A single problem on the CPU, whose scalars are read back without a device sync, and no
    autograd recording or ``torch.func`` transform around the solve: its Python-float step
    lengths would be constants to them, where the batched path's are differentiable tensors."""
    return (b.shape[0] == 1 and b.is_cpu and not torch.is_grad_enabled()
            and torch._C._functorch.peek_interpreter_stack() is None)


def _norm(v: torch.Tensor) -> torch.Tensor:
    """‖v‖ over the last dim: ``Tensor.norm``'s kernel without its Python dispatch."""
    return torch.linalg.vector_norm(v, dim=-1)


def _value(t: torch.Tensor) -> float:
    """The one member's scalar of a (1,) tensor."""
    return t.item()


class TrustRegionSolution(LinearSolution):
    """A Steihaug–Toint CG solution, with the model value m(x) = −bᵀx + ½xᵀAx at the returned x
    (for b = −g: m(s) = gᵀs + ½sᵀHs) and the residual b − Ax = −∇m(x), both from the recurrences.

    ``model`` is a (B,) tensor; ``model_value`` is the same as a Python float for a solve that
    took the lean path (one problem on the CPU), else None: the caller reads it without a
    tensor round-trip. ``residual`` (B, n) is formed on first access."""

    def __init__(self, x: torch.Tensor, status: torch.Tensor, iterations: torch.Tensor,
                 residual_norm: torch.Tensor | Callable[[], torch.Tensor], direction: torch.Tensor,
                 on_boundary: torch.Tensor, model: torch.Tensor | float,
                 residual: Callable[[], torch.Tensor]):
        super().__init__(x, status, iterations, residual_norm, direction=direction, on_boundary=on_boundary)
        self.model_value = model if isinstance(model, float) else None
        self._model, self._residual = model, residual

    @property
    def model(self) -> torch.Tensor:
        if isinstance(self._model, float):
            self._model = self.x.new_full((1,), self._model)
        return self._model

    @property
    def residual(self) -> torch.Tensor:
        if callable(self._residual):
            self._residual = self._residual()
        return self._residual


def boundary_step(x: torch.Tensor, p: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """The τ ≥ 0 with ‖x + τp‖ = radius (x inside the ball), per member."""
    a, b, c = _dot(p, p), 2 * _dot(x, p), _dot(x, x) - radius**2
    disc = torch.sqrt(torch.clamp(b * b - 4 * a * c, min=0))
    return (-b + disc) / torch.clamp(2 * a, min=torch.finfo(x.dtype).tiny)


def _boundary_step_one(x: torch.Tensor, p: torch.Tensor, radius: float) -> float:
    """:func:`boundary_step` of one member on Python floats (the same operations in the same order)."""
    a, b, c = _value(_dot(p, p)), 2 * _value(_dot(x, p)), _value(_dot(x, x)) - radius * radius
    disc = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return (-b + disc) / max(2 * a, torch.finfo(x.dtype).tiny)


def cg(A: LinearOperator | torch.Tensor, b: torch.Tensor, *, x0: torch.Tensor | None = None,
       preconditioner: Preconditioner | None = None, rtol: float | torch.Tensor = 1e-6,
       atol: float = 0.0, max_iter: int | None = None,
       radius: torch.Tensor | None = None, curvature: float = 0.0,
       residual_replacement: bool = False) -> LinearSolution | TrustRegionSolution:
    """Preconditioned conjugate gradients for symmetric A x = b, batched.

    Stops a member when ‖r‖ ≤ max(rtol·‖b‖, atol). A direction p with pᵀAp ≤ κ‖p‖² (κ =
    ``curvature``, 0 by default) ends that member with ``Status.NEGATIVE_CURVATURE`` and is
    returned in ``direction`` (the truncated-Newton convention; κ > 0 is the inertia-free test
    dᵀAd ≥ κ‖d‖² of Chiang & Zavala 2016, which also rejects nearly flat directions). With
    ``radius`` (B,) it is Steihaug–Toint truncated CG for the trust-region
    subproblem min gᵀs + ½sᵀAs, ‖s‖ ≤ Δ (call with b = −g): the iterate is moved to the
    boundary when a step leaves the ball or meets negative curvature (``on_boundary``), and the
    result is a :class:`TrustRegionSolution` carrying the model value of the returned step.
    ``rtol`` may be a per-member tensor (B,), e.g. Eisenstat–Walker forcing terms.

    ``residual_replacement``: the recurred residual drifts from b − Ax by rounding, and a tight
    tolerance can be met by the recurrence long before it is met by the true residual (by a
    factor 9 at ‖r‖/‖b‖ = 1e-11 on KKT systems). With it, a member whose recurred residual meets
    the tolerance is checked on b − Ax (one product with A for the batch); where that misses,
    the recurrence restarts from the true residual with a steepest-descent direction (van der
    Vorst & Ye 2000, "Residual replacement strategies for Krylov subspace iterative methods").
    The default options leave the iterates bitwise unchanged; the lean path for a single
    problem (module docstring) takes the default options only.

    Reference: Nocedal & Wright, Numerical Optimization, Alg. 5.2 and 7.2.

    Example:
        >>> A = torch.tensor([[[4.0, 1.0], [1.0, 3.0]]]); b = torch.tensor([[1.0, 2.0]])
        >>> cg(A, b).x  # doctest: +SKIP
        tensor([[0.0909, 0.6364]])
    """
    op = as_operator(A)
    batch, n = b.shape
    if radius is not None and (preconditioner is not None or x0 is not None):
        raise ValueError("radius (Steihaug CG) needs x0=None and no preconditioner")
    if not (isinstance(curvature, (int, float)) and curvature >= 0):
        raise ValueError(f"curvature must be a number >= 0; got {curvature!r}")
    precond = preconditioner or _identity
    max_iter = max_iter if max_iter is not None else max(2 * n, 10)
    if _one_problem(b) and curvature == 0 and not residual_replacement:
        return _cg_one(op, b, x0, precond, rtol, atol, max_iter, radius)
    tol = torch.clamp(torch.as_tensor(rtol, dtype=b.dtype, device=b.device) * b.norm(dim=-1), min=atol)
    run = cg_iterations(op, b, x0, precond, tol, max_iter, radius=radius, curvature=curvature,
                        residual_replacement=residual_replacement)
    x = run.x
    residual_norm = lambda: (b - op.matvec(x)).norm(dim=-1)
    if radius is not None:
        return TrustRegionSolution(x=x, status=run.status, iterations=run.iterations, residual_norm=residual_norm,
                                   direction=run.direction, on_boundary=run.on_boundary, model=run.model,
                                   residual=lambda: run.r)
    return LinearSolution(x=x, status=run.status, iterations=run.iterations, residual_norm=residual_norm,
                          direction=run.direction, on_boundary=run.on_boundary)


@dataclass
class CGRun:
    """What the batched CG loop ends with: the iterate, its recurred residual r (b − Ax up to
    rounding; M⁻¹r is the preconditioned one), per-member status and iteration counts, the
    negative-curvature directions, the trust-region flags and model values."""

    x: torch.Tensor
    r: torch.Tensor
    status: torch.Tensor
    iterations: torch.Tensor
    direction: torch.Tensor
    on_boundary: torch.Tensor
    model: torch.Tensor


def cg_iterations(op: LinearOperator, b: torch.Tensor, x0: torch.Tensor | None, precond: Preconditioner,
                  tol: torch.Tensor, max_iter: int, *, radius: torch.Tensor | None = None,
                  curvature: float = 0.0, residual_replacement: bool = False,
                  preconditioned_norm: bool = False) -> CGRun:
    """The batched loop of :func:`cg` with the stopping threshold ``tol`` (B,) given.

    ``preconditioned_norm`` tests ‖M⁻¹r‖ ≤ tol instead of ‖r‖ ≤ tol: with an orthogonal projector
    P as M⁻¹ (CG on P A P, the null-space method of :func:`~torchnewton.linear.sketch.projected_cg`)
    Pr is the residual of the projected system, and r itself never vanishes."""
    batch, n = b.shape
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - op.matvec(x) if x0 is not None else b.clone()
    z = precond(r)
    p = z.clone()
    rz = _dot(r, z)
    measure = (lambda r, z: z.norm(dim=-1)) if preconditioned_norm else (lambda r, z: r.norm(dim=-1))
    long = dict(dtype=torch.long, device=b.device)
    status = torch.full((batch,), int(Status.MAX_ITER), **long)
    active = measure(r, z) > tol
    status = torch.where(active, status, torch.full_like(status, int(Status.SUCCESS)))
    iterations = torch.zeros(batch, **long)
    direction = torch.zeros_like(b)
    on_boundary = torch.zeros(batch, dtype=torch.bool, device=b.device)
    model = torch.zeros_like(rz)  # m(x) by the recurrence (module docstring); m(0) = 0
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        Ap = op.matvec(p)
        pAp = _dot(p, Ap)
        broken = active & ~torch.isfinite(pAp)
        flat = (pAp <= 0) if curvature == 0 else (pAp <= curvature * _dot(p, p))
        negative = active & flat & ~broken
        if radius is not None:
            tau = boundary_step(x, p, radius)
            x = torch.where(_col(negative), x + _col(tau) * p, x)
            model = torch.where(negative, model + (-tau * rz + 0.5 * tau * tau * pAp), model)
            r = torch.where(_col(negative), r - _col(tau) * Ap, r)
            on_boundary = on_boundary | negative
        direction = torch.where(_col(negative), p, direction)
        status = torch.where(negative, torch.full_like(status, int(Status.NEGATIVE_CURVATURE)), status)
        status = torch.where(broken, torch.full_like(status, int(Status.BREAKDOWN)), status)
        active = active & ~negative & ~broken
        alpha = torch.where(active, rz / torch.where(active, pAp, torch.ones_like(pAp)), torch.zeros_like(rz))
        x_next = x + _col(alpha) * p
        if radius is not None:
            leaves = active & (x_next.norm(dim=-1) >= radius)
            tau = boundary_step(x, p, radius)
            x = torch.where(_col(leaves), x + _col(tau) * p, x)
            model = torch.where(leaves, model + (-tau * rz + 0.5 * tau * tau * pAp), model)
            r = torch.where(_col(leaves), r - _col(tau) * Ap, r)
            on_boundary = on_boundary | leaves
            status = torch.where(leaves, torch.full_like(status, int(Status.SUCCESS)), status)
            active = active & ~leaves
        x = torch.where(_col(active), x_next, x)
        if radius is not None:
            model = torch.where(active, model - 0.5 * alpha * rz, model)
        iterations = iterations + active.long()
        r = torch.where(_col(active), r - _col(alpha) * Ap, r)
        z = precond(r)
        converged = active & (measure(r, z) <= tol)
        restart = torch.zeros_like(converged)
        if residual_replacement and bool(converged.any()):
            true_r = b - op.matvec(x)
            r = torch.where(_col(converged), true_r, r)
            z = torch.where(_col(converged), precond(true_r), z)
            restart = converged & (measure(r, z) > tol)
            converged = converged & ~restart
        status = torch.where(converged, torch.full_like(status, int(Status.SUCCESS)), status)
        active = active & ~converged
        rz_next = _dot(r, z)
        beta = rz_next / torch.where(rz == 0, torch.ones_like(rz), rz)
        beta = torch.where(restart, torch.zeros_like(beta), beta) if residual_replacement else beta
        p = torch.where(_col(active), z + _col(beta) * p, p)
        rz = torch.where(active, rz_next, rz)
    return CGRun(x=x, r=r, status=status, iterations=iterations, direction=direction,
                 on_boundary=on_boundary, model=model)


def _cg_one(op: LinearOperator, b: torch.Tensor, x0: torch.Tensor | None, precond: Preconditioner,
            rtol: float | torch.Tensor, atol: float, max_iter: int,
            radius: torch.Tensor | None) -> LinearSolution | TrustRegionSolution:
    """:func:`cg` for a batch of one problem: its scalars as floats, and a member that stops ends the loop."""
    # r and p are rebound, never written in place: b and z need no copies
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - op.matvec(x) if x0 is not None else b
    z = precond(r)
    p = z
    rz = _value(_dot(r, z))
    b_norm = _norm(b).item()
    # the batched tolerance is formed in b's dtype: a float64 product rounds as a Python float's,
    # another dtype's is formed as a tensor, for the same comparisons
    if isinstance(rtol, float) and b.dtype == torch.float64:
        tol = max(rtol * b_norm, atol)
    else:
        tol = max(_value(torch.as_tensor(rtol, dtype=b.dtype) * _norm(b)), atol)
    delta = None if radius is None else _value(radius)
    status, iterations, direction, on_boundary = Status.MAX_ITER, 0, None, False
    model, Ap, tau = 0.0, None, 0.0  # m(x), and the boundary move x + τp still owed to the residual
    if not (b_norm if x0 is None else _norm(r).item()) > tol:
        status = Status.SUCCESS
    for _ in range(max_iter if status == Status.MAX_ITER else 0):
        Ap = op.matvec(p)
        pAp = _value(_dot(p, Ap))
        if not math.isfinite(pAp):
            status = Status.BREAKDOWN
            break
        if pAp <= 0:
            if delta is not None:
                tau = _boundary_step_one(x, p, delta)
                x = x + tau * p
                model = model + (-tau * rz + 0.5 * tau * tau * pAp)
                on_boundary = True
            direction, status = p, Status.NEGATIVE_CURVATURE
            break
        alpha = rz / pAp
        x_next = x + alpha * p
        if delta is not None and _norm(x_next).item() >= delta:
            tau = _boundary_step_one(x, p, delta)
            x = x + tau * p
            model = model + (-tau * rz + 0.5 * tau * tau * pAp)
            on_boundary, status = True, Status.SUCCESS
            break
        x = x_next
        model = model - 0.5 * alpha * rz
        iterations += 1
        r = r - alpha * Ap
        if _norm(r).item() <= tol:
            status = Status.SUCCESS
            break
        z = precond(r)
        rz_next = _value(_dot(r, z))
        p = z + (rz_next / (rz if rz != 0 else 1.0)) * p
        rz = rz_next
    long = dict(dtype=torch.long, device=b.device)
    fields = dict(x=x, status=torch.full((1,), int(status), **long), iterations=torch.full((1,), iterations, **long),
                  residual_norm=lambda: _norm(b - op.matvec(x)),
                  direction=torch.zeros_like(b) if direction is None else direction,
                  on_boundary=torch.full((1,), on_boundary, dtype=torch.bool, device=b.device))
    if delta is None:
        return LinearSolution(**fields)
    # a boundary exit moved x by τp but left r at the last interior iterate
    residual = (lambda: r - tau * Ap) if on_boundary else (lambda: r)
    return TrustRegionSolution(**fields, model=model, residual=residual)


def minres(A: LinearOperator | torch.Tensor, b: torch.Tensor, *, x0: torch.Tensor | None = None,
           preconditioner: Preconditioner | None = None, rtol: float = 1e-6, atol: float = 0.0,
           max_iter: int | None = None) -> LinearSolution:
    """MINRES for symmetric (possibly indefinite) A x = b, with an SPD preconditioner, batched.

    Lanczos tridiagonalization with Givens rotations minimizes ‖b − Ax‖ over the Krylov space
    (Paige & Saunders 1975, "Solution of sparse indefinite systems of linear equations").
    The stopping test uses the recurrence's residual estimate ‖r‖ ≤ max(rtol·‖b‖, atol);
    the returned ``residual_norm`` is recomputed from x.
    """
    op = as_operator(A)
    batch, n = b.shape
    precond = preconditioner or _identity
    max_iter = max_iter if max_iter is not None else max(5 * n, 10)
    dtype_eps = torch.finfo(b.dtype).eps
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r1 = b - op.matvec(x) if x0 is not None else b.clone()
    y = precond(r1)
    beta1 = torch.sqrt(torch.clamp(_dot(r1, y), min=0))
    tol = torch.clamp(rtol * beta1, min=atol)
    zeros = torch.zeros(batch, dtype=b.dtype, device=b.device)
    old_beta, beta, dbar, epsilon, phibar = zeros, beta1, zeros, zeros, beta1
    cs, sn = -torch.ones_like(zeros), zeros
    w, w2, r2 = torch.zeros_like(b), torch.zeros_like(b), r1
    long = dict(dtype=torch.long, device=b.device)
    active = beta1 > tol
    status = torch.where(active, torch.full((batch,), int(Status.MAX_ITER), **long),
                         torch.full((batch,), int(Status.SUCCESS), **long))
    iterations = torch.zeros(batch, **long)
    for k in range(max_iter):
        if not bool(active.any()):
            break
        safe_beta = torch.where(beta > 0, beta, torch.ones_like(beta))
        v = y / _col(safe_beta)
        y = op.matvec(v)
        if k > 0:
            y = y - _col(beta / torch.where(old_beta > 0, old_beta, torch.ones_like(old_beta))) * r1
        alpha = _dot(v, y)
        y = y - _col(alpha / safe_beta) * r2
        r1, r2 = r2, y
        y = precond(r2)
        old_beta, beta = beta, torch.sqrt(torch.clamp(_dot(r2, y), min=0))
        old_epsilon = epsilon
        delta = cs * dbar + sn * alpha
        gbar = sn * dbar - cs * alpha
        epsilon = sn * beta
        dbar = -cs * beta
        gamma = torch.clamp(torch.hypot(gbar, beta), min=dtype_eps)
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * phibar
        phibar = sn * phibar
        w1, w2 = w2, w
        w = (v - _col(old_epsilon) * w1 - _col(delta) * w2) / _col(gamma)
        x = torch.where(_col(active), x + _col(phi) * w, x)
        iterations = iterations + active.long()
        broken = active & ~torch.isfinite(x).all(-1)
        converged = active & (phibar <= tol)
        # beta == 0 means the Krylov space is exhausted: x is exact in that space.
        exhausted = active & (beta <= dtype_eps * beta1)
        status = torch.where(converged | exhausted, torch.full_like(status, int(Status.SUCCESS)), status)
        status = torch.where(broken, torch.full_like(status, int(Status.BREAKDOWN)), status)
        active = active & ~converged & ~exhausted & ~broken
    return LinearSolution(x=x, status=status, iterations=iterations,
                          residual_norm=lambda: (b - op.matvec(x)).norm(dim=-1))


def gmres(A: LinearOperator | torch.Tensor, b: torch.Tensor, *, x0: torch.Tensor | None = None,
          preconditioner: Preconditioner | None = None, rtol: float | torch.Tensor = 1e-6,
          atol: float = 0.0, restart: int = 30, max_iter: int | None = None) -> LinearSolution:
    """Restarted GMRES(m) for general A x = b, right-preconditioned, batched.

    Arnoldi with classical Gram–Schmidt applied twice (as stable as modified Gram–Schmidt, but two
    batched matrix products per step instead of a Python loop), and the small least-squares
    problem min ‖βe₁ − H y‖ solved at every step (Saad & Schultz 1986). Each member stops at the
    inner step where its residual ≤ max(rtol·‖b‖, atol); ``max_iter`` counts inner steps over all
    restarts. ``rtol`` may be per member (B,).
    """
    op = as_operator(A)
    batch, n = b.shape
    precond = preconditioner or _identity
    max_iter = max_iter if max_iter is not None else max(10 * n, 50)
    restart = min(restart, n)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    tol = torch.clamp(torch.as_tensor(rtol, dtype=b.dtype, device=b.device) * b.norm(dim=-1), min=atol)
    long = dict(dtype=torch.long, device=b.device)
    status = torch.full((batch,), int(Status.MAX_ITER), **long)
    iterations = torch.zeros(batch, **long)
    tiny = torch.finfo(b.dtype).tiny
    one = _one_problem(b)
    total = 0
    while total < max_iter:
        r = b - op.matvec(x)
        beta = r.norm(dim=-1)
        finite = torch.isfinite(beta)
        active = (beta > tol) & finite
        status = torch.where(active, torch.full_like(status, int(Status.MAX_ITER)),
                             torch.full_like(status, int(Status.SUCCESS)))
        status = torch.where(finite, status, torch.full_like(status, int(Status.BREAKDOWN)))
        if not bool(active.any()):
            break
        m = min(restart, max_iter - total)
        V = torch.zeros(batch, m + 1, n, dtype=b.dtype, device=b.device)
        H = torch.zeros(batch, m + 1, m, dtype=b.dtype, device=b.device)
        g = torch.zeros(batch, m + 1, dtype=b.dtype, device=b.device)
        g[:, 0] = beta
        V[:, 0] = r / _col(torch.clamp(beta, min=tiny))
        y_final = torch.zeros(batch, m, dtype=b.dtype, device=b.device)
        for j in range(m):
            w = op.matvec(precond(V[:, j]))
            basis = V[:, : j + 1]
            h = torch.einsum("bkn,bn->bk", basis, w)
            w = w - torch.einsum("bkn,bk->bn", basis, h)
            correction = torch.einsum("bkn,bn->bk", basis, w)
            w = w - torch.einsum("bkn,bk->bn", basis, correction)
            h_next = w.norm(dim=-1)
            H[:, : j + 1, j] = h + correction
            H[:, j + 1, j] = h_next
            V[:, j + 1] = w / _col(torch.clamp(h_next, min=tiny))
            Hj = H[:, : j + 2, : j + 1]
            y = torch.linalg.lstsq(Hj, g[:, : j + 2].unsqueeze(-1)).solution.squeeze(-1)
            residual = (g[:, : j + 2] - torch.einsum("bij,bj->bi", Hj, y)).norm(dim=-1)
            # a vanishing h_next is a lucky breakdown: the Krylov space holds the solution
            if one:  # the one member is active here: no masks, one read-back
                y_final[:, : j + 1] = y
                iterations += 1
                if bool((residual <= tol) | (h_next <= 1e3 * tiny)):
                    status = torch.full_like(status, int(Status.SUCCESS))
                    break
                continue
            y_final[:, : j + 1] = torch.where(_col(active), y, y_final[:, : j + 1])
            iterations = iterations + active.long()
            done = active & ((residual <= tol) | (h_next <= 1e3 * tiny))
            status = torch.where(done, torch.full_like(status, int(Status.SUCCESS)), status)
            active = active & ~done
            if not bool(active.any()):
                break
        total += m
        x = x + precond(torch.einsum("bmn,bm->bn", V[:, :m], y_final))
    residual_norm = (b - op.matvec(x)).norm(dim=-1)
    status = torch.where(torch.isfinite(residual_norm), status, torch.full_like(status, int(Status.BREAKDOWN)))
    return LinearSolution(x=x, status=status, iterations=iterations, residual_norm=residual_norm)
