"""Muon and the shared pipeline: agreement with torch.optim.Muon and with exact arithmetic,
the AdamW groups against torch.optim.AdamW, the torch.optim contract, and bad input."""
from __future__ import annotations

import copy

import pytest
import torch

from torchnewton.linalg.methods import POLAR_EXPRESS_SAFETY, schedule
from torchnewton.optim import Muon, param_groups
from torchnewton.optim.scaling import adjust_lr_factor

F64 = torch.float64
SHAPES = [(32, 64), (64, 32), (48, 48), (16, 128), (96, 24)]


def _polynomial_on_singular_values(M: torch.Tensor, coeffs, scale: float) -> torch.Tensor:
    """The fixed-step iteration in exact arithmetic: the polynomials applied to M's singular values."""
    U, S, Vh = torch.linalg.svd(M.to(F64), full_matrices=False)
    s = S / (scale * torch.linalg.matrix_norm(M.to(F64)))
    for c in coeffs:
        s = sum(ck * s ** (2 * k + 1) for k, ck in enumerate(c))
    return (U * s) @ Vh


def _gradients(shape, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(steps)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nesterov", [True, False])
def test_updates_match_torch_optim_muon(shape, nesterov):
    """Same quintic, 5 steps, match_rms_adamw, momentum, Nesterov and weight decay, 20 steps.

    torch.optim.Muon always iterates in bfloat16 (unit roundoff 2^-8 = 3.9e-3); five quintic steps
    accumulate a relative error of about 2-3% per update in the measured runs (ours in float32 is
    exact to ~1e-6, see the next test), so the tolerance is 6% per update and 1e-3 on the
    parameters after 20 steps of lr 0.01.
    """
    torch.manual_seed(0)
    reference = torch.nn.Parameter(torch.randn(*shape))
    ours = torch.nn.Parameter(reference.detach().clone())
    theirs_opt = torch.optim.Muon([reference], lr=0.01, weight_decay=0.1, momentum=0.95,
                                  nesterov=nesterov, adjust_lr_fn="match_rms_adamw")
    ours_opt = Muon([ours], lr=0.01, weight_decay=0.1, momentum=0.95, nesterov=nesterov,
                    method="quintic", steps=5, adjust_lr="match_rms_adamw")
    for G in _gradients(shape, 20):
        before_ref, before_ours = reference.detach().clone(), ours.detach().clone()
        reference.grad, ours.grad = G.clone(), G.clone()
        theirs_opt.step()
        ours_opt.step()
        update_ref = reference.detach() - before_ref * (1 - 0.01 * 0.1)
        update_ours = ours.detach() - before_ours * (1 - 0.01 * 0.1)
        assert (update_ours - update_ref).norm() <= 0.06 * update_ref.norm()
    assert (ours - reference).abs().max() <= 1e-3


@pytest.mark.parametrize("method", ["quintic", "polar-express", "newton-schulz"])
@pytest.mark.parametrize("adjust_lr", ["original", "match_rms_adamw", "spectral"])
def test_pipeline_matches_exact_arithmetic(method, adjust_lr):
    """Momentum, transform, scaling and weight decay against a float64 reference with SVD."""
    shape, lr, wd, beta = (24, 40), 0.05, 0.2, 0.9
    steps = 5 if method != "newton-schulz" else 7
    coeffs = schedule(method, steps, 1e-3)
    scale = POLAR_EXPRESS_SAFETY if method == "polar-express" else 1.0
    p = torch.nn.Parameter(torch.randn(*shape, dtype=F64))
    expected = p.detach().clone()
    buffer = torch.zeros(shape, dtype=F64)
    opt = Muon([p], lr=lr, weight_decay=wd, momentum=beta, nesterov=True, method=method,
               steps=steps, adjust_lr=adjust_lr, dtype=F64)
    for G in _gradients(shape, 6):
        G = G.to(F64)
        p.grad = G.clone()
        opt.step()
        buffer = beta * buffer + (1 - beta) * G
        direction = (1 - beta) * G + beta * buffer
        O = _polynomial_on_singular_values(direction, coeffs, scale)
        expected = expected * (1 - lr * wd) - lr * adjust_lr_factor(adjust_lr, *shape) * O
        assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-10)


def test_float32_update_is_exact_to_single_precision():
    shape = (64, 96)
    p = torch.nn.Parameter(torch.zeros(shape))
    opt = Muon([p], lr=1.0, momentum=0.0, nesterov=False, method="quintic", steps=5)
    G = torch.randn(*shape)
    p.grad = G
    opt.step()
    exact = -_polynomial_on_singular_values(G, schedule("quintic", 5, 1e-3), 1.0)
    assert (p.detach().to(F64) - exact).norm() <= 1e-5 * exact.norm()


