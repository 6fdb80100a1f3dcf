"""The lean path of ``minimize`` (one problem on the CPU) against the batched path: L-BFGS's
two-loop recursion in coordinates, and the curvature operator that reuses one gradient graph."""
import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.solvers.objective import quasi_newton
from torchnewton.solvers.objective.minimize import minimize
from torchnewton.solvers.objective.quasi_newton import _CoordinatePairs, _TensorPairs, _two_loop

F64 = dict(dtype=torch.float64)


def chained_rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


def test_two_loop_in_coordinates_equals_tensor_recursion():
    # k = 4 pairs in n = 7: the same recursion, two arithmetics, equal to round-off
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(1, 7, generator=gen, **F64)
    S, Y = torch.randn(1, 4, 7, generator=gen, **F64), torch.randn(1, 4, 7, generator=gen, **F64)
    Y = Y + 3 * S  # yᵀs > 0 for every pair
    rho = (1 / (S * Y).sum(-1))[0].tolist()
    tensors = _TensorPairs(g, S.unbind(1), Y.unbind(1))
    expected = _two_loop(tensors, [torch.tensor([r], **F64) for r in rho], torch.tensor([0.7], **F64))
    coordinates = _CoordinatePairs(g, S, Y)
    got = coordinates.vector(_two_loop(coordinates, rho, 0.7))
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-14)
    # and with no pairs held, r = γ∇f exactly
    empty = _CoordinatePairs(g, S[:, :0], Y[:, :0])
    assert torch.equal(empty.vector(_two_loop(empty, [], 1.0)), g)


def test_lbfgs_lean_tensor_backend_is_bitwise_the_batched_path(monkeypatch):
    # above the coordinate size the lean path runs the tensor recursion on the held pairs only:
    # the empty slots the batched path also visits contribute exact zeros, so bitwise the same
    monkeypatch.setattr(quasi_newton, "_COORDINATES_MAX_N", 0)
    x0 = torch.tensor([-1.2, 1.0, -1.2, 1.0, 0.5], **F64)
    one = minimize(chained_rosenbrock, x0, method="l-bfgs", options={"memory": 5}, record_history=True)
    many = minimize(chained_rosenbrock, torch.stack([x0, x0.flip(0)]), method="l-bfgs", options={"memory": 5},
                    batch=True, record_history=True)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
    assert torch.equal(one.x, many.x[0])
    assert [h["fun"] for h in one.history] == [float(h["fun"][0]) for h in many.history[:len(one.history)]]


def test_lbfgs_lean_coordinates_match_batched_to_round_off():
    x0 = torch.tensor([-1.2, 1.0, -1.2, 1.0, 0.5], **F64)
    one = minimize(chained_rosenbrock, x0, method="l-bfgs", options={"memory": 3})
    many = minimize(chained_rosenbrock, torch.stack([x0, x0.flip(0)]), method="l-bfgs", options={"memory": 3},
                    batch=True)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS
    assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-8)
    assert torch.allclose(one.x, torch.ones(5, **F64), atol=1e-6)


