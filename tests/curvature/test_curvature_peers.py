"""Side by side with curvlinops-for-pytorch on the same model and data: equal matrices."""
import curvlinops
import pytest
import torch

from curvature_helpers import F64, classification_batch, mlp, regression_batch, relative_error
from torchnewton.curvature import (EmpiricalFisherOperator, GaussNewtonOperator, HessianOperator,
                                   eigenvalues, trace)

PAIRS = [(HessianOperator, "HessianLinearOperator"), (GaussNewtonOperator, "GGNLinearOperator"),
         (EmpiricalFisherOperator, "EFLinearOperator")]


def _data(kind):
    if kind == "mse":
        x, y = regression_batch(n=12, features=3, outputs=3)
        return torch.nn.MSELoss, x, y
    x, y = classification_batch(n=12)
    return torch.nn.CrossEntropyLoss, x, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["mse", "cross-entropy"])
@pytest.mark.parametrize("ours, theirs", PAIRS, ids=[name for _, name in PAIRS])
def test_same_matrix_as_curvlinops(ours, theirs, kind, reduction):
    model = mlp(sizes=(3, 5, 3))
    loss_class, x, y = _data(kind)
    loss = loss_class(reduction=reduction)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]  # several batches: the weighting must agree too
    mine = ours(model, loss, batches)
    peer = getattr(curvlinops, theirs)(model, loss, list(model.parameters()), batches)
    V = torch.randn(mine.num_parameters, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert relative_error(mine @ V, peer @ V) < 1e-12
    assert relative_error(mine.to_dense()[0], peer @ torch.eye(mine.num_parameters, dtype=F64)) < 1e-12


def test_spectral_tools_agree_with_curvlinops_dense_matrix():
    model = mlp(sizes=(3, 6, 3))
    _, x, y = _data("cross-entropy")
    loss = torch.nn.CrossEntropyLoss()
    peer_dense = curvlinops.HessianLinearOperator(model, loss, list(model.parameters()), [(x, y)]) @ \
        torch.eye(sum(p.numel() for p in model.parameters()), dtype=F64)
    H = HessianOperator(model, loss, (x, y))
    top = eigenvalues(H, k=3, generator=torch.Generator().manual_seed(0)).eigenvalues
    exact = torch.linalg.eigvalsh(peer_dense).flip(0)[:3]
    assert float((top - exact).abs().max()) < 1e-10 * float(exact.abs().max())
    assert abs(float(trace(H, "exact") - torch.trace(peer_dense))) < 1e-12 * float(peer_dense.abs().sum())