def test_adjust_lr_factors():
    assert adjust_lr_factor("original", 256, 64) == pytest.approx(2.0)
    assert adjust_lr_factor("original", 64, 256) == pytest.approx(1.0)
    assert adjust_lr_factor("match_rms_adamw", 64, 400) == pytest.approx(4.0)
    assert adjust_lr_factor("spectral", 64, 256) == pytest.approx(0.5)


def test_per_head_orthogonalizes_each_row_block():
    heads, rows, cols = 4, 8, 32
    G = torch.randn(heads * rows, cols, dtype=F64)
    p = torch.nn.Parameter(torch.zeros_like(G))
    opt = Muon([p], lr=1.0, momentum=0.0, nesterov=False, per_head=heads, dtype=F64, adjust_lr="spectral",
               method="newton-schulz", steps=40)
    p.grad = G.clone()
    opt.step()
    factor = adjust_lr_factor("spectral", rows, cols)
    for h in range(heads):
        block = -p.detach()[h * rows:(h + 1) * rows] / factor
        assert torch.allclose(block @ block.T, torch.eye(rows, dtype=F64), atol=1e-8)
        U, _, Vh = torch.linalg.svd(G[h * rows:(h + 1) * rows], full_matrices=False)
        assert torch.allclose(block, U @ Vh, atol=1e-8)


def test_conv_kernels_are_flattened_to_matrices():
    kernel = torch.randn(16, 3, 3, 3, dtype=F64)
    conv = torch.nn.Parameter(kernel.clone())
    flat = torch.nn.Parameter(kernel.reshape(16, 27).clone())
    grads = _gradients((16, 3, 3, 3), 3)
    opt_conv = Muon([conv], lr=0.1, dtype=F64)
    opt_flat = Muon([flat], lr=0.1, dtype=F64)
    for G in grads:
        conv.grad, flat.grad = G.to(F64), G.to(F64).reshape(16, 27)
        opt_conv.step()
        opt_flat.step()
    assert torch.allclose(conv.detach().reshape(16, 27), flat.detach(), rtol=0, atol=1e-12)


def test_same_shaped_matrices_are_batched_without_changing_results():
    a, b, c = (torch.nn.Parameter(torch.randn(20, 30, dtype=F64)) for _ in range(3))
    singles = [torch.nn.Parameter(t.detach().clone()) for t in (a, b, c)]
    together = Muon([a, b, c], lr=0.1, dtype=F64)
    apart = [Muon([s], lr=0.1, dtype=F64) for s in singles]
    for G in _gradients((3, 20, 30), 3):
        for p, s, g in zip((a, b, c), singles, G.to(F64)):
            p.grad, s.grad = g.clone(), g.clone()
        together.step()
        for o in apart:
            o.step()
    for p, s in zip((a, b, c), singles):
        assert torch.allclose(p, s, rtol=0, atol=1e-13)


def test_adamw_groups_match_torch_adamw():
    torch.manual_seed(0)
    vector = torch.nn.Parameter(torch.randn(17))
    twin = torch.nn.Parameter(vector.detach().clone())
    ours = Muon([{"params": [vector], "use_muon": False}], adamw_lr=3e-3, adamw_betas=(0.8, 0.99),
                adamw_eps=1e-6, adamw_wd=0.05)
    theirs = torch.optim.AdamW([twin], lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, foreach=False)
    for G in _gradients((17,), 25):
        vector.grad, twin.grad = G.clone(), G.clone()
        ours.step()
        theirs.step()
    assert torch.allclose(vector, twin, rtol=0, atol=1e-7)


def test_one_object_splits_a_whole_model():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = Muon(model.parameters(), lr=0.02, adamw_lr=1e-3, adamw_wd=0.01)
    matrix_group, adamw_group = opt.param_groups
    assert matrix_group["use_muon"] and all(p.ndim == 2 for p in matrix_group["params"])
    assert not adamw_group["use_muon"] and all(p.ndim == 1 for p in adamw_group["params"])
    assert adamw_group["lr"] == 1e-3 and adamw_group["weight_decay"] == 0.01
    assert matrix_group["lr"] == 0.02


def test_param_groups_sends_embeddings_head_norms_and_biases_to_adamw():
    class TinyLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 16)
            self.hidden = torch.nn.Linear(16, 16)
            self.norm = torch.nn.LayerNorm(16)
            self.head = torch.nn.Linear(16, 50, bias=False)
            self.frozen = torch.nn.Linear(16, 16)
            self.frozen.requires_grad_(False)

    model = TinyLM()
    groups = param_groups(model, output_head="head")
    muon_ids = {id(p) for p in groups[0]["params"]}
    adamw_ids = {id(p) for p in groups[1]["params"]}
    assert muon_ids == {id(model.hidden.weight)}
    assert adamw_ids == {id(model.embed.weight), id(model.hidden.bias), id(model.norm.weight),
                         id(model.norm.bias), id(model.head.weight)}
    tied = torch.nn.Sequential(torch.nn.Embedding(10, 6), torch.nn.Linear(6, 6), torch.nn.Linear(6, 10, bias=False))
    tied[2].weight = tied[0].weight
    groups = param_groups(tied)
    assert sum(len(g["params"]) for g in groups) == 3
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(torch.nn.ReLU())


