"""Bad input to torchnewton.fixed_point and DEQ: clear errors naming the argument, before any work."""
import pytest
import torch
from torch import nn

from torchnewton.nn import DEQ
from torchnewton.solvers.fixed_point.solve import fixed_point

DOUBLE = torch.float64


class Counting:
    def __init__(self, out=None):
        self.calls, self.out = 0, out

    def __call__(self, z, *args):
        self.calls += 1
        return z * 0.5 if self.out is None else self.out


def test_T_must_be_callable_and_return_a_tensor_shaped_like_z0():
    with pytest.raises(TypeError, match="T must be callable"):
        fixed_point(3.0, torch.zeros(2))
    with pytest.raises(TypeError, match="T must be callable"):
        fixed_point(None, torch.zeros(2))
    with pytest.raises(ValueError, match=r"T returned shape \(3,\), expected \(2,\)"):
        fixed_point(lambda z: torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"T returned shape \(2, 1\)"):
        fixed_point(lambda z: z.unsqueeze(-1), torch.zeros(2))
    with pytest.raises(TypeError, match="T must return a torch.Tensor"):
        fixed_point(lambda z: [0.0, 0.0], torch.zeros(2))
    with pytest.raises(ValueError, match=r"expected \(4, 2\)"):
        fixed_point(lambda z: z[:, :1], torch.zeros(4, 2), batch=True)


def test_non_finite_start_is_an_error_before_any_iteration():
    T = Counting()
    with pytest.raises(ValueError, match="z0 contains non-finite"):
        fixed_point(T, torch.tensor([1.0, float("nan")]))
    assert T.calls == 0
    T = Counting(out=torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match="T returned non-finite values"):
        fixed_point(T, torch.zeros(2))
    assert T.calls == 1


def test_bad_arguments_and_options_name_themselves():
    T = Counting()
    z0 = torch.zeros(2)
    with pytest.raises(ValueError, match="unknown method 'sor'"):
        fixed_point(T, z0, method="sor")
    with pytest.raises(TypeError, match="z0 must be a torch.Tensor"):
        fixed_point(T, [0.0, 0.0])
    with pytest.raises(TypeError, match="z0 must have a real floating dtype"):
        fixed_point(T, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="z0 must have 2 dimension"):
        fixed_point(T, z0, batch=True)
    with pytest.raises(ValueError, match="tol must be > 0"):
        fixed_point(T, z0, tol=-1.0)
    with pytest.raises(TypeError, match="max_iter must be an int"):
        fixed_point(T, z0, max_iter=2.5)
    with pytest.raises(TypeError, match="args must be a tuple"):
        fixed_point(T, z0, args=[1.0])
    with pytest.raises(ValueError, match="unknown options"):
        fixed_point(T, z0, method="picard", options={"memory": 3})
    with pytest.raises(ValueError, match="mixing must be in"):
        fixed_point(T, z0, options={"mixing": 1.5})
    with pytest.raises(ValueError, match="alpha must be in"):
        fixed_point(T, z0, method="krasnoselskii-mann", options={"alpha": 1.0})
    with pytest.raises(ValueError, match="memory must be > 0"):
        fixed_point(T, z0, options={"memory": 0})
    with pytest.raises(ValueError, match="unknown norm"):
        fixed_point(T, z0, options={"norm": "l1"})
    with pytest.raises(ValueError, match="unknown adjoint"):
        fixed_point(T, z0, options={"adjoint": "unrolled"})
    with pytest.raises(TypeError, match="callback must be callable"):
        fixed_point(T, z0, callback=1)
    assert T.calls == 0


def test_deq_bad_input():
    cell = nn.Linear(3, 3)
    with pytest.raises(TypeError, match="cell must be callable"):
        DEQ(3)
    with pytest.raises(ValueError, match="unknown method 'newton'"):
        DEQ(lambda z, x: z, method="newton")
    with pytest.raises(ValueError, match="unknown backward 'unrolled'"):
        DEQ(lambda z, x: z, backward="unrolled")
    with pytest.raises(ValueError, match="phantom_damping must be in"):
        DEQ(lambda z, x: z, phantom_damping=1.5)
    with pytest.raises(ValueError, match="unknown options"):
        DEQ(lambda z, x: z, options={"alpha": 0.5})
    with pytest.raises(ValueError, match="fallback must be > 0"):
        DEQ(lambda z, x: z, fallback=-1.0)
    deq = DEQ(lambda z, x: cell(z)[:, :2], tol=1e-3)
    with pytest.raises(ValueError, match=r"cell\(z, x\) must return a tensor shaped like z \(4, 3\), got \(4, 2\)"):
        deq(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="z0 contains non-finite"):
        DEQ(lambda z, x: 0.5 * z + x)(torch.zeros(2, 3), z0=torch.full((2, 3), float("nan")))
