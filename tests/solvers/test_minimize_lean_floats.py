"""Where the lean path of ``minimize`` (one problem on the CPU) reads small tensors back as Python
floats instead of reducing them with torch calls, it keeps every number: the same iterates,
histories and statuses as member 0 of a batch, bitwise in float64, with the user's derivatives too
(``jac``/``hess``), and the exact reductions (‖·‖∞, max|Hᵢⱼ|, min Hᵢᵢ, √ of a correctly rounded
value) equal to torch's, NaN included."""
import math

import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.globalize.hessian_modification import shifted_cholesky
from torchnewton.globalize.members import FloatOps
from torchnewton.globalize.secular import EigenHessian
from torchnewton.solvers.objective.minimize import minimize
from torchnewton.solvers.objective.newton import forcing_term
from torchnewton.solvers.evolve import evolve
from torchnewton.solvers.objective.state import ObjectiveState

F64 = dict(dtype=torch.float64)


def chained_rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def _derivatives(batched: bool):
    """∇f and ∇²f of the chained Rosenbrock function by hand, for (n,) or (B, n) inputs."""
    def jac(x):
        d = x[..., 1:] - x[..., :-1] ** 2
        g = torch.zeros_like(x)
        g[..., :-1] += -400 * x[..., :-1] * d - 2 * (1 - x[..., :-1])
        g[..., 1:] += 200 * d
        return g

    def hess(x):
        n = x.shape[-1]
        H = torch.zeros(x.shape + (n,), dtype=x.dtype)
        i = torch.arange(n - 1)
        xi, d = x[..., :-1], x[..., 1:] - x[..., :-1] ** 2
        H[..., i, i] += 1200 * xi ** 2 - 400 * x[..., 1:] + 2
        H[..., i + 1, i + 1] += 200
        H[..., i, i + 1] += -400 * xi
        H[..., i + 1, i] += -400 * xi
        return H

    return jac, hess


X0 = torch.tensor([-1.2, 1.0, -1.2, 1.0, 0.5, -0.3, 0.8], **F64)
HISTORY_KEYS = ("fun", "grad_norm", "step_norm", "radius", "sigma", "stepsize")
# the secular equation of one problem is solved on Python floats, rounded differently from the
# batch's tensors (see test_lean_path.py): these agree to round-off, the others bitwise
SECULAR = ("trust-exact", "cubic")


@pytest.mark.parametrize("method", ["bfgs", "newton", "newton-cg", "trust-ncg", "cubic", "damped-newton",
                                    "saddle-free-newton", "trust-exact"])
@pytest.mark.parametrize("analytic", [False, True])
def test_lean_histories_equal_the_batch_bitwise(method, analytic):
    kwargs = {}
    if analytic:
        kwargs = dict(zip(("jac", "hess"), _derivatives(False)))
        if method == "bfgs":
            kwargs.pop("hess")
    one = minimize(chained_rosenbrock, X0, method=method, max_iter=300, record_history=True, **kwargs)
    if analytic:
        kwargs = {k: v for k, v in zip(("jac", "hess"), _derivatives(True)) if k in kwargs}
    many = minimize(chained_rosenbrock, torch.stack([X0, X0.flip(0)]), method=method, max_iter=300, batch=True,
                    record_history=True, **kwargs)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    same = torch.equal if method not in SECULAR else (lambda a, b: torch.allclose(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max())))
    assert same(one.x, many.x[0]) and same(one.grad, many.grad[0])
    for key in HISTORY_KEYS:
        if key in one.history[0]:
            a = torch.tensor([h[key] for h in one.history], **F64)
            b = torch.stack([h[key][0] for h in many.history[:len(one.history)]])
            assert same(a, b), key
    g = torch.func.grad(chained_rosenbrock)(one.x)
    assert float(g.abs().max()) <= 1e-5 * max(1.0, float(one.fun))


