"""core.fusion: one pure function, run eagerly or as its compiled graph, cached by signature."""
import shutil
import warnings

import pytest
import torch

from torchnewton.core.fusion import CompileFallbackWarning, Fusion, Same, split_arguments

DT = torch.float64
pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="no C++ compiler for Inductor's CPU kernels")


def barrier_terms(y, lower, upper, mu, power):
    """A piece shaped like a solver's: several outputs, a nested structure, a constant."""
    gaps = torch.cat([y - lower, upper - y], -1)
    return (-mu * torch.log(gaps).sum(-1), (gaps.amin(-1), (mu.unsqueeze(-1) / gaps) ** power))


def _inputs(batch=5):
    y = torch.linspace(0.2, 0.8, batch * 3, dtype=DT).reshape(batch, 3)
    return y, torch.zeros_like(y), torch.ones_like(y), torch.full((batch,), 0.1, dtype=DT)


def test_disabled_is_the_function_itself():
    calls = []
    fusion = Fusion(enabled=False)
    out = fusion(lambda a: calls.append(a) or a * 2, torch.ones(2, dtype=DT))
    assert calls and torch.equal(out, torch.full((2,), 2.0, dtype=DT)) and fusion.info() == \
        {"compiled": False, "compile_seconds": 0.0}


def test_compiled_equals_eager_and_is_cached():
    y, lower, upper, mu = _inputs()
    fusion = Fusion(enabled=True)
    with torch.no_grad():
        eager = barrier_terms(y, lower, upper, mu, 2)
        fused = fusion(barrier_terms, y, lower, upper, mu, 2)
    assert fusion.compiled and fusion.compile_seconds > 0
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-14, atol=0)
    torch.testing.assert_close(fused[1][0], eager[1][0], rtol=0, atol=0)
    torch.testing.assert_close(fused[1][1], eager[1][1], rtol=1e-14, atol=0)
    again = Fusion(enabled=True)
    y2 = y.flip(0).contiguous()  # new data, same signature: the same graph, new values
    with torch.no_grad():
        out = again(barrier_terms, y2, lower, upper, mu, 2)
    assert again.compile_seconds == 0
    torch.testing.assert_close(out[0], barrier_terms(y2, lower, upper, mu, 2)[0], rtol=1e-14, atol=0)
    # grad mode on: the eager function (a compiled graph has no backward)
    z = y.clone().requires_grad_(True)
    value = again(barrier_terms, z, lower, upper, mu, 2)[0].sum()
    value.backward()
    assert z.grad is not None


def test_host_read_falls_back_with_one_warning():
    def branchy(x):
        return x * 2 if float(x.sum()) > 0 else x * 3

    fusion = Fusion(enabled=True)
    x = torch.ones(3, dtype=DT)
    with torch.no_grad(), pytest.warns(CompileFallbackWarning, match="branchy"):
        out = fusion(branchy, x)
    assert torch.equal(out, 2 * x) and not fusion.compiled and fusion.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later calls: eager, silently
        with torch.no_grad():
            assert torch.equal(fusion(branchy, -x), -3 * x)


def test_keys():
    a, b = torch.zeros(2), torch.zeros(2)
    assert Same(a) == Same(a) and Same(a) != Same(b) and hash(Same(a)) == id(a)
    key, tensors = split_arguments((a, 2.0, "x"))
    assert len(tensors) == 1 and tensors[0] is a and key[1] == ("value", float, 2.0)
    assert split_arguments((a,))[0] != split_arguments((torch.zeros(3),))[0]
