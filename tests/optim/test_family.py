"""The Muon family (AuON, Hybrid-AuON, Pion, ROOT, AdaMuon, NorMuon): each update against its
closed form or an SVD reference, the torch.optim contract (bit-identical resume), training on a
small regression problem, and bad hyperparameters."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from torchnewton.linalg.coefficients import MUON_QUINTIC, composite_map, polar_express_coefficients
from torchnewton.linalg.highpass import highpass_coefficients
from torchnewton.linalg.methods import POLAR_EXPRESS_SAFETY
from torchnewton.optim import param_groups
from torchnewton.optim.adamuon import AdaMuon, NorMuon
from torchnewton.optim.auon import AuON, HybridAuON
from torchnewton.optim.finite import first_nonfinite_group, nonfinite_groups
from torchnewton.optim.muon import Muon
from torchnewton.optim.pion import Pion, paper_highpass_coefficients
from torchnewton.optim.root import ROOT, clip_outliers, random_matrix_lower_edge, shape_coefficients
from torchnewton.optim.scaling import adjust_lr_factor
from torchnewton.optim.spectral_filters import apply_odd_polynomials, frobenius_normalization

F64 = torch.float64


def _one_step(optimizer_class, G, **kwargs):
    """-(update) of one step from W = 0 with lr 1, no momentum: the transformed, scaled G."""
    p = torch.nn.Parameter(torch.zeros_like(G))
    opt = optimizer_class([p], lr=1.0, momentum=0.0, nesterov=False, **kwargs)
    p.grad = G.clone()
    opt.step()
    return -p.detach()


def _svd_apply(M, scalar_map):
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    return (U * torch.tensor([scalar_map(float(s)) for s in S], dtype=M.dtype)) @ Vh


# ---------------------------------------------------------------------------------------- AuON

def test_auon_hand_checked_2x2():
    """G = diag(3, 4): X = G / 5 = diag(0.6, 0.8); gamma = 1.5 gives cosh(0.9), cosh(1.2) and two
    cosh(0) = 1, r = sqrt((cosh(0.9)^2 + cosh(1.2)^2 + 2) / 4) = 1.3539027, U = X / r."""
    G = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=F64)
    r = math.sqrt((math.cosh(0.9) ** 2 + math.cosh(1.2) ** 2 + 2) / 4)
    assert r == pytest.approx(1.3539027080667, rel=1e-12)
    expected = torch.tensor([[0.6 / r, 0.0], [0.0, 0.8 / r]], dtype=F64)
    assert torch.allclose(_one_step(AuON, G), expected, rtol=0, atol=1e-15)
    # scale invariance (the paper's property): 1e-6 G and 1e6 G give the same update
    assert torch.allclose(_one_step(AuON, 1e-6 * G), expected, rtol=0, atol=1e-15)
    assert torch.allclose(_one_step(AuON, 1e6 * G), expected, rtol=0, atol=1e-15)
    assert torch.equal(_one_step(AuON, torch.zeros(2, 2, dtype=F64)), torch.zeros(2, 2, dtype=F64))


def test_auon_brake_bound_is_attained_by_a_single_spike():
    """r <= sqrt(1 + sinh(gamma)^2 / N), with equality when one entry holds all the mass."""
    for rows, cols in ((2, 2), (8, 16)):
        N = rows * cols
        bound = math.sqrt(1 + math.sinh(1.5) ** 2 / N)
        spike = torch.zeros(rows, cols, dtype=F64)
        spike[1, 1] = 3.0
        assert float(torch.linalg.matrix_norm(_one_step(AuON, spike))) == pytest.approx(1 / bound, rel=1e-12)
        spread = torch.randn(rows, cols, dtype=F64, generator=torch.Generator().manual_seed(N))
        r = 1 / float(torch.linalg.matrix_norm(_one_step(AuON, spread)))
        assert 1.0 <= r < bound


def test_auon_closed_form_with_nesterov_momentum_and_shape_factor():
    """Two steps of a 3 x 2 (tall: factor sqrt(3/2)) matrix, momentum by hand."""
    beta, gamma, lr = 0.9, 1.0, 0.1
    G1 = torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]], dtype=F64)
    G2 = torch.tensor([[0.0, 1.0], [-1.0, 2.0], [1.0, 1.0]], dtype=F64)
    p = torch.nn.Parameter(torch.zeros(3, 2, dtype=F64))
    opt = AuON([p], lr=lr, momentum=beta, nesterov=True, gamma=gamma)
    buffer, expected = torch.zeros(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64)
    for G in (G1, G2):
        p.grad = G.clone()
        opt.step()
        buffer = beta * buffer + (1 - beta) * G
        M = (1 - beta) * G + beta * buffer
        X = M / math.sqrt(float((M**2).sum()))
        r = math.sqrt(sum(math.cosh(gamma * float(x)) ** 2 for x in X.flatten()) / 6)
        expected = expected - lr * math.sqrt(3 / 2) * X / r
        assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-14)


def test_hybrid_auon_hand_checked_2x2_and_svd_reference():
    """One quintic step p(x) = 3.4445x - 4.7750x^3 + 2.0315x^5 on diag(0.6, 0.8), then the brake."""
    G = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=F64)
    y1, y2 = 3.4445 * 0.6 - 4.7750 * 0.6**3 + 2.0315 * 0.6**5, 3.4445 * 0.8 - 4.7750 * 0.8**3 + 2.0315 * 0.8**5
    assert (y1, y2) == pytest.approx((1.19326944, 0.97648192), abs=1e-12)
    norm = math.hypot(y1, y2)
    r = math.sqrt((math.cosh(1.5 * y1 / norm) ** 2 + math.cosh(1.5 * y2 / norm) ** 2 + 2) / 4)
    expected = torch.tensor([[y1 / r, 0.0], [0.0, y2 / r]], dtype=F64)
    assert torch.allclose(_one_step(HybridAuON, G, dtype=F64), expected, rtol=0, atol=1e-14)
    # a general 5 x 7 matrix: U p(S / ||M||_F) V^T, then the brake
    M = torch.randn(5, 7, dtype=F64, generator=torch.Generator().manual_seed(0))
    frob = float(torch.linalg.matrix_norm(M))
    Y = _svd_apply(M, lambda s: composite_map(s / frob, (MUON_QUINTIC,)))
    r = torch.cosh(1.5 * Y / torch.linalg.matrix_norm(Y)).square().mean().sqrt()
    assert torch.allclose(_one_step(HybridAuON, M, dtype=F64), Y / r, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------- Pion

def test_pion_paper_filter_matches_svd_reference():
    M = torch.randn(6, 10, dtype=F64, generator=torch.Generator().manual_seed(1))
    frob = float(torch.linalg.matrix_norm(M))
    for kp in (1, 2):
        schedule = paper_highpass_coefficients(5, kp)
        expected = _svd_apply(M, lambda s: composite_map(s / frob, schedule))
        out = _one_step(Pion, M, threshold=None, promotion_steps=kp, dtype=F64)
        assert torch.allclose(out, expected, rtol=0, atol=1e-13)
    # the paper's cut: k_p = 1 maps 0.523 ||M||_F to sqrt(2/3); soft over about [0.45, 0.6]
    one = paper_highpass_coefficients(5, 1)
    assert composite_map(0.6, one) > 0.99 and composite_map(0.4, one) < 0.01
    assert abs(composite_map(0.5230, (one[0],)) - math.sqrt(2 / 3)) < 1e-4


def test_pion_paper_filter_flushes_vanishing_entries_without_changing_the_result():
    """A flat spectrum (Gaussian 64 x 160, every sigma < 0.2 ||M||_F): the paper's filter removes all of
    it, exactly 0 after the flush (without it the last products are subnormal); with a strong top
    direction kept, flushing changes the float32 result by less than its rounding."""
    g = torch.Generator().manual_seed(8)
    flat = torch.randn(1, 64, 160, generator=g)
    schedule = paper_highpass_coefficients(5, 1)
    out = apply_odd_polynomials(flat, schedule, frobenius_normalization(1.0), torch.float32, flush_vanishing=True)
    assert torch.equal(out, torch.zeros_like(out))
    top = flat + 40 * torch.randn(1, 64, 1, generator=g) @ torch.randn(1, 1, 160, generator=g) / 160**0.5
    with_flush = apply_odd_polynomials(top, schedule, frobenius_normalization(1.0), torch.float32, flush_vanishing=True)
    without = apply_odd_polynomials(top, schedule, frobenius_normalization(1.0), torch.float64)
    assert float(torch.linalg.svdvals(with_flush)[0, 0]) == pytest.approx(1.0, abs=1e-4)
    assert float((with_flush.double() - without).abs().max()) < 1e-6


@pytest.mark.parametrize("rows, cols", [(8, 14), (20, 6), (6, 20)])
def test_pion_designed_filter_keeps_the_top_and_removes_the_tail(rows, cols):
    """Singular values sigma_1 (1, .8, .6) above tau = 0.5 map to 1, (.2, .1, .05) below tau / 2 to 0,
    against the SVD reference U h V^T (tolerance: design error 3e-5 + normalization 1e-5); tall,
    and wide enough (n >= 2m) for the Gram-side evaluation."""
    g = torch.Generator().manual_seed(2)
    U, _ = torch.linalg.qr(torch.randn(rows, 6, dtype=F64, generator=g))
    V, _ = torch.linalg.qr(torch.randn(cols, 6, dtype=F64, generator=g))
    S = torch.tensor([5.0, 4.0, 3.0, 1.0, 0.5, 0.25], dtype=F64)
    M = (U * S) @ V.T
    out = _one_step(Pion, M, threshold=0.5, dtype=F64, adjust_lr="spectral") / adjust_lr_factor("spectral", rows, cols)
    ideal = (U * torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=F64)) @ V.T
    assert torch.linalg.matrix_norm(out - ideal, ord=2) <= 4e-5


def test_pion_per_head_filters_each_block():
    heads, rows, cols = 3, 4, 9
    G = torch.randn(heads * rows, cols, dtype=F64, generator=torch.Generator().manual_seed(3))
    together = _one_step(Pion, G, per_head=heads, threshold=0.4, dtype=F64, adjust_lr="spectral")
    for h in range(heads):
        block = G[h * rows:(h + 1) * rows]
        alone = _one_step(Pion, block, threshold=0.4, dtype=F64, adjust_lr="spectral")
        assert torch.allclose(together[h * rows:(h + 1) * rows], alone, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------- ROOT

def test_root_soft_thresholding_exact_on_hand_case():
    """|M| has N = 9 entries 1..9; quantile 0.75 is rank floor(0.75 * 8) + 1 = 7: eps = 7. The
    proximal split: O = T_7(M) = sign(M) max(|M| - 7, 0), B = M - O = clip(M, -7, 7)."""
    M = torch.tensor([[1.0, -9.0, 3.0], [-4.0, 5.0, 8.0], [7.0, -2.0, -6.0]])
    outliers = torch.sign(M) * torch.clamp(M.abs() - 7.0, min=0.0)
    assert torch.equal(outliers, torch.tensor([[0.0, -2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    expected = torch.tensor([[1.0, -7.0, 3.0], [-4.0, 5.0, 7.0], [7.0, -2.0, -6.0]])
    assert torch.equal(clip_outliers(M[None], 0.75)[0], expected)
    assert torch.equal(clip_outliers(M[None], 0.75)[0], M - outliers)
    assert torch.equal(clip_outliers(M[None], 1.0)[0], M)  # quantile 1 keeps everything
    # a stack of heads: one threshold per matrix
    pair = torch.stack([M, 10 * M])
    assert torch.equal(clip_outliers(pair, 0.75), torch.stack([expected, 10 * expected]))


def test_root_coefficients_are_designed_per_shape_and_cached():
    shape_coefficients.cache_clear()
    wide, square, narrow = (shape_coefficients(r, c, 5) for r, c in ((64, 256), (128, 128), (16, 512)))
    assert wide != square and wide != narrow and square != narrow
    assert shape_coefficients(256, 64, 5) == wide  # the transpose has the same singular values
    before = shape_coefficients.cache_info().hits
    assert shape_coefficients(64, 256, 5) is wide
    assert shape_coefficients.cache_info().hits == before + 1
    # the design interval's lower edge against Gaussian matrices of that shape
    g = torch.Generator().manual_seed(4)
    for rows, cols in ((64, 256), (32, 32), (16, 512)):
        A = torch.randn(30, rows, cols, dtype=F64, generator=g)
        measured = (torch.linalg.svdvals(A)[:, -1] / torch.linalg.matrix_norm(A)).median()
        assert float(measured) == pytest.approx(random_matrix_lower_edge(rows, cols), rel=0.35)


def test_root_step_matches_exact_arithmetic():
    """clip at the 0.9 quantile, Polar Express quintics of the shape on the singular values (SVD)."""
    shape = (12, 20)
    G = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(5))
    G[2, 3] = 40.0  # an outlier
    B = clip_outliers(G[None], 0.9)[0]
    schedule = shape_coefficients(*shape, 5)
    frob = float(torch.linalg.matrix_norm(B)) * POLAR_EXPRESS_SAFETY
    expected = _svd_apply(B, lambda s: composite_map(s / frob, schedule)) * adjust_lr_factor("match_rms_adamw", *shape)
    assert torch.allclose(_one_step(ROOT, G, dtype=F64), expected, rtol=0, atol=1e-12)
    assert schedule != polar_express_coefficients(5, 5, 1e-3 / POLAR_EXPRESS_SAFETY, POLAR_EXPRESS_SAFETY)


# ---------------------------------------------------------------------------- AdaMuon / NorMuon

def _polar(M):
    U, _, Vh = torch.linalg.svd(M, full_matrices=False)
    return U @ Vh


@pytest.mark.parametrize("rule", ["match_rms_adamw", "original"])
def test_adamuon_second_moment_by_hand_over_three_steps(rule):
    """O_t = polar(sign(M_t)) (converged Newton–Schulz vs SVD), V_t = beta V + (1 - beta) O ⊙ O with
    beta the momentum, O_hat = O / (sqrt(V) + eps), update 0.2 sqrt(mn) O_hat / ||O_hat||_F."""
    shape, beta, lr, eps = (6, 10), 0.9, 0.01, 1e-8
    g = torch.Generator().manual_seed(6)
    p = torch.nn.Parameter(torch.zeros(shape, dtype=F64))
    opt = AdaMuon([p], lr=lr, momentum=beta, nesterov=True, eps=eps, method="newton-schulz", steps=60,
                  dtype=F64, adjust_lr=rule)
    buffer, V, expected = torch.zeros(shape, dtype=F64), torch.zeros(shape, dtype=F64), torch.zeros(shape, dtype=F64)
    for _ in range(3):
        G = torch.randn(*shape, dtype=F64, generator=g)
        p.grad = G.clone()
        opt.step()
        buffer = beta * buffer + (1 - beta) * G
        O = _polar(torch.sign((1 - beta) * G + beta * buffer))
        V = beta * V + (1 - beta) * O * O
        O_hat = O / (V.sqrt() + eps)
        if rule == "match_rms_adamw":
            update = 0.2 * math.sqrt(60) * O_hat / torch.linalg.matrix_norm(O_hat)
        else:
            update = O_hat * torch.linalg.matrix_norm(O) / torch.linalg.matrix_norm(O_hat)
        expected = expected - lr * update
        assert torch.allclose(opt.state[p]["second_moment"], V, rtol=0, atol=1e-12)
        assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-12)


def test_normuon_row_second_moment_by_hand_over_three_steps():
    """v_t = beta2 v + (1 - beta2) mean over columns of O ⊙ O (one number per row / output neuron)."""
    shape, beta, beta2, lr, eps = (5, 8), 0.9, 0.95, 0.01, 1e-10
    g = torch.Generator().manual_seed(7)
    p = torch.nn.Parameter(torch.zeros(shape, dtype=F64))
    opt = NorMuon([p], lr=lr, momentum=beta, nesterov=False, beta2=beta2, eps=eps, method="newton-schulz",
                  steps=60, dtype=F64)
    buffer, expected = torch.zeros(shape, dtype=F64), torch.zeros(shape, dtype=F64)
    v = torch.zeros(shape[0], 1, dtype=F64)
    for _ in range(3):
        G = torch.randn(*shape, dtype=F64, generator=g)
        p.grad = G.clone()
        before = p.detach().clone()
        opt.step()
        # RMS alignment: the step has RMS exactly 0.2 lr
        assert float((p.detach() - before).square().mean().sqrt()) == pytest.approx(0.2 * lr, rel=1e-12)
        buffer = beta * buffer + (1 - beta) * G
        O = _polar(buffer)
        v = beta2 * v + (1 - beta2) * (O * O).mean(dim=1, keepdim=True)
        O_hat = O / (v.sqrt() + eps)
        expected = expected - lr * 0.2 * math.sqrt(40) * O_hat / torch.linalg.matrix_norm(O_hat)
        assert torch.allclose(opt.state[p]["row_second_moment"], v, rtol=0, atol=1e-13)
        assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [AdaMuon, NorMuon])
def test_per_head_second_moments_align_each_head(cls):
    """per_head = 2: each row block gets its own RMS 0.2 update, and equals the block run alone."""
    G = torch.randn(8, 6, dtype=F64, generator=torch.Generator().manual_seed(9))
    G[4:] *= 100.0  # heads of very different scales
    both = _one_step(cls, G, per_head=2, dtype=F64)
    for block in (slice(0, 4), slice(4, 8)):
        assert float(both[block].square().mean().sqrt()) == pytest.approx(0.2, rel=1e-12)
        assert torch.allclose(both[block], _one_step(cls, G[block], dtype=F64), rtol=0, atol=1e-13)


# ------------------------------------------------------------------- contract, training, input

MEMBERS = {
    "AuON": (AuON, {"lr": 0.3}),
    "HybridAuON": (HybridAuON, {"lr": 0.02}),
    "Pion": (Pion, {"lr": 0.02, "threshold": 0.2}),
    "Pion-paper": (Pion, {"lr": 0.02, "threshold": None}),
    "ROOT": (ROOT, {"lr": 0.01}),
    "AdaMuon": (AdaMuon, {"lr": 0.01}),
    "NorMuon": (NorMuon, {"lr": 0.01}),
}


def _regression(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(128, 8, generator=g)
    W1, W2 = torch.randn(8, 16, generator=g), torch.randn(16, 3, generator=g)
    return X, torch.tanh(X @ W1) @ W2


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 24), torch.nn.Tanh(), torch.nn.Linear(24, 24), torch.nn.Tanh(),
                               torch.nn.Linear(24, 3))


def _train(model, opt, data, steps):
    X, Y = data
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), Y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", list(MEMBERS))
def test_state_dict_round_trip_is_bit_identical(name):
    cls, kwargs = MEMBERS[name]
    data, n = _regression(), 6
    straight = _mlp()
    opt = cls(param_groups(straight), adamw_lr=3e-3, weight_decay=0.01, **kwargs)
    _train(straight, opt, data, 2 * n)

    first = _mlp()
    opt_first = cls(param_groups(first), adamw_lr=3e-3, weight_decay=0.01, **kwargs)
    _train(first, opt_first, data, n)
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(opt_first.state_dict())
    resumed = _mlp()
    resumed.load_state_dict(saved_model)
    opt_resumed = cls(param_groups(resumed), adamw_lr=3e-3, weight_decay=0.01, **kwargs)
    opt_resumed.load_state_dict(saved_opt)
    _train(resumed, opt_resumed, data, n)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(MEMBERS))
def test_trains_a_small_regression(name):
    cls, kwargs = MEMBERS[name]
    model = _mlp()
    losses = _train(model, cls(param_groups(model), adamw_lr=3e-3, **kwargs), _regression(), 120)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] / 3


@pytest.mark.parametrize("name", list(MEMBERS))
def test_zero_gradient_gives_zero_update(name):
    cls, kwargs = MEMBERS[name]
    p = torch.nn.Parameter(torch.ones(4, 6))
    opt = cls([p], **kwargs)
    p.grad = torch.zeros(4, 6)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(4, 6))


BAD = [
    (AuON, {"gamma": 0.0}, "gamma"), (AuON, {"gamma": -1.0}, "gamma"), (AuON, {"lr": -1.0}, "lr"),
    (AuON, {"momentum": 1.0}, "momentum"),
    (HybridAuON, {"steps": 0}, "steps"), (HybridAuON, {"gamma": float("nan")}, "gamma"),
    (Pion, {"threshold": 1.5}, "threshold"), (Pion, {"threshold": 0.0}, "threshold"),
    (Pion, {"transition": 1.0}, "transition"), (Pion, {"steps": 0}, "steps"),
    (Pion, {"promotion_steps": 5}, "promotion_steps"), (Pion, {"power_iterations": 0}, "power_iterations"),
    (Pion, {"threshold": 0.02, "transition": 0.95, "steps": 1}, "high-pass design"),
    (ROOT, {"outlier_quantile": 0.0}, "outlier_quantile"), (ROOT, {"outlier_quantile": 1.5}, "outlier_quantile"),
    (ROOT, {"steps": 0}, "steps"), (ROOT, {"adjust_lr": "bogus"}, "adjust_lr"),
    (AdaMuon, {"beta2": 1.0}, "beta2"), (AdaMuon, {"eps": 0.0}, "eps"), (AdaMuon, {"method": "svd"}, "method"),
    (NorMuon, {"beta2": None}, "beta2"), (NorMuon, {"beta2": -0.1}, "beta2"),
]


@pytest.mark.parametrize("cls, kwargs, name", BAD, ids=[f"{c.__name__}-{n}" for c, _, n in BAD])
def test_invalid_hyperparameters_raise_value_error_naming_them(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls([torch.nn.Parameter(torch.zeros(3, 4))], **kwargs)


@pytest.mark.parametrize("cls", [HybridAuON, Pion, ROOT, AdaMuon])
def test_non_floating_dtype_is_a_type_error(cls):
    with pytest.raises(TypeError, match="dtype"):
        cls([torch.nn.Parameter(torch.zeros(3, 4))], dtype=torch.int32)


def test_family_designs_are_reused_across_steps():
    """The per-shape (ROOT) and per-threshold (Pion) designs run once, then come from the cache."""
    shape_coefficients.cache_clear()
    highpass_coefficients.cache_clear()
    params = [torch.nn.Parameter(torch.zeros(6, 9)), torch.nn.Parameter(torch.zeros(6, 9))]
    root, pion = ROOT(params), Pion([torch.nn.Parameter(torch.zeros(6, 9))], threshold=0.3)
    for _ in range(3):
        for p in params + pion.param_groups[0]["params"]:
            p.grad = torch.randn(6, 9)
        root.step()
        pion.step()
    assert shape_coefficients.cache_info().misses == 1
    assert highpass_coefficients.cache_info().misses == 1


# ------------------------------------------------------------------- non-finite steps

FAMILY = {"Muon": (Muon, {"lr": 0.02}), **MEMBERS}


def _snapshot(model, opt):
    return [p.detach().clone() for p in model.parameters()], copy.deepcopy(opt.state_dict())


def _assert_same(a, b):
    """Bitwise equal parameters and optimizer state (nested dicts, lists and tensors)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("where", ["gradient", "momentum", "adamw-gradient"])
