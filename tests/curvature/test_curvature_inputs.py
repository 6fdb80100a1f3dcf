"""Bad input fails before any work, with an error naming what is wrong."""
import pytest
import torch

from curvature_helpers import F64, classification_batch, mlp, regression_batch
from torchnewton.curvature import (GaussNewtonOperator, HessianOperator, MonteCarloFisherOperator, eigenvalues,
                                   inverse_hvp, spectral_density, trace)


def test_model_without_trainable_parameters():
    with pytest.raises(ValueError, match="no parameters with requires_grad"):
        HessianOperator(torch.nn.Tanh(), torch.nn.MSELoss(), regression_batch())
    frozen = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters with requires_grad"):
        GaussNewtonOperator(frozen, torch.nn.MSELoss(), regression_batch())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        HessianOperator(lambda x: x, torch.nn.MSELoss(), regression_batch())


def test_mismatched_batches():
    x, y = regression_batch()
    with pytest.raises(ValueError, match="different batch sizes"):
        HessianOperator(mlp(), torch.nn.MSELoss(), (x, y[:-1]))
    with pytest.raises(ValueError, match="targets shaped like the model outputs"):
        GaussNewtonOperator(mlp(), torch.nn.MSELoss(), (x, y[:, :2]))
    xc, yc = classification_batch()
    with pytest.raises(ValueError, match="targets of shape"):
        GaussNewtonOperator(mlp(), torch.nn.CrossEntropyLoss(), (xc, yc[:, None]))
    with pytest.raises(ValueError, match="class indices in \\[0, 3\\)"):
        GaussNewtonOperator(mlp(), torch.nn.CrossEntropyLoss(), (xc, yc + 3))
    with pytest.raises(TypeError, match="pair \\(inputs, targets\\)"):
        HessianOperator(mlp(), torch.nn.MSELoss(), [(x, y), (x,)])
    with pytest.raises(ValueError, match="no batches"):
        HessianOperator(mlp(), torch.nn.MSELoss(), [])
    with pytest.raises(TypeError, match="one-shot iterator"):
        HessianOperator(mlp(), torch.nn.MSELoss(), iter([(x, y)]))


def test_non_floating_or_wrong_dtype_inputs():
    x, y = regression_batch()
    with pytest.raises(TypeError, match="inputs must have a floating dtype"):
        HessianOperator(mlp(), torch.nn.MSELoss(), (x.long(), y))
    with pytest.raises(TypeError, match="inputs have dtype torch.float32"):
        HessianOperator(mlp(), torch.nn.MSELoss(), (x.float(), y))
    xc, yc = classification_batch()
    with pytest.raises(TypeError, match="class-index targets"):
        GaussNewtonOperator(mlp(), torch.nn.CrossEntropyLoss(), (xc, torch.softmax(mlp()(xc), -1).detach()))


def test_unsupported_losses():
    x, y = regression_batch()
    with pytest.raises(TypeError, match="MSELoss or torch.nn.CrossEntropyLoss"):
        GaussNewtonOperator(mlp(), torch.nn.L1Loss(), (x, y))
    with pytest.raises(TypeError, match="MSELoss or torch.nn.CrossEntropyLoss"):
        MonteCarloFisherOperator(mlp(), torch.nn.functional.mse_loss, (x, y))
    with pytest.raises(ValueError, match="reduction"):
        HessianOperator(mlp(), torch.nn.MSELoss(reduction="none"), (x, y))
    with pytest.raises(ValueError, match="label_smoothing"):
        GaussNewtonOperator(mlp(), torch.nn.CrossEntropyLoss(label_smoothing=0.1), classification_batch())
    with pytest.raises(ValueError, match="must return a scalar"):
        HessianOperator(mlp(), lambda out, target: (out - target) ** 2, (x, y))
    with pytest.raises(ValueError, match="pass reduction="):
        HessianOperator(mlp(), lambda out, target: ((out - target) ** 2).mean(), [(x, y), (x, y)])
    # any scalar function is a loss for the Hessian; with reduction= it averages batches
    H = HessianOperator(mlp(), lambda out, target: ((out - target) ** 2).mean(), [(x, y), (x, y)], reduction="mean")
    assert H.to_dense().shape == (1, 31, 31)
    with pytest.raises(TypeError, match="loss_function must be callable"):
        HessianOperator(mlp(), "mse", (x, y))


def test_non_finite_loss():
    x, y = regression_batch()
    y[0, 0] = float("nan")
    with pytest.raises(ValueError, match="loss is not finite"):
        HessianOperator(mlp(), torch.nn.MSELoss(), (x, y))


def test_bad_vectors_and_tool_arguments():
    H = HessianOperator(mlp(), torch.nn.MSELoss(), regression_batch())
    with pytest.raises(ValueError, match="shape \\(B, 31\\)"):
        H.matvec(torch.ones(2, 30, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        H.matvec(torch.ones(2, 31))
    with pytest.raises(ValueError, match="shaped like the trainable parameters"):
        H @ [torch.ones(3)]
    with pytest.raises(ValueError, match="unknown mode"):
        HessianOperator(mlp(), torch.nn.MSELoss(), regression_batch(), mode="finite-differences")
    with pytest.raises(ValueError, match="k must be at most"):
        eigenvalues(H, k=40)
    with pytest.raises(ValueError, match="unknown which"):
        eigenvalues(H, k=2, which="top")
    with pytest.raises(ValueError, match="unknown method"):
        trace(H, "girard")
    with pytest.raises(ValueError, match="hutch\\+\\+ needs num_samples >= 3"):
        trace(H, "hutch++", num_samples=2)
    with pytest.raises(ValueError, match="damping must be a finite number"):
        inverse_hvp(H, torch.ones(31, dtype=F64), damping=-1.0)
    with pytest.raises(ValueError, match="v must have shape"):
        inverse_hvp(H, torch.ones(30, dtype=F64))
    with pytest.raises(ValueError, match="one square matrix"):
        trace(torch.ones(2, 3, 3, dtype=F64))
    with pytest.raises(TypeError, match="LinearOperator"):
        spectral_density([[1.0]])
    with pytest.raises(ValueError, match="samples must be > 0"):
        MonteCarloFisherOperator(mlp(), torch.nn.MSELoss(), regression_batch(), samples=0)
