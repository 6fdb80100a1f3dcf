"""options={"compile": True} of the constrained solvers: the same iterates as the eager path.

Each case compiles f, c and their derivatives (seconds each): few, small cases, both methods,
batched and unbatched, autodiff and user derivatives.
"""
import shutil
import sys
from pathlib import Path

import pytest
import torch

from torchnewton.solvers.constrained.spec import NonlinearConstraint
from torchnewton.solvers.objective.minimize import minimize

sys.path.insert(0, str(Path(__file__).parent))
from hock_schittkowski import solve  # noqa: E402

DT = torch.float64
pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="no C++ compiler for Inductor's CPU kernels")


def _same(plain, fast, atol=1e-10):
    assert fast.compiled is True and fast.compile_seconds >= 0
    assert torch.equal(torch.as_tensor(plain.nit), torch.as_tensor(fast.nit))
    assert (plain.nfev, plain.njev, plain.nhev, plain.ncev) == (fast.nfev, fast.njev, fast.nhev, fast.ncev)
    torch.testing.assert_close(fast.x, plain.x, rtol=0, atol=atol)
    torch.testing.assert_close(fast.multipliers["bounds"], plain.multipliers["bounds"], rtol=0, atol=1e-8)
    assert torch.equal(torch.as_tensor(plain.status), torch.as_tensor(fast.status))
    assert bool(torch.as_tensor(fast.success).all())


@pytest.mark.parametrize("name, method", [("HS7", "sqp"), ("HS21", "interior-point")])
def test_unbatched_compiled_same_iterates(name, method):
    plain, optimum = solve(name, method)
    fast, _ = solve(name, method, options={"compile": True})
    _same(plain, fast)
    assert abs(float(fast.fun) - optimum) < 1e-6 * max(1.0, abs(optimum))
    assert "compiled" not in plain.extras


def _hs65(x):
    return (x[:, 0] - x[:, 1]) ** 2 + (x[:, 0] + x[:, 1] - 10) ** 2 / 9 + (x[:, 2] - 5) ** 2


def _hs65_grad(x):
    s = 2 * (x[:, 0] + x[:, 1] - 10) / 9
    return torch.stack([2 * (x[:, 0] - x[:, 1]) + s, -2 * (x[:, 0] - x[:, 1]) + s, 2 * (x[:, 2] - 5)], -1)


def _hs65_hess(x):
    H = torch.tensor([[2 + 2 / 9, -2 + 2 / 9, 0.0], [-2 + 2 / 9, 2 + 2 / 9, 0.0], [0.0, 0.0, 2.0]], dtype=x.dtype)
    return H.expand(x.shape[0], 3, 3)


@pytest.mark.parametrize("analytic", [False, True])
def test_batched_interior_point_compiled_same_iterates(analytic):
    """HS65 (inequality + bounds) for four radii 48·r: one batched interior-point solve."""
    radius = torch.tensor([48.0, 40.0, 30.0, 48.0], dtype=DT)
    x0 = torch.tensor([[-5.0, 5.0, 0.0], [-4.0, 4.0, 1.0], [-3.0, 3.0, 0.0], [-4.9, 4.6, 0.5]], dtype=DT)
    extra = {"jac": lambda x, r: -2 * x.unsqueeze(-2),
             "hess": lambda x, v, r: -2 * v[:, :1, None] * torch.eye(3, dtype=DT)} if analytic else {}
    con = NonlinearConstraint(lambda x, r: r - (x ** 2).sum(-1, keepdim=True), 0.0, float("inf"), **extra)
    bounds = (torch.tensor([-4.5, -4.5, -5.0], dtype=DT), torch.tensor([4.5, 4.5, 5.0], dtype=DT))
    given = {"jac": lambda x, r: _hs65_grad(x), "hess": lambda x, r: _hs65_hess(x)} if analytic else {}
    run = lambda options, r=radius.unsqueeze(-1): minimize(
        lambda x, r: _hs65(x), x0, method="interior-point", constraints=con, bounds=bounds, args=(r,), batch=True,
        options=options, **given)
    # the objective is a new lambda per call here: each compiled call compiles (its Result says so)
    plain, fast = run(None), run({"compile": True})
    _same(plain, fast)
    assert fast.compile_seconds > 0
    # the interior point's own arithmetic is fused too (ip_arithmetic, the KKT assembly, the termination
    # verdict): well under half the eager path's dispatched operations (counted, deterministic)
    from torchnewton.bench.suites.constrained_batch import operations_per_iteration
    assert operations_per_iteration(lambda: run({"compile": True})) < 0.5 * operations_per_iteration(lambda: run(None))
    torch.testing.assert_close(fast.fun[0], torch.tensor(0.9535288567, dtype=DT), rtol=0, atol=1e-6)
    assert float(fast.constraint_violation.max()) < 1e-8


def _hs7_batched(x, e):
    return torch.log1p(x[:, 0] ** 2) - x[:, 1]


def test_batched_sqp_compiled_second_solve_compiles_nothing():
    """HS7 with right-hand sides 4e: a second solve with the same functions, ``args`` and shapes (a
    new x0) reuses the compiled graphs."""
    con = {"type": "eq", "fun": lambda x, e: (1 + x[:, :1] ** 2) ** 2 + x[:, 1:] ** 2 - 4 * e}
    e = torch.tensor([[1.0], [0.95], [1.05]], dtype=DT)
    seconds = []
    for x0 in (torch.tensor([[2.0, 2.0], [1.5, 2.5], [2.2, 1.8]], dtype=DT),
               torch.tensor([[1.0, 1.0], [0.5, 2.0], [-1.0, 2.5]], dtype=DT)):
        plain = minimize(_hs7_batched, x0, constraints=con, args=(e,), batch=True)
        fast = minimize(_hs7_batched, x0, constraints=con, args=(e,), batch=True, options={"compile": True})
        _same(plain, fast)
        torch.testing.assert_close(fast.x[:, 1], (4 * e[:, 0] - 1).sqrt(), rtol=0, atol=1e-7)
        seconds.append(fast.compile_seconds)
    assert seconds[0] > 0 and seconds[1] == 0


def test_bad_compile_option():
    with pytest.raises(ValueError, match=r"options\['compile'\]"):
        solve("HS7", options={"compile": "yes"})


def test_batch_bench_compiled_rows():
    """The bench's compiled rows: same iterates as its eager analytic run, and the figures it reports."""
    from torchnewton.bench.suites import constrained_batch

    row, compiled_rows, figures, _ = constrained_batch.compare(constrained_batch.HS7, 8, 0, 1, ("analytic",))
    numbers = figures["compiled"]["analytic"]
    assert numbers["compiled"] and numbers["iterations_equal"] and numbers["max_distance_to_eager"] <= 1e-10
    assert numbers["compile_seconds"] >= 0 and numbers["ops_per_batched_iteration"] > 0
    # the solver's own arithmetic is fused too (sqp_arithmetic, the KKT assembly, the termination
    # verdict): fewer than half the eager path's dispatched operations per batched iteration
    assert numbers["ops_per_batched_iteration"] < 0.4 * figures["ops_per_batched_iteration_analytic"]
    assert numbers["goal_10x_met"] == (numbers["speedup"] >= 10)
    assert len(compiled_rows) == 1 and compiled_rows[0][:2] == ["HS7", "analytic"]