@pytest.mark.parametrize("name", list(FAMILY))
def test_non_finite_step_raises_naming_the_group_and_changes_nothing(name, where):
    cls, kwargs = FAMILY[name]
    model, data = _mlp(), _regression()
    groups = param_groups(model)
    groups[0]["name"] = "hidden"
    opt = cls(groups, adamw_lr=3e-3, **kwargs)
    _train(model, opt, data, 2)  # momentum and second moments exist
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(data[0]), data[1]).backward()
    hidden = model[2].weight  # the one matrix of group 0; group 1 is AdamW's
    if where == "gradient":
        hidden.grad[3, 5] = float("nan")
    elif where == "momentum":  # a state already poisoned (e.g. loaded): refused, not propagated
        opt.state[hidden]["momentum_buffer"][0, 0] = float("inf")
    else:
        model[4].bias.grad[1] = float("-inf")
    before = _snapshot(model, opt)
    message = ("param group 1, an AdamW group" if where == "adamw-gradient"
               else "param group 0 \\('hidden'\\), a matrix group")
    with pytest.raises(FloatingPointError, match=message):
        opt.step()
    _assert_same(_snapshot(model, opt), before)
    if where != "momentum":  # the optimizer goes on once the gradients are finite again
        losses = _train(model, opt, data, 3)
        assert all(math.isfinite(v) for v in losses)
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
        assert not torch.equal(hidden.detach(), before[0][2])


def test_finite_check_confirms_a_norm_overflow_entry_by_entry():
    """The fused 2-norm of a large float16 gradient overflows; the exact pass clears it."""
    large = torch.full((65536,), 60000.0, dtype=torch.float16)
    assert bool(nonfinite_groups([[large]])[0])  # the fused pass flags it ...
    assert first_nonfinite_group([[large]]) is None  # ... the exact pass does not
    nan = torch.tensor([1.0, float("nan")])
    assert first_nonfinite_group([[torch.ones(3)], [large, torch.empty(0)], [torch.ones(2), nan]]) == 2
    assert first_nonfinite_group([[], [torch.empty(0)]]) is None
