"""Shampoo: the preconditioned gradient against eigh-computed inverse 4th roots, grafting against
torch.optim.Adam, blocking against separate per-block optimizers, agreement with
pytorch-optimizer's Shampoo where the definitions coincide, the torch.optim contract, bad input."""
from __future__ import annotations

import copy

import pytest
import torch
from resume_helpers import assert_resume_is_bit_identical
from pytorch_optimizer import Shampoo as PeerShampoo

from torchnewton.optim.shampoo import Shampoo

F64 = torch.float64


def _gradients(shape, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=F64) for _ in range(steps)]


def _run(param, opt, grads):
    history = []
    for g in grads:
        before = param.detach().clone()
        param.grad = g.clone()
        opt.step()
        history.append(before - param.detach())
    return history


def _inverse_fourth_root(M, eps):
    w, Q = torch.linalg.eigh(M + eps * torch.eye(M.shape[0], dtype=F64))
    return (Q * w.pow(-0.25)) @ Q.T


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 2, 2)])
@pytest.mark.parametrize("root_method", ["newton", "eigh"])
@pytest.mark.parametrize("shampoo_beta", [1.0, 0.9])
def test_step_is_the_two_sided_inverse_fourth_root(shape, root_method, shampoo_beta):
    """grafting="none", β1 = 0: W <- W - lr (L + εI)^{-1/4} G (R + εI)^{-1/4}, factors from all steps so far."""
    eps, lr = 1e-3, 0.5
    param = torch.zeros(shape, dtype=F64, requires_grad=True)
    opt = Shampoo([param], lr=lr, betas=(0.0, 0.99), shampoo_beta=shampoo_beta, epsilon=eps, grafting="none",
                  precondition_frequency=1, root_method=root_method)
    grads = _gradients(shape, 4)
    moves = _run(param, opt, grads)
    L = torch.zeros(shape[0], shape[0], dtype=F64)
    n = torch.Size(shape[1:]).numel()
    R = torch.zeros(n, n, dtype=F64)
    for g, move in zip(grads, moves):
        G = g.reshape(shape[0], -1)
        if shampoo_beta == 1.0:
            L, R = L + G @ G.T, R + G.T @ G
        else:
            L = shampoo_beta * L + (1 - shampoo_beta) * G @ G.T
            R = shampoo_beta * R + (1 - shampoo_beta) * G.T @ G
        expected = lr * _inverse_fourth_root(L, eps) @ G @ _inverse_fourth_root(R, eps)
        torch.testing.assert_close(move.reshape(G.shape), expected, rtol=1e-9, atol=1e-12)


def test_precondition_frequency_reuses_the_roots():
    eps = 1e-2
    param = torch.zeros(5, 3, dtype=F64, requires_grad=True)
    opt = Shampoo([param], lr=1.0, betas=(0.0, 0.99), epsilon=eps, grafting="none", precondition_frequency=3,
                  start_preconditioning_step=2, root_method="eigh")
    grads = _gradients((5, 3), 6)
    moves = _run(param, opt, grads)
    torch.testing.assert_close(moves[0], grads[0])  # before the start: the grafting optimizer (SGD)
    L, R, roots = 0.0, 0.0, None
    for t, (G, move) in enumerate(zip(grads, moves), start=1):
        L, R = L + G @ G.T, R + G.T @ G
        if t >= 2 and (t - 2) % 3 == 0:  # steps 2 and 5 recompute
            roots = _inverse_fourth_root(L, eps), _inverse_fourth_root(R, eps)
        if t >= 2:
            torch.testing.assert_close(move, roots[0] @ G @ roots[1], rtol=1e-10, atol=1e-12)