@pytest.mark.parametrize("method", ["trust-exact", "cubic", "newton", "saddle-free-newton", "bfgs"])
def test_lean_nonfinite_statuses_equal_the_batch(method):
    # NaN beyond x₀ > 0.5: rejected or backtracked steps, and an Inf Hessian entry there too
    f = lambda x: torch.where(x[..., 0] > 0.5, torch.full_like(x[..., 0], float("nan")), chained_rosenbrock(x))
    x0 = X0[:3]
    one = minimize(f, x0, method=method, max_iter=60, record_history=True)
    many = minimize(f, torch.stack([x0, x0.flip(0)]), method=method, max_iter=60, batch=True, record_history=True)
    assert one.status == Status(int(many.status[0])) and one.nit == int(many.nit[0])
    a = torch.tensor([h["step_norm"] for h in one.history], **F64)
    b = torch.stack([h["step_norm"][0] for h in many.history[:len(one.history)]])
    if method in SECULAR:
        assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-9) and torch.allclose(a, b, rtol=1e-6, atol=1e-12)
    else:
        assert torch.equal(one.x, many.x[0]) and torch.equal(a, b)


def test_nonfinite_gradient_ends_nonfinite():
    # a gradient that is NaN at the start: the float ‖·‖∞ sees it as torch's does
    f = lambda x: (x ** 2).sum() + torch.sqrt(x[0])  # ∇f has 1/(2√x₀) = Inf at x₀ = 0
    res = minimize(f, torch.tensor([0.0, 1.0], **F64), method="bfgs")
    assert res.status == Status.NONFINITE and not res.success


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forcing_term_on_floats_equals_the_tensor_one(dtype):
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(200, 5, generator=gen, dtype=dtype) * torch.logspace(-12, 6, 200, dtype=dtype).unsqueeze(-1)
    batched = forcing_term(g)
    for i in range(g.shape[0]):
        one = forcing_term(g[i:i + 1])
        assert isinstance(one, float) and one == batched[i].item()
    assert math.isnan(forcing_term(torch.tensor([[float("nan"), 1.0]], dtype=dtype)))


@pytest.mark.parametrize("H", [[[4.0, 1.0], [1.0, 3.0]], [[-3.0, 0.5], [0.5, -1e-8]], [[0.0, 2.0], [2.0, 0.0]],
                               [[1e300, -1e300], [-1e300, 1e300]], [[float("nan"), 0.0], [0.0, 1.0]],
                               [[1.0, float("inf")], [float("inf"), 1.0]]])
def test_shifted_cholesky_floats_equal_the_batch(H):
    H = torch.tensor([H], **F64)
    one, tau_one = shifted_cholesky(H)
    many, tau_many = shifted_cholesky(torch.cat([H, 2 * torch.eye(2, **F64)[None]]))
    assert torch.equal(tau_one, tau_many[:1]) or (tau_one.isnan().all() and tau_many[:1].isnan().all())
    assert bool(one.ok) == bool(many.ok[0])
    if bool(one.ok):
        assert torch.equal(one.L, many.L[:1]) and torch.equal(one.matrix, many.matrix[:1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_eigen_hessian_of_a_nonfinite_member_has_nan_eigenvalues(bad):
    H = torch.tensor([[[2.0, bad], [bad, 1.0]]], **F64)
    one = EigenHessian.of(H)
    many = EigenHessian.of(torch.cat([H, torch.eye(2, **F64)[None]]))
    assert one.values.isnan().all() and many.values[0].isnan().all() and not many.values[1].isnan().any()
    finite = torch.tensor([[[2.0, 0.5], [0.5, 1.0]]], **F64)
    assert torch.equal(EigenHessian.of(finite).values, torch.linalg.eigvalsh(finite))


def test_float_reductions_match_torch_with_nan_and_inf():
    cases = [[1.0, -3.0, 2.0], [float("nan"), 1.0], [1.0, float("nan")], [-float("inf"), 2.0], [0.0, -0.0]]
    for v in cases:
        t = torch.tensor([v], **F64)
        expected = torch.linalg.vector_norm(t, math.inf, dim=-1).item()
        got = FloatOps.max_abs(t)
        assert got == expected or (math.isnan(got) and math.isnan(expected))
    values = FloatOps.values(torch.tensor([1.5], **F64), torch.tensor([2], dtype=torch.long),
                             torch.tensor([True]))
    assert values == [1.5, 2, True] and [type(v) for v in values] == [float, int, bool]


def test_evolve_is_replace():
    t = torch.zeros(1, **F64)
    state = ObjectiveState(x=t, f=t, g=t, step_norm=t, failure=torch.zeros(1, dtype=torch.long), f_initial=t)
    new = evolve(state, f=torch.ones(1, **F64))
    assert type(new) is ObjectiveState and new.f.item() == 1.0 and state.f.item() == 0.0 and new.x is state.x
    with pytest.raises(TypeError, match="radius"):
        evolve(state, radius=t)