def test_lbfgs_lean_restart_after_failed_search():
    # NaN beyond x₀ > 0.5: searches along the quasi-Newton direction fail, the memory is dropped and
    # the member retries along −∇f; lean and batched agree on the status and the iterate
    rosenbrock = lambda x: (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2
    f = lambda x: torch.where(x[..., 0] > 0.5, torch.full_like(x[..., 0], float("nan")), rosenbrock(x))
    x0 = torch.tensor([-1.2, 1.0], **F64)
    one = minimize(f, x0, method="l-bfgs")
    many = minimize(f, torch.stack([x0, torch.tensor([2.0, -1.5], **F64)]), method="l-bfgs", batch=True)
    assert one.status == Status(int(many.status[0])) and one.nit == int(many.nit[0])
    assert torch.allclose(one.x, many.x[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("H", [[[1.0, 0.0], [0.0, -1.0]], [[1.0, 2.0], [2.0, 1.0]], [[4.0, 1.0], [1.0, 3.0]],
                               [[-3.0, 0.5], [0.5, -1e-8]]])
def test_shifted_cholesky_one_problem_is_bitwise_the_batch(H):
    from torchnewton.globalize.hessian_modification import shifted_cholesky
    H = torch.tensor([H], **F64)
    one, tau_one = shifted_cholesky(H)
    many, tau_many = shifted_cholesky(torch.cat([H, torch.eye(2, **F64)[None]]))
    assert torch.equal(tau_one, tau_many[:1]) and torch.equal(one.L, many.L[:1])
    assert torch.equal(one.matrix, many.matrix[:1]) and bool(one.ok) and bool(many.ok[0])
    assert torch.allclose(one.L @ one.L.mT, H + tau_one * torch.eye(2, **F64))


def test_hvp_linearized_products_equal_hvp_and_operator_reuses_one_graph():
    from torchnewton.derivatives import autodiff
    from torchnewton.solvers.objective.problem import ObjectiveProblem
    gen = torch.Generator().manual_seed(1)
    x, V = torch.randn(3, 4, generator=gen, **F64), torch.randn(5, 3, 4, generator=gen, **F64)
    calls = {"n": 0}

    def f(z):
        calls["n"] += 1
        return chained_rosenbrock(z)

    with torch.no_grad():
        product = autodiff.hvp_linearized(f, x)
        for v in V:
            assert torch.equal(product(v), autodiff.hvp(f, x, v)[1])
        problem = ObjectiveProblem(f, 4, curvature="hvp")
        calls["n"] = 0
        op = problem.operator(x)
        assert calls["n"] == 0  # nothing recorded before the first product
        dense = op.to_dense()
        op.matvec(V[0])
        assert calls["n"] == 1 and problem.counters.nhev == 5  # one evaluation of f, every product counted
    H = torch.stack([torch.autograd.functional.hessian(lambda z: chained_rosenbrock(z), xi) for xi in x])
    assert torch.allclose(dense, H, rtol=1e-12, atol=1e-10)


def test_user_hessian_called_once_per_operator():
    from torchnewton.solvers.objective.problem import ObjectiveProblem
    A = torch.tensor([[[3.0, 1.0], [1.0, 2.0]]], **F64)
    calls = {"n": 0}

    def hess(z):
        calls["n"] += 1
        return A

    problem = ObjectiveProblem(lambda z: 0.5 * (z * (A @ z.unsqueeze(-1)).squeeze(-1)).sum(-1), 2,
                               hess=hess, curvature="hvp")
    op = problem.operator(torch.zeros(1, 2, **F64))
    v = torch.tensor([[1.0, -1.0]], **F64)
    assert torch.equal(op.matvec(v), (A @ v.unsqueeze(-1)).squeeze(-1)) and torch.equal(op.matvec(2 * v), 2 * op.matvec(v))
    assert calls["n"] == 1 and problem.counters.nhev == 1
    res = minimize(lambda z: 0.5 * z @ A[0] @ z - z.sum(), torch.zeros(2, **F64), method="trust-ncg",
                   hess=lambda z: A[0])
    assert res.success and torch.allclose(res.x, torch.linalg.solve(A[0], torch.ones(2, **F64)))


def test_value_then_gradient_equals_gradient_and_counts_only_when_pulled():
    from torchnewton.derivatives import autodiff
    from torchnewton.solvers.objective.problem import ObjectiveProblem
    x = torch.tensor([[-1.2, 1.0, 0.3], [0.5, 0.2, -2.0]], **F64)
    with torch.no_grad():
        value, pull = autodiff.value_then_gradient(chained_rosenbrock, x)
        expected_value, expected_grad, expected_hessian = autodiff.hessian(chained_rosenbrock, x)
        assert torch.equal(value, expected_value) and torch.equal(pull().gradient(), expected_grad)
        # the gradient's own graph, kept: the same Hessian without evaluating f again
        graph = autodiff.value_then_gradient(chained_rosenbrock, x)[1](keep_graph=True)
        assert torch.equal(graph.gradient(), expected_grad) and torch.equal(graph.hessian(), expected_hessian)
        graph = autodiff.value_then_gradient(chained_rosenbrock, x)[1]()  # no graph kept: recorded on demand
        assert torch.equal(graph.hessian(), expected_hessian)
        calls = {"n": 0}

        def f(z):
            calls["n"] += 1
            return chained_rosenbrock(z)

        problem = ObjectiveProblem(f, 3)
        value, grad = problem.value_then_gradient(x)
        assert (problem.counters.nfev, problem.counters.njev, calls["n"]) == (1, 0, 1)
        assert torch.equal(grad(), expected_grad) and problem.counters.njev == 1
        assert torch.equal(problem.hessian(x), expected_hessian) and calls["n"] == 1  # the kept graph
        assert torch.equal(problem.hessian(x), expected_hessian) and calls["n"] == 2  # used once, then recorded
        assert torch.equal(problem.hessian(x.clone()), expected_hessian) and calls["n"] == 3


@pytest.mark.parametrize("schedule", ["backtracking", "aicn"])
def test_damped_newton_reuses_the_accepted_trial_graph_and_matches_the_batch(schedule):
    # the lean path keeps the accepted trial's gradient graph: the next Hessian evaluates f no
    # more, so every call of f is a counted evaluation but one (the Hessian at x0, whose gradient
    # came without a graph; re-recording at every iterate took nit more); the batch agrees
    calls = {"n": 0}

    def f(z):
        calls["n"] += 1
        return chained_rosenbrock(z)

    x0 = torch.tensor([-1.2, 1.0, 0.5], **F64)
    options = {"schedule": schedule, "smoothness": 1.0}
    one = minimize(f, x0, method="damped-newton", options=options, record_history=True)
    assert one.success and calls["n"] == int(one.nfev) + 1
    both = minimize(chained_rosenbrock, x0.repeat(2, 1), method="damped-newton", options=options, batch=True,
                    record_history=True)
    assert int(both.nit[0]) == int(one.nit)
    assert torch.allclose(both.x[0], one.x, rtol=0, atol=1e-12)
    fa = torch.tensor([h["fun"] for h in one.history], **F64)
    fb = torch.stack([h["fun"][0] for h in both.history])
    assert torch.allclose(fa, fb, rtol=1e-13, atol=1e-20)
