"""Hessian, Gauss–Newton and Fisher products equal dense float64 references to round-off."""
import numpy as np
import pytest
import torch

from curvature_helpers import (F64, classification_batch, conv_net, dense_empirical_fisher, dense_gauss_newton,
                               dense_hessian, mean_divisor, mlp, per_sample_gradients, regression_batch,
                               relative_error)
from torchnewton.curvature import (EmpiricalFisherOperator, GaussNewtonOperator, HessianOperator,
                                   MonteCarloFisherOperator, flatten, trainable_parameters)
from torchnewton.linear.krylov import cg

TOL = 1e-10
LOSSES = {"mse": (torch.nn.MSELoss, regression_batch),
          "cross-entropy": (torch.nn.CrossEntropyLoss, classification_batch)}


def _problem(kind, reduction):
    loss_class, make_batch = LOSSES[kind]
    return mlp(), loss_class(reduction=reduction), make_batch()


@pytest.mark.parametrize("mode", HessianOperator.MODES)
@pytest.mark.parametrize("kind", ["mse", "cross-entropy"])
def test_hessian_matches_autograd(mode, kind):
    model, loss, batch = _problem(kind, "mean")
    H = HessianOperator(model, loss, batch, mode=mode)
    reference = dense_hessian(model, loss, [batch])
    assert H.shape == (1, reference.shape[0], reference.shape[0])
    assert relative_error(H.to_dense()[0], reference) < TOL
    v = torch.randn(reference.shape[0], dtype=F64)
    assert relative_error(H @ v, reference @ v) < TOL  # the single-vector path


class _ScaledCrossEntropy(torch.nn.CrossEntropyLoss):
    """A subclass whose forward is not cross-entropy's: it must not get the closed form."""

    def forward(self, outputs, targets):
        return 3.0 * super().forward(outputs, targets) ** 2


def _closed_form_cases():
    x, y = classification_batch()
    ignored = y.clone()
    ignored[2] = -100
    conv_batch = (torch.randn(3, 2, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(3)),
                  torch.randint(0, 3, (3, 4, 4), generator=torch.Generator().manual_seed(4)))
    return {  # name: (model, loss, batch, whether the loss's closed-form output gradient applies)
        "cross-entropy sum": (mlp(), torch.nn.CrossEntropyLoss(reduction="sum"), (x, y), True),
        "mse sum": (mlp(), torch.nn.MSELoss(reduction="sum"), regression_batch(), True),
        "per-pixel cross-entropy": (conv_net(), torch.nn.CrossEntropyLoss(), conv_batch, True),
        "label smoothing": (mlp(), torch.nn.CrossEntropyLoss(label_smoothing=0.1), (x, y), False),
        "class weights": (mlp(), torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5], dtype=F64)),
                          (x, y), False),
        "ignore_index targets": (mlp(), torch.nn.CrossEntropyLoss(), (x, ignored), False),
        "subclass": (mlp(), _ScaledCrossEntropy(), (x, y), False),
    }


@pytest.mark.parametrize("mode", HessianOperator.MODES)
@pytest.mark.parametrize("case", list(_closed_form_cases()))
def test_closed_form_and_autograd_loss_gradient_paths(case, mode):
    """Plain MSE / cross-entropy take the pullback of the closed-form output gradient; every other
    loss (options the closed form lacks, a subclass) autograd's loss backward; both are exact."""
    model, loss, batch, closed_form = _closed_form_cases()[case]
    H = HessianOperator(model, loss, batch, mode=mode)
    assert (H.output_loss is not None) == closed_form
    reduction = "sum" if loss.reduction == "sum" else "mean"
    reference = dense_hessian(model, loss, [batch], reduction)
    assert relative_error(H.to_dense(block_size=5)[0], reference) < TOL
    v = torch.randn(reference.shape[0], dtype=F64)
    assert relative_error(H @ v, reference @ v) < TOL


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["mse", "cross-entropy"])
def test_gauss_newton_matches_jacobian_product(kind, reduction):
    model, loss, batch = _problem(kind, reduction)
    G = GaussNewtonOperator(model, loss, batch)
    reference = dense_gauss_newton(model, loss, [batch], reduction)
    assert relative_error(G.to_dense(block_size=7)[0], reference) < TOL
    v = torch.randn(reference.shape[0], dtype=F64)
    assert relative_error(G @ v, reference @ v) < TOL


