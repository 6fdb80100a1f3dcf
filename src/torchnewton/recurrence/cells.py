"""Recurrent cells whose state Jacobian is cheap and structured (ParaRNN style).

Parallel Newton over time (DEER) needs ``J_t = df/dh`` at every step and a linear scan with it.
For a generic cell J_t is dense, which costs O(d^2) memory and O(d^3) scan work per step. With
*diagonal* recurrent weights (Danieli et al., "ParaRNN", 2025) the cell acts on each hidden unit
separately, so J_t is diagonal (GRU) or block diagonal with 2x2 blocks (LSTM with its (c, h) pair),
and a Newton step costs O(d) per time step like the sequential loop.

A structured cell is a ``torch.nn.Module`` with

* ``state_size`` and ``input_size``;
* ``jacobian_structure`` (``"diagonal"`` or ``"block"``) and ``block_size``;
* ``preprocess(xs) -> us``: everything that depends on the input only (the input projections),
  computed once for all time steps;
* ``transition(h, u) -> h_next`` and ``transition_and_jacobian(h, u) -> (h_next, J)`` on rows
  ``(N, d)``; J is ``(N, d)`` (diagonal) or ``(N, d/k, k, k)`` (block);
* ``forward(h, x) = transition(h, preprocess(x))``, the generic cell contract ``f(h, x)``.

Example::

    >>> cell = DiagonalGRUCell(input_size=3, hidden_size=8)
    >>> h1 = cell(torch.zeros(5, 8), torch.randn(5, 3))        # one step for 5 rows
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _tanh(y: torch.Tensor) -> torch.Tensor:
    """tanh as ``2 sigmoid(2y) - 1``, overwriting ``y``: torch's CPU tanh kernel is 2-3x slower
    than sigmoid, more than the extra passes cost. (``sub`` allocates so that autograd keeps the
    sigmoid's output for its backward.)"""
    return y.mul_(2).sigmoid_().sub(0.5).mul_(2)


class DiagonalGRUCell(nn.Module):
    """GRU with diagonal recurrent weights; its state Jacobian is exactly diagonal.

    With the input projection ``u = W x + b_i`` split into (u_r, u_z, u_n) and recurrent vectors
    ``a_r, a_z, a_n`` (the diagonals of torch.nn.GRU's ``weight_hh`` blocks):

        r = sigmoid(u_r + a_r * h + c_r)
        z = sigmoid(u_z + a_z * h + c_z)
        n = tanh(u_n + r * (a_n * h + c_n))
        h' = (1 - z) * n + z * h

    which is torch.nn.GRU's update with diagonal ``weight_hh``, so the two agree to rounding
    (see :meth:`to_torch_gru`; :meth:`preprocess` folds ``c_r, c_z`` into ``u`` and tanh is
    evaluated as ``2 sigmoid(2y) - 1``). The Jacobian is diagonal:

        dh'/dh = z + (h - n) z(1-z) a_z + (1 - z)(1 - n^2)(r(1-r) a_r (a_n h + c_n) + r a_n).

    Example::

        >>> cell = DiagonalGRUCell(3, 8)
        >>> h, J = cell.transition_and_jacobian(torch.zeros(5, 8), cell.preprocess(torch.randn(5, 3)))
        >>> J.shape
        torch.Size([5, 8])
    """

    jacobian_structure = "diagonal"
    block_size = 1

    def __init__(self, input_size: int, hidden_size: int, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.state_size = hidden_size
        factory = {"device": device, "dtype": dtype}
        self.input_proj = nn.Linear(input_size, 3 * hidden_size, **factory)
        self.recurrent_weight = nn.Parameter(torch.empty(3, hidden_size, **factory))
        self.recurrent_bias = nn.Parameter(torch.empty(3, hidden_size, **factory))
        bound = 1.0 / math.sqrt(hidden_size)  # torch.nn.GRU's initialization range
        nn.init.uniform_(self.recurrent_weight, -bound, bound)
        nn.init.uniform_(self.recurrent_bias, -bound, bound)
        nn.init.uniform_(self.input_proj.weight, -bound, bound)
        nn.init.uniform_(self.input_proj.bias, -bound, bound)

    def preprocess(self, xs: torch.Tensor) -> torch.Tensor:
        """``u = W x + b_i`` with the recurrent biases ``c_r, c_z`` folded in: they only shift
        the gate inputs, so adding them once per sequence saves a pass per evaluation."""
        shift = torch.cat([self.recurrent_bias[:2].reshape(-1), torch.zeros_like(self.recurrent_bias[2])])
        # one product with the folded bias: a second pass would allocate another (B, T, 3d) tensor
        return nn.functional.linear(xs, self.input_proj.weight, self.input_proj.bias + shift)

    def _gates(self, h: torch.Tensor, u: torch.Tensor):
        # Fewest passes over (N, d): on long sequences these elementwise passes are the whole
        # cost of a Newton iteration. (One sigmoid over an (N, 2, d) view for r and z broadcasts
        # h over a middle dim, which is slower at small d than two plain passes.)
        d = h.shape[-1]
        a_r, a_z, a_n = self.recurrent_weight
        r = torch.addcmul(u[:, :d], a_r, h).sigmoid_()
        z = torch.addcmul(u[:, d:2 * d], a_z, h).sigmoid_()
        g = torch.addcmul(self.recurrent_bias[2], a_n, h)
        n = _tanh(torch.addcmul(u[:, 2 * d:], r, g))
        return r, z, g, n

    def transition(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        _, z, _, n = self._gates(h, u)
        return torch.addcmul(n, z, h - n)

    def transition_and_jacobian(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r, z, g, n = self._gates(h, u)
        a_r, a_z, a_n = self.recurrent_weight
        h_minus_n = h - n
        # dn/dh = (1 - n^2) r (a_n + (1 - r) a_r g)
        dn = torch.addcmul(a_n, torch.addcmul(a_r, r, a_r, value=-1), g).mul_(r)
        dn.addcmul_(dn * n, n, value=-1)
        # dh'/dh = z + (1 - z) q with q = dn/dh + z a_z (h - n)
        q = dn.addcmul_(z * a_z, h_minus_n)
        jac = torch.addcmul(q, z, q, value=-1).add_(z)
        return torch.addcmul(n, z, h_minus_n), jac

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.transition(h, self.preprocess(x))

    def to_torch_gru(self) -> nn.GRU:
        """A batch-first single-layer torch.nn.GRU computing the same function (dense weights)."""
        ref = self.recurrent_weight
        gru = nn.GRU(self.input_size, self.hidden_size, batch_first=True, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            gru.weight_ih_l0.copy_(self.input_proj.weight)
            gru.bias_ih_l0.copy_(self.input_proj.bias)
            gru.weight_hh_l0.copy_(torch.cat([torch.diag(a) for a in self.recurrent_weight]))
            gru.bias_hh_l0.copy_(self.recurrent_bias.reshape(-1))
        return gru


class DiagonalCIFGLSTMCell(nn.Module):
    """LSTM with coupled input-forget gate (CIFG) and diagonal recurrent weights.

    The state holds the cell and hidden vectors interleaved, ``s = (c_1, h_1, c_2, h_2, ...)``,
    so ``state_size = 2 * hidden_size`` and the Jacobian is block diagonal with one 2x2 block per
    unit. With ``u = W x + b`` split into (u_f, u_o, u_g):

        f = sigmoid(u_f + a_f * h),  o = sigmoid(u_o + a_o * h),  g = tanh(u_g + a_g * h)
        c' = f * c + (1 - f) * g,    h' = o * tanh(c')

    and per unit, with ``dc'/dh = f(1-f) a_f (c - g) + (1 - f)(1 - g^2) a_g``:

        d(c', h')/d(c, h) = [[f,                  dc'/dh],
                             [o (1-tanh^2 c') f,  o(1-o) a_o tanh c' + o (1-tanh^2 c') dc'/dh]].

    Use :meth:`hidden` to read the h part of a state sequence.

    Example::

        >>> cell = DiagonalCIFGLSTMCell(3, 8)
        >>> s, J = cell.transition_and_jacobian(torch.zeros(5, 16), cell.preprocess(torch.randn(5, 3)))
        >>> J.shape
        torch.Size([5, 8, 2, 2])
    """

    jacobian_structure = "block"
    block_size = 2

    def __init__(self, input_size: int, hidden_size: int, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.state_size = 2 * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.input_proj = nn.Linear(input_size, 3 * hidden_size, **factory)
        self.recurrent_weight = nn.Parameter(torch.empty(3, hidden_size, **factory))
        bound = 1.0 / math.sqrt(hidden_size)
        nn.init.uniform_(self.recurrent_weight, -bound, bound)
        nn.init.uniform_(self.input_proj.weight, -bound, bound)
        nn.init.uniform_(self.input_proj.bias, -bound, bound)

    def preprocess(self, xs: torch.Tensor) -> torch.Tensor:
        return self.input_proj(xs)

    @staticmethod
    def hidden(states: torch.Tensor) -> torch.Tensor:
        """The h part of states ``(..., 2 * hidden_size)``."""
        return states[..., 1::2]

    def _forward(self, s: torch.Tensor, u: torch.Tensor):
        # Fused passes and tanh(y) = 2 sigmoid(2y) - 1, as in DiagonalGRUCell._gates: on long
        # sequences these elementwise passes are the whole cost of a Newton iteration.
        c, h = s[..., 0::2], s[..., 1::2]
        u_f, u_o, u_g = u.chunk(3, dim=-1)
        a_f, a_o, a_g = self.recurrent_weight
        f = torch.addcmul(u_f, a_f, h).sigmoid_()
        o = torch.addcmul(u_o, a_o, h).sigmoid_()
        g = _tanh(torch.addcmul(u_g, a_g, h))
        c_minus_g = c - g
        c_next = torch.addcmul(g, f, c_minus_g)
        tanh_c = _tanh(c_next.clone())
        return c_minus_g, f, o, g, c_next, tanh_c

    def transition(self, s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        _, _, o, _, c_next, tanh_c = self._forward(s, u)
        return torch.stack([c_next, o * tanh_c], -1).flatten(-2)

    def transition_and_jacobian(self, s: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c_minus_g, f, o, g, c_next, tanh_c = self._forward(s, u)
        a_f, a_o, a_g = self.recurrent_weight
        one_minus_f = 1 - f
        # dc'/dh = f (1-f) a_f (c - g) + (1-f)(1-g^2) a_g
        dc_dh = torch.addcmul(a_g, a_g * g, g, value=-1).mul_(one_minus_f)
        dc_dh.addcmul_(one_minus_f.mul_(f).mul_(a_f), c_minus_g)
        # o (1 - tanh^2 c') and dh'/dh = o(1-o) a_o tanh c' + o (1 - tanh^2 c') dc'/dh
        o_sech2 = torch.addcmul(o, o * tanh_c, tanh_c, value=-1)
        dh_dh = torch.addcmul(o, o, o, value=-1).mul_(a_o).mul_(tanh_c).addcmul_(o_sech2, dc_dh)
        jac = torch.stack([f, dc_dh, o_sech2 * f, dh_dh], -1).unflatten(-1, (2, 2))
        return torch.stack([c_next, tanh_c.mul_(o)], -1).flatten(-2), jac

    def forward(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.transition(s, self.preprocess(x))
