"""J⁺r and (Jᵀ)⁺g from the Gram matrix, with the SVD pseudo-inverse where J is not well conditioned."""
import pytest
import torch

from torchnewton.solvers.constrained.least_norm import pseudo_solve, transposed_pseudo_solve

D = torch.float64


def _batch(seed: int, m: int, n: int) -> torch.Tensor:
    """Full-rank members, one with singular values down to 1e-8, one rank-deficient (a repeated row)."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(5, m, n, dtype=D, generator=g)
    if m >= 2:
        u, _, vh = torch.linalg.svd(J[1], full_matrices=False)
        J[1] = u @ torch.diag(torch.logspace(0, -8, u.shape[-1], dtype=D)) @ vh
        J[2, 1] = J[2, 0]
    return J


@pytest.mark.parametrize("shape", [(1, 2), (2, 4), (3, 5), (4, 3)])  # (4, 3): more rows than columns
def test_matches_the_svd_pseudo_inverse(shape):
    m, n = shape
    J = _batch(m * 10 + n, m, n)
    g = torch.Generator().manual_seed(1)
    r, v = torch.randn(5, m, dtype=D, generator=g), torch.randn(5, n, dtype=D, generator=g)
    expected_x = (torch.linalg.pinv(J) @ r.unsqueeze(-1)).squeeze(-1)
    expected_lam = (torch.linalg.pinv(J.transpose(-1, -2)) @ v.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(pseudo_solve(J, r), expected_x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(transposed_pseudo_solve(J, v), expected_lam, rtol=1e-9, atol=1e-9)


def test_least_norm_properties_on_a_well_conditioned_batch():
    J = torch.randn(64, 2, 6, dtype=D, generator=torch.Generator().manual_seed(3))
    r = torch.randn(64, 2, dtype=D, generator=torch.Generator().manual_seed(4))
    x = pseudo_solve(J, r)
    torch.testing.assert_close((J @ x.unsqueeze(-1)).squeeze(-1), r, rtol=1e-12, atol=1e-12)  # solves Jx = r
    # least norm: x lies in the row space of J, so its projection off that space vanishes
    lam = transposed_pseudo_solve(J, x)
    torch.testing.assert_close((J.transpose(-1, -2) @ lam.unsqueeze(-1)).squeeze(-1), x, rtol=1e-12, atol=1e-12)