def test_gauss_newton_cross_entropy_with_spatial_outputs():
    model = conv_net()
    g = torch.Generator().manual_seed(3)
    batch = (torch.randn(3, 2, 4, 4, dtype=F64, generator=g), torch.randint(0, 3, (3, 4, 4), generator=g))
    loss = torch.nn.CrossEntropyLoss()
    reference = dense_gauss_newton(model, loss, [batch])
    assert relative_error(GaussNewtonOperator(model, loss, batch).to_dense()[0], reference) < TOL
    # the Gauss-Newton matrix of a linear model is its Hessian; here it is not, but it is PSD
    assert float(torch.linalg.eigvalsh(reference)[0]) > -1e-12 * float(reference.norm())


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["mse", "cross-entropy"])
def test_empirical_fisher_is_sum_of_per_sample_outer_products(kind, reduction):
    model, loss, batch = _problem(kind, reduction)
    F = EmpiricalFisherOperator(model, loss, batch)
    reference = dense_empirical_fisher(model, loss, [batch], reduction)
    assert relative_error(F.to_dense()[0], reference) < TOL
    v = torch.randn(reference.shape[0], dtype=F64)
    assert relative_error(F @ v, reference @ v) < TOL


@pytest.mark.parametrize("kind", ["mse", "cross-entropy"])
def test_monte_carlo_fisher_equals_dense_outer_products_at_its_sampled_targets(kind):
    model, loss, batch = _problem(kind, "mean")
    F = MonteCarloFisherOperator(model, loss, batch, samples=3, generator=torch.Generator().manual_seed(0))
    (targets,) = F.sampled_targets()
    assert targets.shape == (3, *batch[1].shape)
    inputs = batch[0]
    outputs = model(inputs)
    reference = sum(per_sample_gradients(model, loss, inputs, t).T @ per_sample_gradients(model, loss, inputs, t)
                    for t in targets) / (3 * mean_divisor(loss, outputs))
    v = torch.randn(reference.shape[0], dtype=F64)
    assert relative_error(F @ v, reference @ v) < TOL
    assert relative_error(F.to_dense()[0], reference) < TOL  # the block path draws the same targets
    again = MonteCarloFisherOperator(model, loss, batch, samples=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again @ v, F @ v)  # seeded


@pytest.mark.parametrize("kind", ["mse", "cross-entropy"])
def test_monte_carlo_fisher_approaches_gauss_newton(kind):
    """E[∇ℓ∇ℓᵀ] over the model's predictive distribution is the loss Hessian: the Fisher is the GGN."""
    model, loss, batch = _problem(kind, "mean")
    G = GaussNewtonOperator(model, loss, batch).to_dense()[0]
    errors = []
    for samples in (100, 10_000):
        F = MonteCarloFisherOperator(model, loss, batch, samples=samples, generator=torch.Generator().manual_seed(1))
        errors.append(relative_error(F.to_dense()[0], G))
    assert errors[1] < 0.05
    assert errors[1] < errors[0] / 3  # error ∝ 1/√S: 100x the samples, ~10x smaller


def test_data_loader_averages_batches_like_the_full_data_loss():
    model = mlp()
    x, y = classification_batch(n=10)
    batches = [(x[:3], y[:3]), (x[3:7], y[3:7]), (x[7:], y[7:])]
    for reduction in ("mean", "sum"):
        loss = torch.nn.CrossEntropyLoss(reduction=reduction)
        # the operator over the batches is that of the loss on all the data at once
        whole = [(x, y)]
        assert relative_error(HessianOperator(model, loss, batches).to_dense()[0],
                              dense_hessian(model, loss, whole, reduction)) < TOL
        assert relative_error(GaussNewtonOperator(model, loss, batches).to_dense()[0],
                              dense_gauss_newton(model, loss, whole, reduction)) < TOL
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    loss = torch.nn.CrossEntropyLoss()
    assert relative_error(EmpiricalFisherOperator(model, loss, loader).to_dense()[0],
                          dense_empirical_fisher(model, loss, [(x, y)])) < TOL


def test_vector_formats_and_scipy():
    model, loss, batch = _problem("cross-entropy", "mean")
    H = HessianOperator(model, loss, batch)
    dense = dense_hessian(model, loss, [batch])
    n = dense.shape[0]
    V = torch.randn(n, 4, dtype=F64)
    assert relative_error(H @ V, dense @ V) < TOL
    assert relative_error(H.matvec(V.T), (dense @ V).T) < TOL
    as_list = H @ H.unflatten(V[:, 0])
    assert [t.shape for t in as_list] == [p.shape for p in model.parameters()]
    assert relative_error(flatten(as_list), dense @ V[:, 0]) < TOL
    scipy_op = H.to_scipy()
    assert scipy_op.shape == (n, n) and scipy_op.dtype == np.float64
    assert np.abs(scipy_op @ V.numpy() - (dense @ V).numpy()).max() < TOL * float(dense.norm())
    assert np.abs(scipy_op.matvec(V[:, 0].numpy()) - (dense @ V[:, 0]).numpy()).max() < TOL * float(dense.norm())


