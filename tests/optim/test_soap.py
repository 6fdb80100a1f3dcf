"""SOAP: Adam in a fixed rotated basis against torch.optim.Adam, the refreshed bases (eigh and
power iteration + QR) against an explicit matrix computation, agreement with pytorch-optimizer's
SOAP (a copy of the authors' code), the torch.optim contract, bad input."""
from __future__ import annotations

import copy

import pytest
import torch
from resume_helpers import assert_resume_is_bit_identical
from pytorch_optimizer import SOAP as PeerSOAP

from torchnewton.optim.soap import SOAP, rotate

F64 = torch.float64


def _gradients(shape, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=F64) for _ in range(steps)]


def _run(param, opt, grads):
    for g in grads:
        param.grad = g.clone()
        opt.step()
    return param.detach().clone()


def _descending_eigenvectors(P):
    return torch.linalg.eigh(P)[1].flip(-1)


def _reference(grads, *, lr, betas, shampoo_beta, eps, weight_decay, frequency, method, max_dim=10**9):
    """SOAP on a matrix written out with explicit Q_Lᵀ X Q_R products (Algorithms 3 and 4)."""
    b1, b2 = betas
    m, n = grads[0].shape
    W = torch.zeros(m, n, dtype=F64)
    M, V = torch.zeros_like(W), torch.zeros_like(W)
    eye = {m: torch.eye(m, dtype=F64), n: torch.eye(n, dtype=F64)}
    L, R = torch.zeros(m, m, dtype=F64), torch.zeros(n, n, dtype=F64)
    QL = QR = None
    for t, G in enumerate(grads, start=1):
        if t > 1:
            k = t - 1
            M = b1 * M + (1 - b1) * G
            V = b2 * V + (1 - b2) * (QL.T @ G @ QR) ** 2
            N = (QL.T @ M @ QR) / (V.sqrt() + eps)
            W = W - lr * (1 - b2**k) ** 0.5 / (1 - b1**k) * (QL @ N @ QR.T)
            W = W - lr * weight_decay * W
        L = shampoo_beta * L + (1 - shampoo_beta) * G @ G.T
        R = shampoo_beta * R + (1 - shampoo_beta) * G.T @ G
        if t == 1 or method == "eigh" and (t - 1) % frequency == 0:
            QL = _descending_eigenvectors(L) if m <= max_dim else eye[m]
            QR = _descending_eigenvectors(R) if n <= max_dim else eye[n]
        elif (t - 1) % frequency == 0:
            if m <= max_dim:
                order = torch.argsort((QL.T @ L @ QL).diagonal(), descending=True)
                V = V[order, :]
                QL = torch.linalg.qr((L @ QL)[:, order])[0]
            if n <= max_dim:
                order = torch.argsort((QR.T @ R @ QR).diagonal(), descending=True)
                V = V[:, order]
                QR = torch.linalg.qr((R @ QR)[:, order])[0]
    return W


@pytest.mark.parametrize("method", ["eigh", "power-qr"])
@pytest.mark.parametrize("frequency", [1, 3])
@pytest.mark.parametrize("shape, max_dim", [((5, 4), 10000), ((3, 12), 6)])
def test_matches_the_explicit_matrix_computation(method, frequency, shape, max_dim):
    options = dict(lr=0.05, betas=(0.9, 0.95), shampoo_beta=0.8, eps=1e-8, weight_decay=0.01)
    grads = _gradients(shape, 8)
    param = torch.zeros(shape, dtype=F64, requires_grad=True)
    opt = SOAP([param], **options, precondition_frequency=frequency, basis_update=method,
               max_precondition_dim=max_dim)
    expected = _reference(grads, **options, frequency=frequency, method=method, max_dim=max_dim)
    torch.testing.assert_close(_run(param, opt, grads), expected, rtol=1e-10, atol=1e-12)


def test_fixed_basis_is_adam_on_the_rotated_parameter():
    """Without refreshes the basis is the one from the first gradient; SOAP is then torch.optim.Adam
    run on Q_Lᵀ W Q_R with rotated gradients (one step later: the first step only builds the basis).

    A square gradient has full-rank factors with distinct eigenvalues, so the basis is unique up to
    signs (which the update does not see). SOAP adds eps to sqrt(V) before the bias correction,
    torch.optim.Adam after it; eps = 1e-30 makes that difference vanish."""
    lr, betas = 0.02, (0.9, 0.99)
    grads = _gradients((5, 5), 7)
    param = torch.zeros(5, 5, dtype=F64, requires_grad=True)
    opt = SOAP([param], lr=lr, betas=betas, eps=1e-30, weight_decay=0.0, precondition_frequency=1000)
    result = _run(param, opt, grads)
    G1 = grads[0]
    QL, QR = _descending_eigenvectors(G1 @ G1.T), _descending_eigenvectors(G1.T @ G1)
    rotated = torch.zeros(5, 5, dtype=F64, requires_grad=True)
    adam = torch.optim.Adam([rotated], lr=lr, betas=betas, eps=1e-30)
    _run(rotated, adam, [QL.T @ G @ QR for G in grads[1:]])
    torch.testing.assert_close(result, QL @ rotated.detach() @ QR.T, rtol=1e-10, atol=1e-13)


