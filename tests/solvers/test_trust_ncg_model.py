"""Steihaug–Toint CG returns the model value of its step from its recurrences, and trust-ncg uses
it for the predicted decrease instead of one more Hessian-vector product per iteration.

Checked against the explicit m(s) = gᵀs + ½sᵀHs (and the explicit residual −g − Hs) for each way
the solve can end: inside the region, leaving it, and on negative curvature; on the lean path
(one problem) and the batched path, which agree bitwise in float64."""
import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.linear.krylov import TrustRegionSolution, cg
from torchnewton.solvers.objective.minimize import minimize

F64 = dict(dtype=torch.float64)


def problems(n: int, seed: int):
    """A well-conditioned SPD matrix, an indefinite one, and a gradient, each (1, ...)."""
    gen = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, n, generator=gen, **F64))[0]
    spd = Q @ torch.diag(torch.linspace(1.0, 10.0, n, **F64)) @ Q.T
    indefinite = Q @ torch.diag(torch.linspace(-2.0, 5.0, n, **F64)) @ Q.T
    g = torch.randn(1, n, generator=gen, **F64)
    return spd.unsqueeze(0), indefinite.unsqueeze(0), g


def explicit_model(H, g, s):
    return (g * s).sum(-1) + 0.5 * (s * (H @ s.unsqueeze(-1)).squeeze(-1)).sum(-1)


CASES = [  # (matrix, radius, how CG ends)
    ("spd", 1e3, "interior"),
    ("spd", 0.05, "boundary"),
    ("indefinite", 1e3, "negative"),
]


@pytest.mark.parametrize("n", [2, 7])
@pytest.mark.parametrize("matrix,radius,ending", CASES)
def test_model_and_residual_equal_explicit_products(n, matrix, radius, ending):
    spd, indefinite, g = problems(n, seed=n)
    H = spd if matrix == "spd" else indefinite
    if ending == "negative":  # a gradient along the negative eigenvector meets pᵀHp < 0 at once
        g = torch.linalg.eigh(H[0]).eigenvectors[:, 0].unsqueeze(0)
    with torch.no_grad():
        solution = cg(H, -g, rtol=1e-12, radius=torch.tensor([radius], **F64))
    assert isinstance(solution, TrustRegionSolution) and solution.model_value is not None  # the lean path
    s = solution.x
    interior = ending == "interior"
    assert bool(solution.on_boundary[0]) != interior
    assert int(solution.status[0]) == int(Status.NEGATIVE_CURVATURE if ending == "negative" else Status.SUCCESS)
    expected = explicit_model(H, g, s)
    assert expected.item() < 0
    assert abs(solution.model_value - expected.item()) <= 1e-12 * abs(expected.item())
    assert torch.allclose(solution.model, expected, rtol=1e-12, atol=0)
    residual = -g - (H @ s.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(solution.residual, residual, rtol=0, atol=1e-12 * float(g.norm()))
    if not interior:
        assert abs(float(s.norm()) - radius) <= 1e-12 * radius


def test_batched_model_equals_explicit_and_lean_path_bitwise():
    n = 6
    spd, indefinite, g = problems(n, seed=3)
    g_neg = torch.linalg.eigh(indefinite[0]).eigenvectors[:, 0].unsqueeze(0)
    H = torch.cat([spd, spd, indefinite, spd])
    G = torch.cat([g, g, g_neg, torch.zeros_like(g)])  # interior, boundary, negative curvature, zero
    radius = torch.tensor([1e3, 0.05, 1e3, 1.0], **F64)
    with torch.no_grad():
        batched = cg(H, -G, rtol=1e-12, radius=radius)
        singles = [cg(H[i:i + 1], -G[i:i + 1], rtol=1e-12, radius=radius[i:i + 1]) for i in range(4)]
    assert batched.model_value is None
    assert batched.on_boundary.tolist() == [False, True, True, False]
    expected = explicit_model(H, G, batched.x)
    assert torch.allclose(batched.model, expected, rtol=1e-12, atol=1e-300)
    assert batched.model[3] == 0
    residual = -G - (H @ batched.x.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(batched.residual, residual, rtol=0, atol=1e-12)
    for i, one in enumerate(singles):
        assert one.model_value is not None
        assert torch.equal(one.x[0], batched.x[i]) and one.model_value == batched.model[i].item()
        assert torch.equal(one.residual[0], batched.residual[i])


def chained_rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def test_trust_ncg_counts_only_the_cg_products(monkeypatch):
    """nhev is the number of products made inside CG: none is spent on the predicted decrease."""
    from torchnewton.solvers.objective import trust_region
    calls = {"n": 0, "in_cg": 0, "solves": 0}

    def hessp(x, v):
        calls["n"] += 1
        return torch.func.jvp(torch.func.grad(chained_rosenbrock), (x,), (v,))[1]

    def counted_cg(*args, **kwargs):
        before = calls["n"]
        solution = cg(*args, **kwargs)
        calls["in_cg"] += calls["n"] - before
        calls["solves"] += 1
        return solution

    monkeypatch.setattr(trust_region, "cg", counted_cg)
    x0 = torch.tensor([-1.2, 1.0, -1.2, 1.0, 0.5], **F64)
    res = minimize(chained_rosenbrock, x0, method="trust-ncg", hessp=hessp)
    assert res.success and calls["solves"] == res.nit
    assert res.nhev == calls["n"] == calls["in_cg"]
    plain = minimize(chained_rosenbrock, x0, method="trust-ncg")
    assert plain.nhev == res.nhev and torch.allclose(plain.x, res.x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("x0", [[-1.2, 1.0], [-1.2, 1.0, -1.2, 1.0, 0.5, -0.3, 0.8]])
def test_trust_ncg_lean_equals_batched_and_converges(x0):
    x0 = torch.tensor(x0, **F64)
    one = minimize(chained_rosenbrock, x0, method="trust-ncg", record_history=True)
    many = minimize(chained_rosenbrock, torch.stack([x0, x0]), method="trust-ncg", batch=True, record_history=True)
    assert one.success and one.nit == int(many.nit[0]) and torch.equal(one.x, many.x[0])
    assert float(torch.func.grad(chained_rosenbrock)(one.x).abs().max()) <= 1e-5
