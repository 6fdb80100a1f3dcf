"""KFAC: the Kronecker factors against per-sample gradients computed one sample at a time, the
preconditioned step against a dense Kronecker solve, exact Newton on a linear least-squares
layer, the Gauss–Newton targets against explicit Jacobians, the SGD part against torch.optim.SGD,
the torch.optim contract and bad input."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from torchnewton.optim.kfac import KFAC, damped_inverses

F64 = torch.float64


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).to(F64)


def _cnn(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(),
        torch.nn.Conv2d(3, 2, 2, stride=2, bias=False), torch.nn.Tanh(),
        torch.nn.Flatten(), torch.nn.Linear(2 * 2 * 2, 3)).to(F64)


def _cnn_same_padding(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, (2, 3), padding="same"), torch.nn.Tanh(),
        torch.nn.Conv2d(3, 2, 2, dilation=2, padding=1), torch.nn.Tanh(),
        torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3)).to(F64)


def _data(model, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 5) if isinstance(model[0], torch.nn.Linear) else (n, 2, 4, 4)
    return torch.randn(*shape, generator=g, dtype=F64), torch.randint(0, 3, (n,), generator=g)


def _explicit_patches(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The receptive fields of one sample (T, C·kh·kw), cut out position by position."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    if conv.padding == "same":  # total d (k - 1), the odd one out after (torch's rule)
        th, tw = dh * (kh - 1), dw * (kw - 1)
        xp = F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
    else:
        ph, pw = conv.padding
        xp = F.pad(x, (pw, pw, ph, ph))
    rows = []
    for i in range(0, xp.shape[1] - dh * (kh - 1), sh):
        for j in range(0, xp.shape[2] - dw * (kw - 1), sw):
            rows.append(xp[:, i:i + dh * (kh - 1) + 1:dh, j:j + dw * (kw - 1) + 1:dw].reshape(-1))
    return torch.stack(rows)


def _dense_factors(model, X, per_sample_loss):
    """A and G of every Linear/Conv2d from one forward/backward per sample (no KFAC machinery).

    A = (1/(nT)) Σ a aᵀ over samples and positions, G = (1/n) Σ g gᵀ with g = ∂ℓ_i/∂s_it.
    """
    layers = [m for m in model if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    n = X.shape[0]
    A = {m: 0.0 for m in layers}
    G = {m: 0.0 for m in layers}
    for i in range(n):
        inputs, outputs = {}, {}
        h = X[i:i + 1]
        for m in model:
            if m in A:
                inputs[m] = h[0]
                h = m(h)
                outputs[m] = h
            else:
                h = m(h)
        grads = torch.autograd.grad(per_sample_loss(h, i), [outputs[m] for m in layers])
        for m, g in zip(layers, grads):
            if isinstance(m, torch.nn.Conv2d):
                a = _explicit_patches(m, inputs[m])
                g = g[0].reshape(g.shape[1], -1).T
            else:
                a, g = inputs[m][None], g
            if m.bias is not None:
                a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=F64)], 1)
            A[m] = A[m] + a.T @ a / (a.shape[0] * n)
            G[m] = G[m] + g.T @ g / n
    return layers, A, G


def _cross_entropy_per_sample(y):
    return lambda out, i: F.cross_entropy(out, y[i:i + 1])


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on even kernels
@pytest.mark.parametrize("make", [_mlp, _cnn, _cnn_same_padding])
def test_factors_equal_per_sample_computation(make):
    model = make()
    X, y = _data(model)
    layers, A, G = _dense_factors(copy.deepcopy(model), X, _cross_entropy_per_sample(y))
    opt = KFAC(model, lr=0.1)
    F.cross_entropy(model(X), y).backward()
    opt.step()
    for ref, m in zip(layers, [m for m in model if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]):
        state = opt.state[m.weight]
        torch.testing.assert_close(state["A"], A[ref], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(state["G"], G[ref], rtol=1e-12, atol=1e-14)


def test_one_sample_kronecker_product_is_the_gradient_outer_product():
    """For one sample and a Linear layer the empirical Fisher block is exactly rank one: A ⊗ G."""
    model = _mlp()
    X, y = _data(model, n=1)
    opt = KFAC(model, lr=0.1)
    F.cross_entropy(model(X), y).backward()
    opt.step()
    for m in (model[0], model[2]):
        state = opt.state[m.weight]
        # The step has moved the weights; recompute the gradient the factors came from.
        grad = torch.cat([m.weight.grad, m.bias.grad[:, None]], 1).flatten()
        torch.testing.assert_close(torch.kron(state["G"], state["A"]), torch.outer(grad, grad),
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make", [_mlp, _cnn])
@pytest.mark.parametrize("inverse", ["eigh", "newton"])
def test_step_equals_dense_damped_kronecker_solve(make, inverse):
    damping = 3e-2
    model = make()
    X, y = _data(model)
    before = copy.deepcopy(model)
    opt = KFAC(model, lr=1.0, momentum=0.0, damping=damping, inverse=inverse)
    F.cross_entropy(model(X), y).backward()
    opt.step()
    for old, new in zip(before, model):
        if not isinstance(new, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        A, G = opt.state[new.weight]["A"], opt.state[new.weight]["G"]
        pi = ((A.trace() / A.shape[0]) / (G.trace() / G.shape[0])).sqrt()
        r = damping**0.5
        K = torch.kron(G + r / pi * torch.eye(G.shape[0], dtype=F64), A + pi * r * torch.eye(A.shape[0], dtype=F64))
        grad = new.weight.grad.reshape(new.weight.shape[0], -1)
        moved = (old.weight - new.weight).reshape(grad.shape)
        if new.bias is not None:
            grad = torch.cat([grad, new.bias.grad[:, None]], 1)
            moved = torch.cat([moved, (old.bias - new.bias)[:, None]], 1)
        expected = torch.linalg.solve(K, grad.flatten()).reshape(grad.shape)
        torch.testing.assert_close(moved, expected, rtol=1e-9, atol=1e-12)


def test_linear_least_squares_is_solved_in_one_gauss_newton_step():
    """One Linear layer under MSELoss: J = I, so A ⊗ G is the exact Hessian and K-FAC is Newton."""
    torch.manual_seed(0)
    X, Y = torch.randn(40, 6, dtype=F64), torch.randn(40, 3, dtype=F64)
    model = torch.nn.Linear(6, 3).to(F64)
    opt = KFAC(model, lr=1.0, momentum=0.0, damping=1e-20, curvature="gauss-newton", loss="mse")
    F.mse_loss(model(X), Y).backward()
    opt.step()
    Xa = torch.cat([X, torch.ones(40, 1, dtype=F64)], 1)
    solution = torch.linalg.lstsq(Xa, Y).solution.T
    torch.testing.assert_close(torch.cat([model.weight, model.bias[:, None]], 1), solution, rtol=1e-7, atol=1e-9)


def test_gauss_newton_mse_factor_is_the_exact_ggn():
    """G = (1/n) Σ_i J_iᵀ (2/C) J_i, J_i the Jacobian of the output of sample i wrt the layer output."""
    model = _mlp()
    X, _ = _data(model)
    reference = copy.deepcopy(model)
    opt = KFAC(model, lr=0.1, curvature="gauss-newton", loss="mse")
    F.mse_loss(model(X), torch.zeros(X.shape[0], 3, dtype=F64)).backward()
    opt.step()
    lin1, lin2 = reference[0], reference[2]
    G1 = G2 = 0.0
    for x in X:
        s1 = lin1(x)
        J1 = torch.autograd.functional.jacobian(lambda s: lin2(torch.tanh(s)), s1)
        G1 = G1 + J1.T @ J1 * (2 / 3) / X.shape[0]
        G2 = G2 + torch.eye(3, dtype=F64) * (2 / 3) / X.shape[0]
    torch.testing.assert_close(opt.state[model[0].weight]["G"], G1, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(opt.state[model[2].weight]["G"], G2, rtol=1e-12, atol=1e-15)


def test_monte_carlo_fisher_is_unbiased_for_the_cross_entropy_ggn():
    """Sampled targets: G → (1/n) Σ J_iᵀ (diag p_i - p_i p_iᵀ) J_i as the number of samples grows."""
    model = _mlp()
    X, y = _data(model, n=4)
    reference = copy.deepcopy(model)
    repeats = 5000
    big = X.repeat(repeats, 1)
    torch.manual_seed(3)
    opt = KFAC(model, lr=0.1, curvature="gauss-newton")
    F.cross_entropy(model(big), y.repeat(repeats)).backward()
    opt.step()
    lin1, lin2 = reference[0], reference[2]
    G1 = 0.0
    for x in X:
        s1 = lin1(x)
        J1 = torch.autograd.functional.jacobian(lambda s: lin2(torch.tanh(s)), s1)
        p = torch.softmax(lin2(torch.tanh(s1)), -1).detach()
        G1 = G1 + J1.T @ (torch.diag(p) - torch.outer(p, p)) @ J1 / X.shape[0]
    error = torch.linalg.matrix_norm(opt.state[model[0].weight]["G"] - G1) / torch.linalg.matrix_norm(G1)
    # 20000 draws: measured 0.7%; the empirical Fisher (true labels) is 21% away from the GGN here.
    assert error < 0.03


def test_in_place_activation_does_not_change_the_statistics():
    model = _mlp()
    X, y = _data(model)
    inplace = copy.deepcopy(model)
    inplace[1] = torch.nn.ReLU(inplace=True)
    model[1] = torch.nn.ReLU()
    for curvature in ("empirical-fisher", "gauss-newton"):
        states = []
        for m in (copy.deepcopy(model), copy.deepcopy(inplace)):
            opt = KFAC(m, lr=0.1, curvature=curvature)
            torch.manual_seed(5)
            F.cross_entropy(m(X), y).backward()
            opt.step()
            states.append(opt.state[m[0].weight]["G"])
        torch.testing.assert_close(states[0], states[1], rtol=0, atol=0)


def test_parameters_of_other_modules_follow_torch_sgd():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3)).to(F64)
    X, y = torch.randn(8, 5, dtype=F64), torch.randint(0, 3, (8,))
    sgd_model = copy.deepcopy(model)
    opt = KFAC(model, lr=0.05, momentum=0.8, weight_decay=1e-2)
    sgd = torch.optim.SGD(sgd_model[1].parameters(), lr=0.05, momentum=0.8, weight_decay=1e-2)
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        grads = [p.grad.clone() for p in model[1].parameters()]
        opt.step()
        for p, g in zip(sgd_model[1].parameters(), grads):
            p.grad = g
        sgd.step()
    for p, q in zip(model[1].parameters(), sgd_model[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-14, atol=1e-15)


def test_kl_clip_scales_the_step():
    model = _mlp()
    X, y = _data(model)
    free, clipped = copy.deepcopy(model), copy.deepcopy(model)
    lr, kappa = 0.5, 1e-4
    opts = [KFAC(free, lr=lr, momentum=0.0), KFAC(clipped, lr=lr, momentum=0.0, kl_clip=kappa)]
    for m, opt in zip((free, clipped), opts):
        F.cross_entropy(m(X), y).backward()
        opt.step()
    inner = 0.0
    for m_old, m_new in zip(model, free):
        for p0, p1 in zip(m_old.parameters(), m_new.parameters()):
            inner = inner + lr * ((p0 - p1) * p1.grad).sum()  # lr² <Δ, Γ> with p0 - p1 = lr Δ
    nu = min(1.0, (kappa / inner).sqrt().item())
    assert nu < 1
    for p0, p1, p2 in zip(model.parameters(), free.parameters(), clipped.parameters()):
        torch.testing.assert_close(p0 - p2, nu * (p0 - p1), rtol=1e-10, atol=1e-14)


def _train(model, opt, batches, closure_loss=F.cross_entropy):
    for X, y in batches:
        opt.zero_grad()
        closure_loss(model(X), y).backward()
        opt.step()


@pytest.mark.parametrize("curvature", ["empirical-fisher", "gauss-newton"])
def test_state_dict_round_trip_resumes_bit_identically(curvature):
    model = _cnn()
    batches = [_data(model, seed=s) for s in range(6)]
    options = dict(lr=0.05, damping=1e-2, factor_update_frequency=2, inverse_update_frequency=3,
                   curvature=curvature, kl_clip=1e-2)
    straight = copy.deepcopy(model)
    torch.manual_seed(11)
    _train(straight, KFAC(straight, **options), batches)

    resumed = copy.deepcopy(model)
    torch.manual_seed(11)
    first = KFAC(resumed, **options)
    _train(resumed, first, batches[:3])
    saved = copy.deepcopy(first.state_dict())
    first.remove_hooks()
    second = KFAC(resumed, **options)
    second.load_state_dict(saved)
    _train(resumed, second, batches[3:])
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_nan_loss_raises_and_leaves_state_untouched():
    model = _mlp()
    X, y = _data(model)
    opt = KFAC(model, lr=0.1)
    _train(model, opt, [(X, y)] * 2)
    params = [p.clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    bad = X.clone()
    bad[0, 0] = float("nan")
    opt.zero_grad()
    F.cross_entropy(model(bad), y).backward()
    with pytest.raises(FloatingPointError, match="state is unchanged"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters()))
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    for key, value in state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(after["state"][key][name], tensor)
    _train(model, opt, [(X, y)])  # recovers on the next finite batch
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_step_without_statistics_raises():
    model = _mlp()
    X, y = _data(model)
    opt = KFAC(model, lr=0.1)
    with torch.no_grad():
        model(X)
    loss = F.cross_entropy(model.eval()(X), y)
    loss.backward()
    with pytest.raises(RuntimeError, match="training mode"):
        opt.step()


def test_damped_inverses_split_the_damping():
    A = torch.diag(torch.tensor([1.0, 3.0], dtype=F64))
    G = torch.diag(torch.tensor([8.0, 0.0, 4.0], dtype=F64))
    Ai, Gi = damped_inverses(A, G, 0.25)
    pi = (2.0 / 4.0) ** 0.5
    torch.testing.assert_close(Ai.diagonal(), 1 / (A.diagonal() + pi * 0.5))
    torch.testing.assert_close(Gi.diagonal(), 1 / (G.diagonal() + 0.5 / pi))
    Ai_n, Gi_n = damped_inverses(A, G, 0.25, "newton")
    torch.testing.assert_close(Ai_n, Ai, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Gi_n, Gi, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("option, value", [
    ("lr", -1.0), ("momentum", 1.5), ("damping", 0.0), ("weight_decay", -0.1), ("factor_decay", 1.0),
    ("factor_update_frequency", 0), ("inverse_update_frequency", 2.5), ("curvature", "hessian"),
    ("loss", "hinge"), ("inverse", "cholesky"), ("kl_clip", 0.0),
])
def test_invalid_hyperparameters_name_the_argument(option, value):
    with pytest.raises(ValueError, match=option):
        KFAC(_mlp(), **{option: value})


def test_bad_models():
    with pytest.raises(TypeError, match="model"):
        KFAC([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="no trainable parameters"):
        KFAC(torch.nn.ReLU())
    model = _mlp()
    with pytest.raises(ValueError, match="same group"):
        KFAC(model, params=[{"params": [model[0].weight, model[2].weight, model[2].bias]},
                            {"params": [model[0].bias]}])


def test_gauss_newton_needs_a_matrix_output():
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Flatten(0)).to(F64)
    opt = KFAC(model, curvature="gauss-newton")
    with pytest.raises(ValueError, match="batch, outputs"):
        model(torch.randn(4, 5, dtype=F64))
    opt.remove_hooks()


def test_closure_step_equals_the_manual_step():
    model = _mlp()
    X, y = _data(model)
    manual = copy.deepcopy(model)
    opt = KFAC(model, lr=0.1, curvature="gauss-newton")
    manual_opt = KFAC(manual, lr=0.1, curvature="gauss-newton")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        return loss

    for _ in range(3):
        torch.manual_seed(7)
        loss = opt.step(closure)
        torch.manual_seed(7)
        manual_opt.zero_grad()
        expected = F.cross_entropy(manual(X), y)
        expected.backward()
        manual_opt.step()
        assert torch.equal(loss, expected)
    for p, q in zip(model.parameters(), manual.parameters()):
        assert torch.equal(p, q)