def test_param_groups_auto_head_beside_convolutions_and_alone():
    # a CNN whose only Linear is its classifier: the head goes to AdamW, the kernels to Muon
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 10))
    muon, adamw = param_groups(cnn)
    assert [p.shape for p in muon["params"]] == [torch.Size([4, 1, 3, 3])]
    assert {id(p) for p in adamw["params"]} == {id(cnn[0].bias), id(cnn[3].weight), id(cnn[3].bias)}
    # a model whose only matrix is one Linear keeps it for the matrix optimizer
    (alone, biases) = param_groups(torch.nn.Sequential(torch.nn.Linear(5, 3)))
    assert alone["use_muon"] and [p.shape for p in alone["params"]] == [torch.Size([3, 5])]
    # an embedding does not count as a hidden matrix
    lm = torch.nn.Sequential(torch.nn.Embedding(10, 6), torch.nn.Linear(6, 10))
    assert [p.shape for p in param_groups(lm)[0]["params"]] == [torch.Size([10, 6])]


def _train(opt, model, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 6, generator=g)
        y = torch.sin(x.sum(-1, keepdim=True))
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _model():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                               torch.nn.Tanh(), torch.nn.Linear(32, 1))


def test_training_decreases_the_loss():
    model = _model()
    losses = _train(Muon(param_groups(model), lr=0.02, adamw_lr=3e-3), model, 150)
    assert sum(losses[-10:]) / 10 < 0.2 * sum(losses[:10]) / 10


def test_state_dict_round_trip_resumes_bit_identically():
    model = _model()
    opt = Muon(param_groups(model), lr=0.02, weight_decay=0.01, adamw_lr=3e-3)
    _train(opt, model, 10)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _train(opt, model, 10, seed=1)

    resumed = _model()
    resumed.load_state_dict(saved_model)
    resumed_opt = Muon(param_groups(resumed), lr=0.02, weight_decay=0.01, adamw_lr=3e-3)
    resumed_opt.load_state_dict(saved_opt)
    _train(resumed_opt, resumed, 10, seed=1)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_lr_schedulers_apply_to_both_kinds_of_group():
    model = _model()
    opt = Muon(param_groups(model), lr=0.02, adamw_lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(4):
        _train(opt, model, 1)
        scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 2.5e-4])


def test_closure_is_evaluated_and_returned():
    model = _model()
    opt = Muon(param_groups(model))
    x = torch.randn(8, 6)

    def closure():
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    assert torch.isfinite(opt.step(closure))


def test_zero_gradient_gives_zero_update():
    p = torch.nn.Parameter(torch.randn(8, 8))
    before = p.detach().clone()
    opt = Muon([p])
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("kwargs, name", [
    ({"lr": -1.0}, "lr"), ({"momentum": 1.0}, "momentum"), ({"weight_decay": -0.1}, "weight_decay"),
    ({"adjust_lr": "sqrt"}, "adjust_lr"), ({"method": "svd"}, "method"), ({"steps": 0}, "steps"),
    ({"per_head": 0}, "per_head"), ({"adamw_betas": (0.9, 1.2)}, "adamw_betas"),
    ({"adamw_eps": 0.0}, "adamw_eps"), ({"lr": float("nan")}, "lr"),
])
def test_invalid_hyperparameters_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Muon([torch.nn.Parameter(torch.randn(4, 4))], **kwargs)


def test_invalid_types_and_parameters():
    with pytest.raises(TypeError, match="nesterov"):
        Muon([torch.nn.Parameter(torch.randn(4, 4))], nesterov=1)
    with pytest.raises(TypeError, match="dtype"):
        Muon([torch.nn.Parameter(torch.randn(4, 4))], dtype=torch.int32)
    with pytest.raises(ValueError, match="use_muon=False"):
        Muon([{"params": [torch.nn.Parameter(torch.randn(4))], "use_muon": True}])
    with pytest.raises(ValueError, match="per_head"):
        Muon([torch.nn.Parameter(torch.randn(6, 4))], per_head=4)
    with pytest.raises(ValueError, match="empty"):
        Muon([])


def test_sparse_and_complex_parameters_are_refused():
    p = torch.nn.Parameter(torch.randn(4, 4))
    opt = Muon([p])
    p.grad = torch.randn(4, 4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    c = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.complex64))
    opt = Muon([c])
    c.grad = torch.randn(4, 4, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="complex"):
        opt.step()
