"""Levenberg–Marquardt's own step for one problem on the CPU (``_step_one``: x, the column norms
and the per-member scalars kept on the host) against the batched step on NIST StRD problems: the
same iterate sequence to round-off, the same counts and statuses, and a state whose tensors say
what the host numbers say.
"""
import math

import pytest
import torch

from torchnewton.core.status import Status
from torchnewton.solvers.residual.least_squares import least_squares

s2mpj = pytest.importorskip("torchnewton.bench.problems.s2mpj")
TOLERANCES = {"ftol": 1e-12, "xtol": 1e-12, "gtol": 1e-12}


def _batched(fn):
    """A one-problem callable (n,) → (...) as a batch callable (B, n) → (B, ...)."""
    return lambda X: torch.stack([fn(x) for x in X])


def _solve_one(problem, x0):
    iterates = []
    result = least_squares(problem.residual, x0, jac=problem.residual_jacobian,
                           callback=lambda state: iterates.append(state.x[0].clone()), **TOLERANCES)
    return result, torch.stack(iterates)


def _solve_batch(problem, x0):
    # the same start twice: a batch of two takes the batched step
    iterates = []
    result = least_squares(_batched(problem.residual), torch.stack([x0, x0]), batch=True,
                           jac=_batched(problem.residual_jacobian),
                           callback=lambda state: iterates.append(state.x[0].clone()), **TOLERANCES)
    return result, torch.stack(iterates)


@pytest.mark.parametrize("name", ["MISRA1A", "BOXBOD", "RAT42", "THURBER"])
@pytest.mark.parametrize("start", [0, 1])
def test_lean_iterates_equal_the_batched_iterates_on_nist(name, start):
    problem = s2mpj.load_problem(name)
    x0 = problem.starts[start].clone()
    one, lean_iterates = _solve_one(problem, x0)
    many, batch_iterates = _solve_batch(problem, x0)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS
    assert one.nit == int(many.nit[0]) == len(lean_iterates)
    # the evaluations are counted per call of the batch callable, once per iteration for both
    assert one.nfev == int(many.nfev) and one.njev == int(many.njev)
    # the batch continues (frozen) until both members are done: compare the lean path's iterations
    batch_iterates = batch_iterates[:len(lean_iterates)]
    assert torch.allclose(lean_iterates, batch_iterates, rtol=1e-9, atol=0)
    # both solve the problem: 6 significant digits of NIST's certified values
    certified = problem.x_star
    assert float(((one.x - certified).abs() / certified.abs()).max()) < 1e-6
    assert torch.allclose(one.cost, many.cost[0], rtol=1e-10, atol=0)


def test_lean_state_tensors_agree_with_the_host_numbers():
    # the state a callback sees: cost, Jᵀ F, the column norms and the Jacobian all at the same x
    problem = s2mpj.load_problem("MGH09")
    checked = []

    def callback(state):
        F, J = state.F[0], state.J[0]
        assert float(state.cost) == pytest.approx(0.5 * float(F @ F), rel=1e-14)
        # Jᵀ F cancels near the solution: round-off relative to ‖J‖‖F‖
        assert torch.allclose(state.grad[0], J.T @ F, rtol=0, atol=1e-14 * float(J.norm() * F.norm()))
        assert torch.equal(state.scale, torch.linalg.vector_norm(state.J, dim=-2))
        assert torch.allclose(F, problem.residual(state.x[0]), rtol=0, atol=0)
        assert math.isfinite(float(state.step_norm)) and float(state.step_norm) > 0
        assert bool((state.scaling >= state.scale).all())  # D, the running maximum of the column norms
        checked.append(state.x[0].clone())

    result = least_squares(problem.residual, problem.starts[0].clone(), jac=problem.residual_jacobian,
                           callback=callback, **TOLERANCES)
    assert result.success and len(checked) == int(result.nit) > 5
    assert torch.equal(checked[-1], result.x)


def test_lean_nonfinite_jacobian_and_budget_statuses():
    # a residual that stays finite while its Jacobian turns NaN past b₂ > 0.5 (a new point there
    # ends NONFINITE), and a budget that ends a run early, against the batch
    t = torch.linspace(0, 3, 20, dtype=torch.float64)
    y = 2.0 * torch.exp(-0.8 * t)
    r = lambda b: b[..., :1] * torch.exp(-b[..., 1:2] * t) - y

    def jac(b):
        e = torch.exp(-b[1] * t)
        J = torch.stack([e, -b[0] * t * e], dim=-1)
        return torch.where(b[1] > 0.5, torch.full_like(J, float("nan")), J)

    x0 = torch.tensor([1.0, 0.1], dtype=torch.float64)
    one = least_squares(r, x0, jac=jac, **TOLERANCES)
    many = least_squares(r, torch.stack([x0, x0]), jac=_batched(jac), batch=True, **TOLERANCES)
    assert one.status == Status.NONFINITE == Status(int(many.status[0])) and one.nit == int(many.nit[0]) == 1
    assert torch.equal(one.x, many.x[0]) and float(one.x[1]) > 0.5
    good = lambda b: torch.stack([torch.exp(-b[1] * t), -b[0] * t * torch.exp(-b[1] * t)], dim=-1)
    one = least_squares(r, x0, jac=good, max_iter=3, **TOLERANCES)
    many = least_squares(r, torch.stack([x0, x0]), jac=_batched(good), batch=True, max_iter=3, **TOLERANCES)
    assert one.status == Status.MAX_ITER == Status(int(many.status[0])) and one.nit == 3
    assert torch.allclose(one.x, many.x[0], rtol=1e-12, atol=0)
    # from the solution itself the radius collapses: both stop on the same rule
    at_solution = torch.tensor([2.0, 0.8], dtype=torch.float64)
    one = least_squares(r, at_solution, jac=good, **TOLERANCES)
    many = least_squares(r, torch.stack([at_solution, at_solution]), jac=_batched(good), batch=True, **TOLERANCES)
    assert one.status == Status(int(many.status[0])) == Status.SUCCESS and one.nit == int(many.nit[0])
