"""Levenberg–Marquardt's one-problem decomposition, trial step and λ search on floats (``ScaledJacobian.of_one``, ``ScaledSpectrum.trial``
and ``levenberg_marquardt_parameter`` given floats) against the batched ones: the λ search to
round-off, the decomposition's significance mask bitwise in float32 around the cut-off.
"""
import pytest
import torch

from torchnewton.globalize.damping import ScaledJacobian, levenberg_marquardt_parameter


def _problem(seed: int, m: int, n: int, deficient: bool):
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(1, m, n, dtype=torch.float64, generator=g) * 10.0 ** (4 * torch.rand(1, 1, n, generator=g) - 2)
    if deficient:
        J[0, :, -1] = 3 * J[0, :, 0]
    F = torch.randn(1, m, dtype=torch.float64, generator=g)
    return J, F, J.norm(dim=-2)


@pytest.mark.parametrize("deficient", [False, True])
def test_float_search_agrees_with_the_batched_search(deficient):
    for seed in range(6):
        _check_float_search(*_problem(seed, 9 + seed, 2 + seed % 4, deficient))


def _check_float_search(J, F, scale):
    decomposition = ScaledJacobian.of(J, F, scale)
    _, spectrum = ScaledJacobian.of_one(J, F, scale.tolist()[0])
    gauss_newton = spectrum.scaled_norm(0.0)[0]
    for fraction in (1e-4, 1e-3, 0.3, 0.95, 2.0):
        radius = fraction * gauss_newton
        one = levenberg_marquardt_parameter(spectrum, radius, 0.5)
        batch = levenberg_marquardt_parameter(decomposition, torch.tensor([radius], dtype=torch.float64),
                                              torch.tensor([0.5], dtype=torch.float64))
        assert one == pytest.approx(float(batch), rel=1e-10, abs=0)
        # the 10 % rule on the step length holds for the float search's λ
        length = spectrum.trial(one)[1]
        assert length <= 1.1 * radius * (1 + 1e-12) and (one == 0 or length >= 0.9 * radius * (1 - 1e-12))


def test_of_one_cut_off_in_float32():
    # a third singular value from half to sixteen times float32's cut-off σ₁·ε·max(m, n): the
    # mask on the floats (the cut-off rounded in float32) follows the tensor test on both sides
    U, _ = torch.linalg.qr(torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    V, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    eps, masks = torch.finfo(torch.float32).eps, []
    for factor in (0.5, 2.0, 8.0, 16.0):
        sigma = torch.tensor([1.0, 0.3, factor * eps * 8], dtype=torch.float64)
        J = (U * sigma) @ V.T
        J32, F32 = J.to(torch.float32)[None], torch.ones(1, 8)
        scale = torch.ones(1, 3)
        decomposition, spectrum = ScaledJacobian.of_one(J32, F32, scale.tolist()[0])
        reference = ScaledJacobian.of(J32, F32, scale)
        assert torch.equal(decomposition.significant, reference.significant)
        assert spectrum.significant == reference.significant[0].tolist()
        masks.append(spectrum.significant[-1])
    assert masks == [False, True, True, True]


@pytest.mark.parametrize("deficient", [False, True])
def test_trial_is_the_batched_step_and_the_model_norm(deficient):
    J, F, scale = _problem(3, 11, 4, deficient)
    batch, (_, spectrum) = ScaledJacobian.of(J, F, scale), ScaledJacobian.of_one(J, F, scale.tolist()[0])
    for damping in (0.0, 1e-6, 0.3, 40.0):
        p, p_norm, model = spectrum.trial(damping)
        reference, reference_norm = batch.step(torch.tensor([damping], dtype=torch.float64))
        assert p == pytest.approx(reference[0].tolist(), rel=1e-12, abs=1e-14)
        assert p_norm == pytest.approx(float(reference_norm), rel=1e-12)
        # ‖J p‖ of the model against the product with J itself
        assert model == pytest.approx(float((J[0] @ torch.tensor(p, dtype=torch.float64)).norm()), rel=1e-10)
