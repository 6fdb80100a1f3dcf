"""SpectralClip (SPECTRA) around AdamW, SGD, torch.optim.Muon and the Muon here: every step equals
the inner step with its update direction clipped by a float64 SVD; the torch.optim contract."""
from __future__ import annotations

import doctest
import io
import warnings

import pytest
import torch

import torchnewton.optim.spectral_clip as spectral_clip_module
from torchnewton.optim import Muon
from torchnewton.optim.spectral_clip import SpectralClip

F64 = torch.float64


def svd_clip(A: torch.Tensor, c: float) -> torch.Tensor:
    U, S, Vh = torch.linalg.svd(A.to(F64), full_matrices=False)
    return (U * S.clamp(max=c)[..., None, :]) @ Vh


def make_params(seed: int = 0, dtype=F64) -> list[torch.nn.Parameter]:
    """Two same-shaped matrices, a tall one, a conv kernel and a bias."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(12, 8), (12, 8), (20, 6), (4, 3, 3, 3), (8,)]
    return [torch.nn.Parameter(torch.randn(*s, generator=g, dtype=F64).to(dtype)) for s in shapes]


def set_gradients(params, step: int) -> None:
    g = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=F64).to(p.dtype) * (1 + 10 * (step % 2))


def expected_step(params, inner_step, *, c: float, lr: float, decay: float):
    """Run a plain copy of the inner optimizer from the same parameters, gradients and state, then
    clip its update direction U = (decay X_k - X_{k+1}) / lr by SVD."""
    before = [p.detach().clone() for p in params]
    after = inner_step()
    expected, norms = [], []
    for p0, p1 in zip(before, after):
        if p0.ndim < 2:
            expected.append(p1)
            continue
        U = (decay * p0 - p1) / lr
        norms.append(float(torch.linalg.matrix_norm(U.reshape(U.shape[0], -1), ord=2)))
        expected.append(decay * p0 - lr * svd_clip(U.reshape(U.shape[0], -1), c).reshape(p0.shape))
    return expected, norms


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_update_equals_the_inner_update_clipped_by_svd(kind):
    lr, wd, c = 0.05, 0.1, 2.0
    params, twins = make_params(), make_params()

    def inner(ps):
        if kind == "adamw":
            return torch.optim.AdamW(ps, lr=lr, weight_decay=wd)
        return torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=wd)

    opt, reference = SpectralClip(inner(params), max_sv=c), inner(twins)
    # AdamW's weight decay is decoupled (taken out of U); SGD's is in the gradient (clipped with it)
    decay = 1 - lr * wd if kind == "adamw" else 1.0
    clipped_any = False
    for step in range(6):
        set_gradients(params, step)
        set_gradients(twins, step)
        with torch.no_grad():
            for t, p in zip(twins, params):
                t.copy_(p)

        def reference_step():
            reference.step()
            return [t.detach().clone() for t in twins]

        expected, norms = expected_step(twins, reference_step, c=c, lr=lr, decay=decay)
        clipped_any |= max(norms) > 1.5 * c
        opt.step()
        for p, e in zip(params, expected):
            assert torch.allclose(p.detach(), e, rtol=0, atol=1e-11), p.shape
        assert torch.equal(params[-1].detach(), twins[-1].detach())  # the bias: the inner step, bit for bit
    assert clipped_any


def test_wrapping_torch_optim_muon():
    lr, wd, c = 0.02, 0.1, 0.5
    g = torch.Generator().manual_seed(1)
    start = [torch.randn(10, 6, generator=g), torch.randn(6, 10, generator=g)]
    params = [torch.nn.Parameter(s.clone()) for s in start]
    twins = [torch.nn.Parameter(s.clone()) for s in start]
    opt = SpectralClip(torch.optim.Muon(params, lr=lr, weight_decay=wd), max_sv=c)
    reference = torch.optim.Muon(twins, lr=lr, weight_decay=wd)
    for step in range(3):
        set_gradients(params, step)
        set_gradients(twins, step)
        with torch.no_grad():
            for t, p in zip(twins, params):
                t.copy_(p)

        def reference_step():
            reference.step()
            return [t.detach().clone() for t in twins]

        expected, norms = expected_step(twins, reference_step, c=c, lr=lr, decay=1 - lr * wd)
        assert min(norms) > 1.5 * c  # Muon's updates have all singular values near 1 (x sqrt(10/6))
        opt.step()
        for p, e in zip(params, expected):
            assert torch.allclose(p.detach().double(), e.double(), rtol=0, atol=2e-6)


def test_wrapping_the_muon_here_detects_its_decoupled_weight_decay():
    lr, wd = 0.02, 0.1
    g = torch.Generator().manual_seed(2)
    start = torch.randn(16, 8, generator=g, dtype=F64)
    p = torch.nn.Parameter(start.clone())
    twin = torch.nn.Parameter(start.clone())
    opt = SpectralClip(Muon([p], lr=lr, weight_decay=wd), max_sv=0.5)
    reference = Muon([twin], lr=lr, weight_decay=wd)
    set_gradients([p], 0)
    set_gradients([twin], 0)

    def reference_step():
        reference.step()
        return [twin.detach().clone()]

    expected, norms = expected_step([twin], reference_step, c=0.5, lr=lr, decay=1 - lr * wd)
    assert norms[0] > 0.8
    opt.step()
    assert torch.allclose(p.detach(), expected[0], rtol=0, atol=1e-6)


def test_a_threshold_above_every_update_reproduces_the_inner_optimizer():
    params, twins = make_params(dtype=torch.float32), make_params(dtype=torch.float32)
    opt = SpectralClip(torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1), max_sv=1e6)
    reference = torch.optim.AdamW(twins, lr=1e-3, weight_decay=0.1)
    for step in range(5):
        set_gradients(params, step)
        set_gradients(twins, step)
        opt.step()
        reference.step()
    for p, t in zip(params, twins):
        assert torch.allclose(p, t, rtol=0, atol=1e-6)


def test_pre_clipping_clips_the_gradients_before_the_inner_step():
    lr, c = 0.1, 0.3
    params = make_params()
    opt = SpectralClip(torch.optim.SGD(params, lr=lr), max_sv=None, pre_max_sv=c)
    set_gradients(params, 1)
    grads = [p.grad.clone() for p in params]
    before = [p.detach().clone() for p in params]
    opt.step()
    for p, g, b in zip(params, grads, before):
        if p.ndim < 2:
            assert torch.equal(p.grad, g)
            continue
        clipped = svd_clip(g.reshape(g.shape[0], -1), c).reshape(g.shape)
        assert float(torch.linalg.matrix_norm(g.reshape(g.shape[0], -1), ord=2)) > 2 * c
        assert torch.allclose(p.grad, clipped, rtol=0, atol=1e-11)
        assert torch.allclose(p.detach(), b - lr * clipped, rtol=0, atol=1e-11)


def test_pre_clipping_applies_to_the_gradients_a_closure_computes():
    c = 0.2
    g = torch.Generator().manual_seed(3)
    W = torch.nn.Parameter(torch.randn(6, 5, generator=g, dtype=F64))
    x = torch.randn(30, 6, generator=g, dtype=F64)
    opt = SpectralClip(torch.optim.SGD([W], lr=0.1), max_sv=None, pre_max_sv=c)
    before = W.detach().clone()

    def closure():
        opt.zero_grad()
        loss = (x @ W).square().sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.allclose(loss, (x @ before).square().sum())
    raw = 2 * x.T @ (x @ before)
    assert torch.allclose(W.grad, svd_clip(raw, c), rtol=0, atol=1e-10)
    assert torch.allclose(W.detach(), before - 0.1 * svd_clip(raw, c), rtol=0, atol=1e-10)


def test_parameters_without_gradient_and_zero_lr_are_untouched():
    params = make_params()
    opt = SpectralClip(torch.optim.AdamW(params, lr=0.1, weight_decay=0.5), max_sv=0.1)
    set_gradients(params, 0)
    params[1].grad = None
    frozen = params[1].detach().clone()
    opt.step()
    assert torch.equal(params[1].detach(), frozen)
    for group in opt.param_groups:
        group["lr"] = 0.0
    before = [p.detach().clone() for p in params]
    set_gradients(params, 1)
    opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def train(opt: SpectralClip, params, steps: range, scheduler=None) -> None:
    for step in steps:
        set_gradients(params, step)
        opt.step()
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()


def test_state_dict_round_trip_resumes_bit_identically():
    def build(params):
        return SpectralClip(torch.optim.AdamW(params, lr=0.05, weight_decay=0.1), max_sv=3.0, pre_max_sv=5.0)

    params = make_params(dtype=torch.float32)
    opt = build(params)
    opt.param_groups[0]["max_sv"] = 1.5  # a changed threshold must survive the round trip
    train(opt, params, range(8))

    resumed = make_params(dtype=torch.float32)
    opt_a = build(resumed)
    opt_a.param_groups[0]["max_sv"] = 1.5
    train(opt_a, resumed, range(4))
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in resumed], "opt": opt_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    fresh = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
    opt_b = build(fresh)
    opt_b.load_state_dict(saved["opt"])
    assert opt_b.param_groups[0]["max_sv"] == 1.5
    assert opt_b.state is opt_b.optimizer.state and opt_b.param_groups is opt_b.optimizer.param_groups
    train(opt_b, fresh, range(4, 8))
    for p, q in zip(params, fresh):
        assert torch.equal(p.detach(), q.detach())


def test_lr_scheduler_drives_the_wrapper_and_the_clipping_uses_the_scheduled_lr():
    params = make_params()
    opt = SpectralClip(torch.optim.SGD(params, lr=0.1), max_sv=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()" warning
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        train(opt, params, range(4), scheduler)
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert scheduler.get_last_lr() == [pytest.approx(0.025)]
    set_gradients(params, 4)
    W, G = params[0].detach().clone(), params[0].grad.clone()
    opt.step()
    assert torch.allclose(params[0].detach(), W - 0.025 * svd_clip(G, 1.0), rtol=0, atol=1e-11)


def test_add_param_group_gets_the_thresholds_and_is_clipped():
    params = make_params()
    opt = SpectralClip(torch.optim.SGD(params[:2], lr=0.1), max_sv=0.5)
    extra = torch.nn.Parameter(torch.randn(7, 9, dtype=F64))
    opt.add_param_group({"params": [extra], "lr": 0.2})
    assert opt.optimizer.param_groups[-1]["max_sv"] == 0.5 and len(opt.param_groups) == 2
    extra.grad = 10 * torch.randn(7, 9, dtype=F64)
    before, grad = extra.detach().clone(), extra.grad.clone()
    opt.step()
    assert torch.allclose(extra.detach(), before - 0.2 * svd_clip(grad, 0.5), rtol=0, atol=1e-11)
    with pytest.raises(ValueError, match="max_sv"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2, 2))], "max_sv": -1.0})


def test_same_shaped_matrices_share_one_batched_call(monkeypatch):
    calls = []
    original = spectral_clip_module.clip_singular_values

    def counting(M, c, **kwargs):
        calls.append(tuple(M.shape))
        return original(M, c, **kwargs)

    monkeypatch.setattr(spectral_clip_module, "clip_singular_values", counting)
    params = make_params()
    opt = SpectralClip(torch.optim.SGD(params, lr=0.1), max_sv=1.0)
    set_gradients(params, 0)
    opt.step()
    assert sorted(calls) == [(1, 4, 27), (1, 20, 6), (2, 12, 8)]


def test_zero_grad_and_state_are_the_inner_optimizers():
    params = make_params()
    inner = torch.optim.AdamW(params, lr=0.1)
    opt = SpectralClip(inner, max_sv=1.0)
    set_gradients(params, 0)
    opt.step()
    assert opt.state is inner.state and len(inner.state) == len(params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_bad_input():
    params = make_params()
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        SpectralClip(params, max_sv=1.0)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        SpectralClip(torch.nn.Linear(2, 2), max_sv=1.0)
    inner = torch.optim.SGD(params, lr=0.1)
    for bad in [0.0, -1.0, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="max_sv"):
            SpectralClip(inner, max_sv=bad)
        with pytest.raises(ValueError, match="pre_max_sv"):
            SpectralClip(inner, max_sv=1.0, pre_max_sv=bad)
    with pytest.raises(TypeError, match="max_sv"):
        SpectralClip(inner, max_sv="1")
    with pytest.raises(ValueError, match="method"):
        SpectralClip(inner, max_sv=1.0, method="quintic")
    with pytest.raises(ValueError, match="steps"):
        SpectralClip(inner, max_sv=1.0, steps=0)
    with pytest.raises(TypeError, match="dtype"):
        SpectralClip(inner, max_sv=1.0, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="decoupled_weight_decay"):
        SpectralClip(inner, max_sv=1.0, decoupled_weight_decay="yes")
    opt = SpectralClip(inner, max_sv=1.0)
    opt.param_groups[0]["max_sv"] = -2.0
    with pytest.raises(ValueError, match="max_sv"):
        opt.step()


def test_doctest():
    torch.manual_seed(0)
    assert doctest.testmod(spectral_clip_module, raise_on_error=True).attempted > 0