def test_vectors_are_adam_one_step_late():
    grads = _gradients((5,), 6)
    param = torch.zeros(5, dtype=F64, requires_grad=True)
    adam_param = torch.zeros(5, dtype=F64, requires_grad=True)
    result = _run(param, SOAP([param], lr=0.1, eps=1e-30, weight_decay=0.0), grads)
    adam = torch.optim.Adam([adam_param], lr=0.1, betas=(0.95, 0.95), eps=1e-30)
    torch.testing.assert_close(result, _run(adam_param, adam, grads[1:]), rtol=1e-12, atol=1e-14)


def _peer_models():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(12, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).to(F64)


@pytest.mark.parametrize("frequency, tolerance", [(1000, 1e-12), (3, 2e-5)])
def test_matches_pytorch_optimizer_soap(frequency, tolerance):
    """Same algorithm (matrices and 4-D conv kernels, 1-D parameters as Adam, first step builds the
    basis). pytorch-optimizer computes the QR of the refresh in float32 by design, so with
    refreshes the agreement is at float32 level; without them it is at float64 round-off."""
    model = _peer_models()
    peer_model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(16, 2, 4, 4, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64)
    opt = SOAP(model.parameters(), lr=0.01, precondition_frequency=frequency)
    peer = PeerSOAP(peer_model.parameters(), lr=0.01, precondition_frequency=frequency)
    for _ in range(12):
        for m, o in ((model, opt), (peer_model, peer)):
            o.zero_grad()
            (m(X) - Y).square().mean().backward()
            o.step()
    for p, q in zip(model.parameters(), peer_model.parameters()):
        torch.testing.assert_close(p, q, rtol=tolerance, atol=tolerance)


def test_rotate_and_back_are_inverse_on_tensors():
    X = torch.randn(3, 4, 5, dtype=F64)
    basis = [torch.linalg.qr(torch.randn(3, 3, dtype=F64))[0], None,
             torch.linalg.qr(torch.randn(5, 5, dtype=F64))[0]]
    Y = rotate(X, basis)
    torch.testing.assert_close(Y, torch.einsum("abc,ai,ck->ibk", X, basis[0], basis[2]))
    torch.testing.assert_close(rotate(Y, basis, back=True), X)


def test_state_dict_round_trip_resumes_bit_identically():
    model = _peer_models().float()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 2, 4, 4, generator=g), torch.randn(8, 2, generator=g)) for _ in range(8)]
    options = dict(lr=0.01, precondition_frequency=2, shampoo_beta=0.9)

    assert_resume_is_bit_identical(model, lambda m: SOAP(m.parameters(), **options), batches, split=5)


def test_nan_gradient_raises_and_leaves_state_untouched():
    param = torch.zeros(4, 3, dtype=F64, requires_grad=True)
    opt = SOAP([param], lr=0.1, precondition_frequency=1)
    _run(param, opt, _gradients((4, 3), 3))
    state = copy.deepcopy(opt.state_dict()["state"][0])
    before = param.detach().clone()
    param.grad = torch.full((4, 3), float("nan"), dtype=F64)
    with pytest.raises(FloatingPointError, match="SOAP.step"):
        opt.step()
    assert torch.equal(param, before)
    after = opt.state_dict()["state"][0]
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(after[key], state[key])
    assert all(torch.equal(a, b) for a, b in zip(after["factors"] + after["basis"], state["factors"] + state["basis"]))


@pytest.mark.parametrize("option, value", [
    ("lr", -1.0), ("betas", (1.0, 0.9)), ("shampoo_beta", 1.0), ("eps", 0.0), ("weight_decay", -0.1),
    ("precondition_frequency", 0), ("max_precondition_dim", 0), ("basis_update", "svd"),
])
def test_invalid_hyperparameters_name_the_argument(option, value):
    with pytest.raises(ValueError, match=option):
        SOAP([torch.zeros(2, 2, requires_grad=True)], **{option: value})


def test_no_parameters():
    with pytest.raises(ValueError, match="empty parameter list"):
        SOAP([])
