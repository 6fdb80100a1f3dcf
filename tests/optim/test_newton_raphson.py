"""NewtonRaphson: Newton / Gauss–Newton steps against dense references and scipy, the damping rule,
lazy reuse, the torch.optim contract and bad input."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares

from torchnewton.bench.suites.curvature_dsp import KNEE_DB, compressor_and_filter, make_problem
from torchnewton.optim.newton_raphson import NewtonRaphson

F64 = torch.float64
T = torch.linspace(0.0, 2.0, 40, dtype=F64)


def decay_model(theta: torch.Tensor) -> torch.Tensor:
    """y = a·exp(−b t) + c·sin(d t): a small nonlinear least-squares model with 4 parameters."""
    a, b, c, d = theta.unbind()
    return a * torch.exp(-b * T) + c * torch.sin(d * T)


TRUE = torch.tensor([2.0, 1.3, 0.5, 3.0], dtype=F64)
START = torch.tensor([1.5, 1.0, 0.8, 2.6], dtype=F64)


def fit(target: torch.Tensor, curvature: str, steps: int, **options) -> tuple[torch.Tensor, list[float], NewtonRaphson]:
    theta = START.clone().requires_grad_(True)
    opt = NewtonRaphson([theta], curvature=curvature, **options)
    losses = []
    for _ in range(steps):
        if curvature == "gauss-newton":
            opt.step(lambda: decay_model(theta) - target)
        else:
            opt.step(lambda: 0.5 * (decay_model(theta) - target).square().sum())
        losses.append(opt.state[theta]["loss"])
    return theta.detach(), losses, opt


@pytest.mark.parametrize("curvature", ["gauss-newton", "hessian"])
def test_zero_residual_fit_converges_quadratically(curvature):
    target = decay_model(TRUE)
    scale = 0.5 * float(target.square().sum())
    theta, losses, _ = fit(target, curvature, 12, damping=0.0)
    relative = [loss / scale for loss in losses]
    assert relative[-1] < 1e-20
    assert torch.allclose(theta, TRUE, rtol=0, atol=1e-10)
    # quadratic convergence: the loss is the squared error, so once in the fast phase every step
    # at least squares the relative loss (up to a constant), until round-off
    fast = [r for r in relative if 1e-28 < r < 1e-3]
    assert len(fast) >= 3
    for before, after in zip(fast, fast[1:]):
        assert math.log10(after) <= 1.7 * math.log10(before)


@pytest.mark.parametrize("curvature", ["gauss-newton", "hessian"])
def test_noisy_fit_matches_scipy_least_squares(curvature):
    noise = 0.05 * torch.randn(T.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    target = decay_model(TRUE) + noise
    theta, losses, opt = fit(target, curvature, 30)

    def residuals(values: np.ndarray) -> np.ndarray:
        return (decay_model(torch.from_numpy(values)) - target).numpy()

    reference = least_squares(residuals, START.numpy(), method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert reference.success
    np.testing.assert_allclose(theta.numpy(), reference.x, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(losses[-1], reference.cost, rtol=1e-12)


def test_first_steps_solve_the_damped_dense_systems():
    target = decay_model(TRUE)

    def loss_of(values: torch.Tensor) -> torch.Tensor:
        return 0.5 * (decay_model(values) - target).square().sum()

    H = torch.autograd.functional.hessian(loss_of, START)
    g = torch.autograd.functional.jacobian(loss_of, START)
    J = torch.autograd.functional.jacobian(lambda v: decay_model(v) - target, START)
    eye = torch.eye(4, dtype=F64)
    tau = 1e-2

    theta, _, opt = fit(target, "gauss-newton", 1, damping=tau, lr=0.5)
    state = opt.state[opt.param_groups[0]["params"][0]]
    lam = tau * float((J.T @ J).diagonal().max())
    assert state["accepted"] and state["trials"] == 1
    assert state["damping"] == pytest.approx(lam, rel=1e-14)
    torch.testing.assert_close(state["curvature"], J.T @ J, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(theta, START - 0.5 * torch.linalg.solve(J.T @ J + lam * eye, g), rtol=1e-12, atol=1e-13)

    # the Hessian is indefinite at START: λ must exceed −λ_min(H) before Cholesky succeeds
    theta, _, opt = fit(target, "hessian", 1, damping=tau, lr=0.5)
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert float(torch.linalg.eigvalsh(H)[0]) < 0 < float(torch.linalg.eigvalsh(H)[0]) + state["damping"]
    assert state["accepted"]
    torch.testing.assert_close(state["curvature"], H, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(theta, START - 0.5 * torch.linalg.solve(H + state["damping"] * eye, g),
                               rtol=1e-12, atol=1e-13)


def pseudo_huber_closure(x: torch.Tensor):
    return lambda: torch.sqrt(1 + x * x).sum()


def test_rejected_step_restores_parameters_and_raises_damping():
    # Newton from x = 2 on sqrt(1 + x²) jumps to −x³ = −8, where the loss is larger
    x = torch.tensor([2.0], dtype=F64, requires_grad=True)
    opt = NewtonRaphson([x], damping=1e-3, max_trials=1)
    loss = opt.step(pseudo_huber_closure(x))
    state = opt.state[x]
    hessian = (1 + 4.0) ** -1.5
    assert not state["accepted"] and state["gain_ratio"] <= 0
    assert torch.equal(x.detach(), torch.tensor([2.0], dtype=F64))
    assert state["damping"] == pytest.approx(2 * 1e-3 * hessian, rel=1e-12)
    assert state["damping_growth"] == 4.0
    assert float(loss) == pytest.approx(math.sqrt(5.0))

    y = torch.tensor([2.0], dtype=F64, requires_grad=True)
    opt = NewtonRaphson([y], damping=1e-3)
    opt.step(pseudo_huber_closure(y))
    state = opt.state[y]
    assert state["accepted"] and state["trials"] > 1 and state["gain_ratio"] > 0
    assert state["damping"] > 1e-3 * hessian
    assert state["loss"] < math.sqrt(5.0)


def test_undamped_newton_bootstraps_damping_after_a_rejection():
    x = torch.tensor([2.0], dtype=F64, requires_grad=True)
    opt = NewtonRaphson([x], damping=0.0, max_trials=1)
    opt.step(pseudo_huber_closure(x))
    assert opt.state[x]["damping"] == pytest.approx(1e-3 * 5.0**-1.5, rel=1e-12)


def test_nan_at_trial_point_is_a_rejection_and_nan_at_current_point_an_error():
    # the loss is NaN beyond x = 1.5, the undamped Newton step goes to x ≈ 5
    x = torch.tensor([0.0], dtype=F64, requires_grad=True)

    def closure():
        return (0.5 * (x - 5) ** 2 - 1e-3 * torch.log(1.5 - x)).sum()

    opt = NewtonRaphson([x], damping=0.0)
    before = float(closure())
    opt.step(closure)
    state = opt.state[x]
    assert state["accepted"] and state["trials"] > 1 and state["damping"] > 0
    assert torch.isfinite(x).all() and float(x) < 1.5 and state["loss"] < before

    def refuses_large_x():
        if float(x) > 1.0:
            raise ValueError("outside the model's domain")
        return closure()

    x.data.fill_(0.0)
    opt = NewtonRaphson([x], damping=0.0)
    with pytest.raises(ValueError, match="domain"):
        opt.step(refuses_large_x)
    assert float(x) == 0.0  # the trial point is undone when the closure fails there

    z = torch.tensor([2.0], dtype=F64, requires_grad=True)
    opt = NewtonRaphson([z])
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        opt.step(lambda: (0.5 * (z - 5) ** 2 - 1e-3 * torch.log(1.5 - z)).sum())
    assert float(z) == 2.0 and "curvature" not in opt.state[z]


def test_lazy_reuses_the_factorization_with_fresh_gradients():
    target = decay_model(TRUE)
    theta = START.clone().requires_grad_(True)
    opt = NewtonRaphson([theta], curvature="gauss-newton", lazy=3)

    def closure():
        return decay_model(theta) - target

    opt.step(closure)
    state = opt.state[theta]
    factor = state["cholesky"].clone()
    x1 = theta.detach().clone()
    J1 = torch.autograd.functional.jacobian(lambda v: decay_model(v) - target, x1)
    g1 = J1.T @ (decay_model(x1) - target)
    opt.step(closure)
    assert state["accepted"] and state["curvature_evaluations"] == 1
    expected = x1 - torch.cholesky_solve(g1.unsqueeze(-1), factor).squeeze(-1)
    torch.testing.assert_close(theta.detach(), expected, rtol=1e-13, atol=1e-14)

    for _ in range(28):
        opt.step(closure)
    assert torch.allclose(theta.detach(), TRUE, atol=1e-10)
    assert state["curvature_evaluations"] < state["step"]


@pytest.mark.parametrize("one_closure", [False, True])
def test_state_dict_round_trip_resumes_bit_identically(one_closure):
    # one_closure: the original optimizer carries its last trial output across the save point,
    # the resumed one (which has no such cache) evaluates the closure again
    target = decay_model(TRUE) + 0.01 * torch.cos(7 * T)

    def closure_for(theta):
        return lambda: decay_model(theta) - target

    def run(theta, opt, closure, steps):
        for _ in range(steps):
            opt.step(closure if one_closure else closure_for(theta))

    theta = START.clone().requires_grad_(True)
    closure = closure_for(theta)
    opt = NewtonRaphson([theta], curvature="gauss-newton", lazy=2, damping=0.1)
    run(theta, opt, closure, 3)
    saved_theta, saved_state = theta.detach().clone(), copy.deepcopy(opt.state_dict())
    run(theta, opt, closure, 3)

    resumed = saved_theta.clone().requires_grad_(True)
    opt2 = NewtonRaphson([resumed], curvature="gauss-newton", lazy=2, damping=0.1)
    opt2.load_state_dict(saved_state)
    run(resumed, opt2, closure_for(resumed), 3)
    assert torch.equal(resumed.detach(), theta.detach())
    assert opt2.state[resumed]["damping"] == opt.state[theta]["damping"]


@pytest.mark.parametrize("samples", [20, 8])  # 40 residuals > 32 parameters (columns), 16 < 32 (rows)
def test_curvature_of_a_module_equals_dense_autograd_with_and_without_vmap(samples):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    X, Y = torch.randn(samples, 3, dtype=F64), torch.randn(samples, 2, dtype=F64)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def residuals(vector):
        parts = torch.split(vector, [math.prod(shape) for shape in shapes])
        params = {n: part.reshape(shape) for n, part, shape in zip(names, parts, shapes)}
        return (torch.func.functional_call(model, params, (X,)) - Y).reshape(-1)

    J = torch.autograd.functional.jacobian(residuals, flat)
    H = torch.autograd.functional.hessian(lambda v: 0.5 * residuals(v).square().sum(), flat)
    for vectorize in (False, True):
        for curvature, expected in (("hessian", H), ("gauss-newton", J.T @ J)):
            net = copy.deepcopy(model)
            opt = NewtonRaphson(net.parameters(), curvature=curvature, vectorize=vectorize)
            if curvature == "hessian":
                opt.step(lambda: 0.5 * (net(X) - Y).square().sum())
            else:
                opt.step(lambda: net(X) - Y)
            torch.testing.assert_close(opt.state[next(net.parameters())]["curvature"], expected,
                                       rtol=1e-12, atol=1e-12)


def test_frozen_parameters_are_left_out_and_closure_may_call_backward_with_graph():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1).double()
    net.bias.requires_grad_(False)
    X = torch.randn(30, 3, dtype=F64)
    Y = X @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=F64) + net.bias.detach()
    bias = net.bias.detach().clone()
    opt = NewtonRaphson(net.parameters())

    def closure():
        opt.zero_grad()
        loss = 0.5 * (net(X) - Y).square().sum()
        loss.backward(create_graph=True)
        return loss

    for _ in range(20):
        opt.step(closure)
    assert torch.equal(net.bias.detach(), bias)
    torch.testing.assert_close(net.weight.detach(), torch.tensor([[1.0, -2.0, 0.5]], dtype=F64), rtol=0, atol=1e-10)


def test_bad_input_raises_clear_errors():
    w = torch.zeros(2, dtype=F64, requires_grad=True)
    opt = NewtonRaphson([w])
    with pytest.raises(TypeError, match="closure"):
        opt.step()
    with pytest.raises(TypeError, match="torch.Tensor"):
        opt.step(lambda: 1.0)
    with pytest.raises(TypeError, match="floating"):
        opt.step(lambda: torch.tensor(1))
    with pytest.raises(ValueError, match="scalar loss"):
        opt.step(lambda: w * 2)
    with pytest.raises(RuntimeError, match="no autograd graph"):
        opt.step(lambda: (w * w).sum().detach())

    def plain_backward():
        loss = (w ** 3).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="create_graph=True"):
        opt.step(plain_backward)
    with pytest.raises(ValueError, match="empty parameter list"):
        NewtonRaphson(torch.nn.ReLU().parameters())
    with pytest.raises(ValueError, match="one parameter group"):
        NewtonRaphson([{"params": [w]}, {"params": [torch.zeros(1, requires_grad=True)]}])
    with pytest.raises(TypeError, match="real floating-point"):
        NewtonRaphson([torch.zeros(2, dtype=torch.int64)])
    with pytest.raises(ValueError, match="one dtype"):
        NewtonRaphson([w, torch.zeros(1, requires_grad=True)])
    for kwargs, name in ((dict(lr=0.0), "lr"), (dict(lr=1.5), "lr"), (dict(curvature="fisher"), "curvature"),
                         (dict(damping=-1.0), "damping"), (dict(lazy=0), "lazy"), (dict(max_trials=0), "max_trials")):
        with pytest.raises(ValueError, match=name):
            NewtonRaphson([w], **kwargs)
    with pytest.raises(TypeError, match="vectorize"):
        NewtonRaphson([w], vectorize=1)
    assert torch.equal(w.detach(), torch.zeros(2, dtype=F64)) and "curvature" not in opt.state[w]


def _fit_to_1e_10(problem) -> tuple[torch.Tensor, dict]:
    """Gauss–Newton steps on a benchmark DSP problem until ½‖r‖² ≤ 1e-10 × its scale (≤ 40)."""
    theta = problem.start.clone().requires_grad_(True)
    opt = NewtonRaphson([theta], curvature="gauss-newton")
    for _ in range(40):
        opt.step(lambda: problem.residuals(theta))
        if opt.state[theta]["loss"] <= 1e-10 * problem.scale:
            break
    return theta.detach(), opt.state[theta]


def test_gauss_newton_fits_the_benchmark_dsp_model():
    problem = make_problem(seed=0, samples=2048)
    _, state = _fit_to_1e_10(problem)
    assert state["loss"] <= 1e-10 * problem.scale
    assert state["step"] <= 25


def test_vectorized_curvature_runs_through_the_scan_with_the_same_iterates():
    # the vmapped backward (is_grads_batched) reaches the scan with batched tensors that have no
    # storage: they take the associative torch scan instead of the native kernel
    problem = make_problem(seed=1, samples=512)
    fits = []
    for vectorize in (False, True):
        theta = problem.start.clone().requires_grad_(True)
        opt = NewtonRaphson([theta], curvature="gauss-newton", vectorize=vectorize)
        for _ in range(6):
            opt.step(lambda: problem.residuals(theta))
        fits.append((theta.detach().clone(), opt.state[theta]["loss"]))
    torch.testing.assert_close(fits[1][0], fits[0][0], rtol=1e-9, atol=1e-12)
    assert abs(fits[1][1] - fits[0][1]) <= 1e-9 * fits[0][1] + 1e-15


def test_dsp_model_scans_equal_a_sequential_loop():
    problem = make_problem(seed=3, samples=300)
    theta, x = problem.start, problem.x
    threshold, log_ratio_minus_1, attack, release, makeup, tone = theta.tolist()
    slope = 1 / (1 + math.exp(-log_ratio_minus_1))
    a_att, a_rel, a = (1 / (1 + math.exp(-v)) for v in (attack, release, tone))
    s = y = 0.0
    previous_level = None
    expected = []
    for sample in x.tolist():
        level = 10 * math.log10(sample * sample + 1e-8)
        gain = -slope * KNEE_DB * math.log1p(math.exp((level - threshold) / KNEE_DB))
        alpha = a_att if previous_level is None or level > previous_level else a_rel
        s = alpha * s + (1 - alpha) * gain
        y = a * y + (1 - a) * sample * 10 ** ((s + makeup) / 20)
        expected.append(y)
        previous_level = level
    np.testing.assert_allclose(compressor_and_filter(theta, x).numpy(), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("curvature", ["gauss-newton", "hessian"])
def test_accepted_trial_output_is_reused_with_the_same_iterates(curvature):
    target = decay_model(TRUE) + 0.01 * torch.cos(7 * T)
    calls = [0]

    def make(theta):
        def closure():
            calls[0] += 1
            r = decay_model(theta) - target
            return r if curvature == "gauss-newton" else 0.5 * r.square().sum()
        return closure

    fresh = START.clone().requires_grad_(True)
    opt_fresh = NewtonRaphson([fresh], curvature=curvature)
    for _ in range(8):
        opt_fresh.step(make(fresh))  # a new closure object each step: never reused
    calls_fresh, calls[0] = calls[0], 0
    same = START.clone().requires_grad_(True)
    opt_same = NewtonRaphson([same], curvature=curvature)
    closure = make(same)
    accepted = []
    for _ in range(8):
        opt_same.step(closure)
        accepted.append(opt_same.state[same]["accepted"])
    assert torch.equal(same.detach(), fresh.detach())
    assert opt_same.state[same]["damping"] == opt_fresh.state[fresh]["damping"]
    # an accepted step hands its trial evaluation to the next step (a step without a trial,
    # g = 0 to working precision, hands nothing)
    assert sum(accepted[:-1]) >= 5 and calls[0] == calls_fresh - sum(accepted[:-1])
    assert opt_same.state[same]["closure_evaluations"] == calls[0]


def test_a_parameter_written_between_steps_is_evaluated_again():
    target = decay_model(TRUE)
    theta = START.clone().requires_grad_(True)
    opt = NewtonRaphson([theta], curvature="gauss-newton")

    def closure():
        return decay_model(theta) - target

    opt.step(closure)
    with torch.no_grad():
        theta.copy_(START)  # back to the start: the carried trial point is stale
    loss = opt.step(closure)
    assert float(loss) == pytest.approx(0.5 * float((decay_model(START) - target).square().sum()), rel=1e-15)
    assert opt.state[theta]["closure_evaluations"] == 4


def test_two_band_benchmark_model_is_fitted():
    from torchnewton.bench.suites.curvature_dsp import make_multiband_problem

    problem = make_multiband_problem(seed=0, samples=1024)
    assert problem.start.numel() == 12
    theta, state = _fit_to_1e_10(problem)
    assert state["loss"] <= 1e-10 * problem.scale
    torch.testing.assert_close(theta, problem.hidden, rtol=0, atol=1e-4)