def test_adam_grafting_takes_adams_norm_and_shampoos_direction():
    betas, eps, lr = (0.9, 0.99), 1e-3, 0.1
    param = torch.zeros(4, 6, dtype=F64, requires_grad=True)
    adam_param = torch.zeros(4, 6, dtype=F64, requires_grad=True)
    opt = Shampoo([param], lr=lr, betas=betas, epsilon=eps, precondition_frequency=1, root_method="eigh")
    adam = torch.optim.Adam([adam_param], lr=lr, betas=betas, eps=1e-8)
    grads = _gradients((4, 6), 5)
    moves = _run(param, opt, grads)
    adam_moves = _run(adam_param, adam, grads)
    L = R = m = 0.0
    for t, (G, move, adam_move) in enumerate(zip(grads, moves, adam_moves), start=1):
        L, R = L + G @ G.T, R + G.T @ G
        m = betas[0] * m + (1 - betas[0]) * G
        direction = _inverse_fourth_root(L, eps) @ (m / (1 - betas[0] ** t)) @ _inverse_fourth_root(R, eps)
        expected = direction * adam_move.norm() / direction.norm()
        torch.testing.assert_close(move, expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("grafting", ["adam", "adagrad"])
def test_vectors_follow_the_grafting_optimizer(grafting):
    lr = 0.05
    param = torch.zeros(7, dtype=F64, requires_grad=True)
    peer_param = torch.zeros(7, dtype=F64, requires_grad=True)
    opt = Shampoo([param], lr=lr, betas=(0.0 if grafting == "adagrad" else 0.9, 0.999), grafting=grafting,
                  grafting_eps=1e-10)
    peer = (torch.optim.Adam([peer_param], lr=lr, eps=1e-10) if grafting == "adam"
            else torch.optim.Adagrad([peer_param], lr=lr, eps=1e-10))
    grads = _gradients((7,), 5)
    _run(param, opt, grads)
    _run(peer_param, peer, grads)
    torch.testing.assert_close(param, peer_param, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("grafting", ["none", "adam"])
def test_blocking_equals_separate_blocks(grafting):
    """A 9 x 10 matrix with block_size 4 is 3 x 3 blocks (4, 4, 1 rows; 4, 4, 2 columns), each with
    its own factors; with grafting="none" that is Shampoo on nine separate parameters, and with
    Adam grafting the same directions rescaled to Adam's norm of the whole matrix."""
    eps, lr = 1e-3, 0.1
    shape = (9, 10)
    param = torch.zeros(shape, dtype=F64, requires_grad=True)
    opt = Shampoo([param], lr=lr, betas=(0.0, 0.99), epsilon=eps, block_size=4, grafting=grafting,
                  precondition_frequency=1)
    rows, cols = [(0, 4), (4, 8), (8, 9)], [(0, 4), (4, 8), (8, 10)]
    blocks = [torch.zeros(r1 - r0, c1 - c0, dtype=F64, requires_grad=True) for r0, r1 in rows for c0, c1 in cols]
    separate = Shampoo(blocks, lr=lr, betas=(0.0, 0.99), epsilon=eps, grafting="none", precondition_frequency=1)
    adam_param = torch.zeros(shape, dtype=F64, requires_grad=True)
    adam = torch.optim.Adam([adam_param], lr=lr, betas=(0.0, 0.99), eps=1e-8)
    for G in _gradients(shape, 4):
        before = param.detach().clone()
        param.grad = G.clone()
        opt.step()
        block_before = [b.detach().clone() for b in blocks]
        for b, ((r0, r1), (c0, c1)) in zip(blocks, [(r, c) for r in rows for c in cols]):
            b.grad = G[r0:r1, c0:c1].clone()
        separate.step()
        assembled = torch.cat([torch.cat([(b0 - b).detach() for b0, b in zip(block_before[3 * i:3 * i + 3],
                                                                                blocks[3 * i:3 * i + 3])], 1)
                               for i in range(3)], 0)
        if grafting == "adam":
            adam_before = adam_param.detach().clone()
            adam_param.grad = G.clone()
            adam.step()
            assembled = assembled * (adam_before - adam_param).norm() / assembled.norm()
        torch.testing.assert_close(before - param.detach(), assembled, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("root_method", ["newton", "eigh"])
def test_matches_pytorch_optimizer_shampoo(root_method):
    """pytorch-optimizer's Shampoo (momentum 0) is Gupta et al.'s: factors start at εI and sum
    G Gᵀ, roots by SVD every step, no grafting. Ours with β1 = 0, grafting "none", β_s = 1 and
    precondition_frequency 1 is the same method. (It also preconditions 1-D parameters with
    (εI + Σ g gᵀ)^{-1/2}, where ours uses the grafting optimizer: the model has no biases.)"""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False), torch.nn.Tanh(),
                                torch.nn.Linear(5, 3, bias=False)).to(F64)
    peer_model = copy.deepcopy(model)
    X, Y = torch.randn(32, 6, dtype=F64), torch.randn(32, 3, dtype=F64)
    opt = Shampoo(model.parameters(), lr=0.1, betas=(0.0, 0.999), epsilon=1e-4, grafting="none",
                  precondition_frequency=1, root_method=root_method)
    peer = PeerShampoo(peer_model.parameters(), lr=0.1, matrix_eps=1e-4)
    for _ in range(10):
        for m, o in ((model, opt), (peer_model, peer)):
            o.zero_grad()
            (m(X) - Y).square().mean().backward()
            o.step()
    for p, q in zip(model.parameters(), peer_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-12)


def test_state_dict_round_trip_resumes_bit_identically():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(12, 6),
                                torch.nn.Tanh(), torch.nn.Linear(6, 2))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 2, 4, 4, generator=g), torch.randn(8, 2, generator=g)) for _ in range(8)]
    options = dict(lr=0.01, block_size=5, precondition_frequency=3, start_preconditioning_step=2,
                   shampoo_beta=0.95, weight_decay=1e-2)

    assert_resume_is_bit_identical(model, lambda m: Shampoo(m.parameters(), **options), batches, split=4)


