"""Levenberg–Marquardt's one-problem trial step on Python floats (``ScaledSpectrum.trial``)
against the batched decomposition's step and a dense model value."""
import pytest
import torch

from torchnewton.globalize.damping import ScaledJacobian


def _decomposition(seed: int, m: int, n: int, deficient: bool):
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(1, m, n, dtype=torch.float64, generator=g) * 10.0 ** (4 * torch.rand(1, 1, n, generator=g) - 2)
    if deficient:
        J[0, :, -1] = 3 * J[0, :, 0]
    F = torch.randn(1, m, dtype=torch.float64, generator=g)
    scale = J.norm(dim=-2)
    return J, ScaledJacobian.of(J, F, scale), ScaledJacobian.of_one(J, F, scale.tolist()[0])[1]


@pytest.mark.parametrize("deficient", [False, True])
def test_trial_is_the_batched_step_and_the_model_norm(deficient):
    J, batch, spectrum = _decomposition(3, 11, 4, deficient)
    for damping in (0.0, 1e-6, 0.3, 40.0):
        p, p_norm, model = spectrum.trial(damping)
        reference, reference_norm = batch.step(torch.tensor([damping], dtype=torch.float64))
        assert p == pytest.approx(reference[0].tolist(), rel=1e-12, abs=1e-14)
        assert p_norm == pytest.approx(float(reference_norm), rel=1e-12)
        # ‖J p‖ of the model against the product with J itself
        assert model == pytest.approx(float((J[0] @ torch.tensor(p, dtype=torch.float64)).norm()), rel=1e-10)
