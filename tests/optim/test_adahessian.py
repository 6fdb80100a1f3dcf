"""AdaHessian: the Hutchinson diagonal against the exact Hessian, the update against a hand
computation and against pytorch-optimizer, the torch.optim contract and bad input."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.func import functional_call

from torchnewton.optim.adahessian import AdaHessian
from torchnewton.optim.parameter_derivatives import hutchinson_sample

F64 = torch.float64


def small_mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()


def data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64)


def exact_hessian(model: torch.nn.Module, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(vector: torch.Tensor) -> torch.Tensor:
        parts = torch.split(vector, [math.prod(s) for s in shapes])
        params = {n: part.reshape(s) for n, part, s in zip(names, parts, shapes)}
        return (functional_call(model, params, (X,)) - Y).square().mean()

    return torch.autograd.functional.hessian(loss, flat)


def test_hutchinson_diagonal_is_unbiased():
    model = small_mlp()
    X, Y = data()
    H = exact_hessian(model, X, Y)
    params = list(model.parameters())
    loss = (model(X) - Y).square().mean()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    generator = torch.Generator().manual_seed(0)
    draws = 1000
    total = torch.zeros(H.shape[0], dtype=F64)
    for k in range(draws):
        sample = hutchinson_sample(grads, params, generator, retain_graph=k < draws - 1)
        total += torch.cat([s.reshape(-1) for s in sample])
    mean = total / draws
    # z_i (Hz)_i = H_ii + Σ_{j≠i} z_i z_j H_ij: its variance is Σ_{j≠i} H_ij²
    std = ((H.square().sum(1) - H.diagonal().square()) / draws).sqrt()
    assert (H.diagonal() - mean).abs().max() > 0  # a real estimate, not the exact diagonal
    assert torch.all((mean - H.diagonal()).abs() <= 5 * std + 1e-12)


def test_hutchinson_sample_is_exact_for_a_diagonal_hessian():
    w = torch.tensor([0.5, -1.0, 2.0], dtype=F64, requires_grad=True)
    c = torch.tensor([1.0, 3.0, 0.5], dtype=F64)
    (grad,) = torch.autograd.grad((c * w**4).sum(), w, create_graph=True)
    (sample,) = hutchinson_sample([grad], [w], torch.Generator().manual_seed(5))
    torch.testing.assert_close(sample, 12 * c * w.detach() ** 2, rtol=1e-15, atol=0)


def quadratic_closure(opt: AdaHessian, params: list[torch.Tensor], curvatures: list[torch.Tensor]):
    def closure():
        opt.zero_grad()
        loss = sum(0.5 * (a * p * p).sum() for p, a in zip(params, curvatures))
        loss.backward(create_graph=True)
        return loss
    return closure


@pytest.mark.parametrize("decoupled", [True, False])
def test_update_matches_a_hand_computation_on_a_quadratic(decoupled):
    # f = ½ Σ a θ²: g = a θ and the Hutchinson sample is exactly diag H = a
    theta0 = [0.7, -1.2]
    a = [2.0, 0.5]
    lr, (beta1, beta2), eps, wd, k = 0.1, (0.8, 0.9), 1e-3, 0.05, 0.5
    w = torch.tensor(theta0, dtype=F64, requires_grad=True)
    curv = torch.tensor(a, dtype=F64)
    opt = AdaHessian([w], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd, hessian_power=k,
                     decoupled_weight_decay=decoupled, seed=0)
    for _ in range(4):
        opt.step(quadratic_closure(opt, [w], [curv]))

    expected = []
    for theta, ai in zip(theta0, a):
        m = v = 0.0
        for t in range(1, 5):
            g, d = ai * theta, ai
            if not decoupled:
                g, d = g + wd * theta, d + wd
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * d * d
            denominator = (v / (1 - beta2**t)) ** (k / 2) + eps
            if decoupled:
                theta *= 1 - lr * wd
            theta -= lr * (m / (1 - beta1**t)) / denominator
        expected.append(theta)
    torch.testing.assert_close(w.detach(), torch.tensor(expected, dtype=F64), rtol=1e-14, atol=1e-15)


def test_conv_kernels_average_the_diagonal_over_kernel_positions():
    # a 4-d "kernel" with a known diagonal Hessian of both signs: D̄ is the mean of |a| over the
    # 3x3 positions
    torch.manual_seed(0)
    kernel = torch.randn(2, 3, 3, 3, dtype=F64, requires_grad=True)
    bias = torch.randn(2, dtype=F64, requires_grad=True)
    a_kernel = torch.randn(2, 3, 3, 3, dtype=F64)
    a_bias = torch.rand(2, dtype=F64) + 0.1
    start_kernel, start_bias = kernel.detach().clone(), bias.detach().clone()
    lr, (beta1, beta2), eps = 0.05, (0.9, 0.999), 1e-4
    opt = AdaHessian([kernel, bias], lr=lr, betas=(beta1, beta2), eps=eps, seed=0)
    opt.step(quadratic_closure(opt, [kernel, bias], [a_kernel, a_bias]))

    assert (a_kernel < 0).any() and (a_kernel > 0).any()
    averaged = a_kernel.abs().mean(dim=(2, 3), keepdim=True).expand_as(a_kernel)
    for start, a, diag, p in ((start_kernel, a_kernel, averaged, kernel), (start_bias, a_bias, a_bias, bias)):
        m = (1 - beta1) * a * start
        v = (1 - beta2) * diag * diag
        expected = start - lr * (m / (1 - beta1)) / ((v / (1 - beta2)).sqrt() + eps)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=1e-15)
    hessian_moment = opt.state[kernel]["exp_hessian_diag_sq"]
    assert torch.equal(hessian_moment, hessian_moment[:, :, :1, :1].expand_as(hessian_moment))


def test_agrees_with_pytorch_optimizer_adahessian():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    X, Y = data()
    ours_model, theirs_model = small_mlp(), small_mlp()
    ours = AdaHessian(ours_model.parameters(), lr=0.1, weight_decay=0.01, seed=7)
    theirs = pytorch_optimizer.AdaHessian(theirs_model.parameters(), lr=0.1, weight_decay=0.01, eps=1e-4,
                                          foreach=False)

    def closure(model, opt):
        def evaluate():
            opt.zero_grad()
            loss = (model(X) - Y).square().mean()
            loss.backward(create_graph=True)
            return loss
        return evaluate

    torch.manual_seed(7)  # pytorch-optimizer draws z from the global generator, we from our own
    for _ in range(15):
        ours.step(closure(ours_model, ours))
        theirs.step(closure(theirs_model, theirs))
    for p, q in zip(ours_model.parameters(), theirs_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-14, atol=1e-15)
    assert not torch.equal(next(ours_model.parameters()), next(small_mlp().parameters()))


def test_state_dict_round_trip_resumes_bit_identically_with_the_rng():
    X, Y = data()
    model = small_mlp()
    opt = AdaHessian(model.parameters(), lr=0.05, seed=3)

    def run(net, optimizer, steps):
        for _ in range(steps):
            def closure():
                optimizer.zero_grad()
                loss = (net(X) - Y).square().mean()
                loss.backward(create_graph=True)
                return loss
            optimizer.step(closure)

    run(model, opt, 3)
    saved_model, saved_state = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    run(model, opt, 4)

    resumed = small_mlp(seed=99)
    resumed.load_state_dict(saved_model)
    opt2 = AdaHessian(resumed.parameters(), lr=0.05, seed=12345)  # the saved generator state wins
    opt2.load_state_dict(saved_state)
    run(resumed, opt2, 4)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="rademacher_generator"):
        AdaHessian(resumed.parameters()).load_state_dict(torch.optim.Adam(resumed.parameters()).state_dict())


def test_gradients_without_graph_raise_and_change_nothing():
    model = small_mlp()
    X, Y = data()
    before = copy.deepcopy(model.state_dict())
    opt = AdaHessian(model.parameters(), seed=0)

    def plain_closure():
        opt.zero_grad()
        loss = (model(X) - Y).square().mean()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="create_graph=True"):
        opt.step(plain_closure)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    assert len(opt.state) == 0


def test_non_finite_gradient_raises_and_keeps_state_and_generator():
    w = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    opt = AdaHessian([w], seed=0)
    good = quadratic_closure(opt, [w], [torch.ones(2, dtype=F64)])
    opt.step(good)
    saved_state, saved_w = copy.deepcopy(opt.state[w]), w.detach().clone()
    saved_rng = opt.state_dict()["rademacher_generator"]

    def nan_closure():
        opt.zero_grad()
        loss = (w * w * torch.tensor([float("nan"), 1.0], dtype=F64)).sum()
        loss.backward(create_graph=True)
        return loss

    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step(nan_closure)
    assert torch.equal(w.detach(), saved_w)
    assert opt.state[w]["step"] == saved_state["step"]
    assert torch.equal(opt.state[w]["exp_avg"], saved_state["exp_avg"])
    assert torch.equal(opt.state_dict()["rademacher_generator"], saved_rng)


def test_bad_hyperparameters_and_inputs():
    w = torch.zeros(2, requires_grad=True)
    for kwargs, name in ((dict(lr=-1.0), "lr"), (dict(betas=(0.9, 1.0)), "betas"), (dict(eps=0.0), "eps"),
                         (dict(weight_decay=-0.1), "weight_decay"), (dict(hessian_power=1.5), "hessian_power"),
                         (dict(seed=-1), "seed")):
        with pytest.raises(ValueError, match=name):
            AdaHessian([w], **kwargs)
    for flag in ("decoupled_weight_decay", "spatial_averaging"):
        with pytest.raises(TypeError, match=flag):
            AdaHessian([w], **{flag: 1})
    with pytest.raises(ValueError, match="empty parameter list"):
        AdaHessian(torch.nn.ReLU().parameters())
    opt = AdaHessian([w], seed=0)
    assert opt.step() is None and len(opt.state) == 0  # no gradients: nothing to do, as torch.optim


def test_trains_a_small_cnn():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 4 * 4, 3)).double()
    X = torch.randn(32, 1, 6, 6, dtype=F64)
    labels = torch.randint(0, 3, (32,))
    opt = AdaHessian(model.parameters(), lr=0.1, seed=0)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), labels)
        loss.backward(create_graph=True)
        return loss

    def loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(model(X), labels))

    first = loss()
    for _ in range(30):
        opt.step(closure)
    assert all(not p.grad.requires_grad for p in model.parameters())  # the double-backward graph is freed
    assert loss() < 0.5 * first