def test_nan_gradient_raises_and_leaves_state_untouched():
    param = torch.zeros(4, 3, dtype=F64, requires_grad=True)
    opt = Shampoo([param], lr=0.1, precondition_frequency=1)
    _run(param, opt, _gradients((4, 3), 2))
    state = copy.deepcopy(opt.state_dict())
    before = param.detach().clone()
    bad = torch.ones(4, 3, dtype=F64)
    bad[1, 2] = float("inf")
    param.grad = bad
    with pytest.raises(FloatingPointError, match="Shampoo.step"):
        opt.step()
    assert torch.equal(param, before)
    after = opt.state_dict()["state"][0]
    for key, value in state["state"][0].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(after[key], value)
        elif isinstance(value, list):
            assert all(torch.equal(a, b) for a, b in zip(after[key], value))
    with pytest.raises(FloatingPointError):
        opt.step(lambda: torch.tensor(float("nan")))


@pytest.mark.parametrize("option, value", [
    ("lr", -1.0), ("betas", (0.9, 1.0)), ("shampoo_beta", 0.0), ("shampoo_beta", 1.5), ("epsilon", 0.0),
    ("weight_decay", -1.0), ("block_size", 0), ("precondition_frequency", 1.5),
    ("start_preconditioning_step", 0), ("grafting", "sgd"), ("grafting_eps", -1e-8), ("root_method", "svd"),
])
def test_invalid_hyperparameters_name_the_argument(option, value):
    with pytest.raises(ValueError, match=option):
        Shampoo([torch.zeros(2, 2, requires_grad=True)], **{option: value})
    opt = Shampoo([torch.zeros(2, 2, requires_grad=True)])
    with pytest.raises(ValueError, match=option):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], option: value})
    assert len(opt.param_groups) == 1


def test_no_parameters_and_complex_parameters():
    with pytest.raises(ValueError, match="empty parameter list"):
        Shampoo([])
    z = torch.zeros(2, 2, dtype=torch.complex64, requires_grad=True)
    z.grad = torch.ones_like(z)
    with pytest.raises(RuntimeError, match="complex"):
        Shampoo([z]).step()