def test_linear_solvers_apply_unchanged():
    model, loss, batch = _problem("mse", "mean")
    G = GaussNewtonOperator(model, loss, batch)
    dense = dense_gauss_newton(model, loss, [batch]) + 0.1 * torch.eye(G.num_parameters, dtype=F64)
    b = torch.randn(2, G.num_parameters, dtype=F64)
    solution = cg(G.shifted(0.1), b, rtol=1e-12, max_iter=500)
    assert bool((solution.status == 0).all())
    assert relative_error(solution.x, torch.linalg.solve(dense, b.T).T) < 1e-8


def test_frozen_parameters_are_skipped():
    model, loss, batch = _problem("cross-entropy", "mean")
    model[0].weight.requires_grad_(False)
    H = HessianOperator(model, loss, batch)
    names, params = trainable_parameters(model)
    assert names == ["0.bias", "2.weight", "2.bias"]
    assert H.num_parameters == sum(p.numel() for p in params) == 4 + 12 + 3
    assert relative_error(H.to_dense()[0], dense_hessian(model, loss, [batch])) < TOL
    assert relative_error(GaussNewtonOperator(model, loss, batch).to_dense()[0],
                          dense_gauss_newton(model, loss, [batch])) < TOL


def test_eval_mode_respected_with_dropout():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(6, 3)).to(F64).eval()
    loss = torch.nn.CrossEntropyLoss()
    batch = classification_batch()
    H = HessianOperator(model, loss, batch, mode="forward-over-reverse")
    G = GaussNewtonOperator(model, loss, batch)
    assert relative_error(H.to_dense()[0], dense_hessian(model, loss, [batch])) < TOL
    assert relative_error(G.to_dense()[0], dense_gauss_newton(model, loss, [batch])) < TOL
    assert not model.training
    model.train()
    with pytest.warns(UserWarning, match="dropout"):
        HessianOperator(model, loss, batch) @ torch.ones(H.num_parameters, dtype=F64)
    assert model.training


def test_training_mode_batch_norm_statistics_untouched():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(),
                                torch.nn.Linear(5, 3)).to(F64).train()
    loss = torch.nn.CrossEntropyLoss()
    batch = classification_batch()
    before = {name: b.clone() for name, b in model.named_buffers()}
    H = HessianOperator(model, loss, batch).to_dense()[0]
    G = GaussNewtonOperator(model, loss, batch).to_dense(block_size=5)[0]
    assert model.training
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name
    # in training mode BatchNorm normalizes with the batch statistics: the references see the same
    assert relative_error(H, dense_hessian(model, loss, [batch])) < TOL
    assert relative_error(G, dense_gauss_newton(model, loss, [batch])) < TOL


def test_float32_model_products_in_float32():
    model, loss, batch = _problem("cross-entropy", "mean")
    reference = dense_gauss_newton(model, loss, [batch])
    model32 = model.float()
    G = GaussNewtonOperator(model32, loss, (batch[0].float(), batch[1]))
    dense = G.to_dense()[0]
    assert dense.dtype == torch.float32
    assert relative_error(dense.double(), reference) < 1e-5


class _PartlyUsed(torch.nn.Module):
    """A linear layer and a trainable parameter the forward never reads; ``used=False`` also skips the layer."""

    def __init__(self, used: bool):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3).to(F64)
        self.unused = torch.nn.Parameter(torch.ones(2, dtype=F64))
        self.used = used

    def forward(self, inputs):
        return self.linear(inputs) if self.used else inputs.clone()


@pytest.mark.parametrize("mode", HessianOperator.MODES)
@pytest.mark.parametrize("loss", ["mse", "cross-entropy", "quartic"])
@pytest.mark.parametrize("used", [True, False])
def test_parameters_the_loss_does_not_depend_on_have_zero_rows(used, loss, mode):
    """Closed-form (MSE, cross-entropy) and autograd (a plain function) gradients alike: a parameter
    outside the graph contributes zero rows; a loss constant in θ gives the zero matrix."""
    model = _PartlyUsed(used)
    if not used:
        model.linear.requires_grad_(False)
    batch = classification_batch() if loss == "cross-entropy" else regression_batch()
    function = {"mse": torch.nn.MSELoss(), "cross-entropy": torch.nn.CrossEntropyLoss(),
                "quartic": lambda f, y: ((f - y) ** 4).mean()}[loss]
    dense = HessianOperator(model, function, batch, mode=mode).to_dense()[0]
    reference = dense_hessian(model, function, [batch])
    unused = model.unused.numel()  # the module's own parameter comes first in named_parameters()
    assert torch.count_nonzero(dense[:unused]) == 0 and torch.count_nonzero(dense[:, :unused]) == 0
    if used:
        assert relative_error(dense, reference) < TOL
    else:
        assert torch.count_nonzero(dense) == 0
