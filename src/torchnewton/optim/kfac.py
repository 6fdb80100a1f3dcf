"""K-FAC: natural-gradient / Gauss–Newton steps with Kronecker-factored curvature blocks.

Martens & Grosse, "Optimizing Neural Networks with Kronecker-factored Approximate Curvature"
(ICML 2015); Grosse & Martens (ICML 2016) for convolutions; Ba, Grosse & Martens, "Distributed
Second-Order Optimization using Kronecker-Factored Approximations" (ICLR 2017) for KL clipping.

Each ``nn.Linear`` and ``nn.Conv2d`` (groups = 1, zero padding) of the model gets the curvature
block A ⊗ G of ``kfac_statistics`` (bias folded in as a last column Γ_b of the gradient matrix
Γ = [∇W, ∇b], W of a conv flattened to (C_out, C_in·kh·kw)). The factors are running averages

    A <- β A + (1 - β) A_batch,     G <- β G + (1 - β) G_batch      (β = ``factor_decay``),

refreshed every ``factor_update_frequency`` steps (the first batch initializes them). Tikhonov
damping λ is split between the factors as in Martens & Grosse §6.3,

    π = sqrt((tr A / dim A) / (tr G / dim G)),     (A + π sqrt(λ) I) ⊗ (G + sqrt(λ) / π I),

whose inverse is applied as Δ = (G + sqrt(λ)/π I)^{-1} Γ (A + π sqrt(λ) I)^{-1}; the two inverses
are recomputed every ``inverse_update_frequency`` steps, by ``eigh`` or by the Newton–Schulz
iteration ``torchnewton.linalg.inv_root(·, 1)``. Weight decay is added to Γ before the solve.
With ``kl_clip`` κ all directions are scaled by ν = min(1, sqrt(κ / Σ lr² ⟨Δ, Γ⟩)) (Ba et al.).
Then heavy-ball momentum as torch.optim.SGD: B <- μ B + Δ, W <- W - lr B.

Parameters of other modules (embeddings, norms, grouped convolutions, ...) are updated by that
same SGD with momentum on their raw gradient (plus weight decay): exactly torch.optim.SGD.

Requirements: the loss is the mean over the batch (the first dimension of the model's output) of
per-sample losses, as torch's losses with ``reduction="mean"``; call ``step()`` after a forward
and backward of the model in training mode; the statistics come from the last forward of the
model before ``step()`` (all calls of a layer inside it). ``curvature="gauss-newton"`` runs an
extra backward pass inside the model's forward (the model must return a (batch, outputs) tensor:
logits for ``loss="cross-entropy"``, predictions for ``loss="mse"``); it samples targets from
torch's global random generator, like dropout. The hooks hold the optimizer by a weak reference
(keep one to it); ``remove_hooks()`` detaches it from the model.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> opt = KFAC(model, lr=0.1, damping=1e-2)
    >>> x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    >>> torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step(); opt.zero_grad()
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Iterable

import torch

from ..linalg import inv_root
from .finite import check_finite_step, guarded_closure
from .kfac_statistics import CURVATURES, LOSSES, Captured, batch_factors, gauss_newton_backward
from .validate import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_unit_interval,
)

INVERSES = ("eigh", "newton")


class KFAC(torch.optim.Optimizer):
    """K-FAC for the ``nn.Linear`` and ``nn.Conv2d`` layers of ``model``, SGD for the rest.

    Args:
        model: the network; its layers are hooked to measure the factors.
        lr: learning rate.
        momentum: heavy-ball momentum μ (torch.optim.SGD's convention).
        damping: Tikhonov damping λ (> 0).
        weight_decay: L2 coefficient added to the gradient.
        factor_decay: running-average coefficient β of the factors.
        factor_update_frequency: steps between factor updates.
        inverse_update_frequency: steps between recomputations of the damped inverses.
        curvature: "empirical-fisher" or "gauss-newton" (see ``kfac_statistics``).
        loss: "cross-entropy" or "mse": the likelihood of the Gauss–Newton targets.
        inverse: "eigh" or "newton".
        kl_clip: κ of the KL clipping, or None.
        params: the parameters or groups to optimize (default: every trainable parameter of
            ``model``); a layer's weight and bias must share a group.
    """

    def __init__(self, model: torch.nn.Module, lr: float = 0.1, *, momentum: float = 0.9, damping: float = 1e-3,
                 weight_decay: float = 0.0, factor_decay: float = 0.95, factor_update_frequency: int = 1,
                 inverse_update_frequency: int = 10, curvature: str = "empirical-fisher",
                 loss: str = "cross-entropy", inverse: str = "eigh", kl_clip: float | None = None,
                 params: Iterable[Any] | None = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_positive_int("factor_update_frequency", factor_update_frequency)
        check_positive_int("inverse_update_frequency", inverse_update_frequency)
        check_choice("curvature", curvature, CURVATURES)
        check_choice("loss", loss, LOSSES)
        check_choice("inverse", inverse, INVERSES)
        if kl_clip is not None:
            check_positive("kl_clip", kl_clip)
        if params is None:
            params = list(dict.fromkeys(p for p in model.parameters() if p.requires_grad))
            if not params:
                raise ValueError("model has no trainable parameters")
        self.model = model
        self.factor_update_frequency = factor_update_frequency
        self.inverse_update_frequency = inverse_update_frequency
        self.curvature, self.loss, self.inverse, self.kl_clip = curvature, loss, inverse, kl_clip
        self._layers: dict[torch.nn.Module, str] = {}
        self._trains_bias: dict[torch.nn.Module, bool] = {}
        self._captured: dict[torch.nn.Module, Captured] = {}
        self._handles: list[Any] = []
        self._batch_size = 0
        self._sampling = False
        defaults = dict(lr=lr, momentum=momentum, damping=damping, weight_decay=weight_decay,
                        factor_decay=factor_decay, step=0)
        super().__init__(params, defaults)
        self._find_layers()
        # After the layers' hooks: when the model is itself a layer, its statistics come first.
        self._handles.append(model.register_forward_pre_hook(_hook(self, "_start_forward")))
        self._handles.append(model.register_forward_hook(_hook(self, "_end_forward")))

    # ------------------------------------------------------------------ groups and layers

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group.setdefault("step", self.param_groups[0]["step"] if self.param_groups else 0)
        group = {**self.defaults, **param_group}
        check_nonnegative("lr", group["lr"])
        check_unit_interval("momentum", group["momentum"])
        check_positive("damping", group["damping"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_unit_interval("factor_decay", group["factor_decay"])
        super().add_param_group(param_group)
        if self._handles:  # a group added after construction
            self._find_layers()

    def _find_layers(self) -> None:
        """Hook every supported layer whose weight this optimizer trains."""
        group_of = {p: i for i, g in enumerate(self.param_groups) for p in g["params"]}
        for name, module in self.model.named_modules():
            if not _supported(module) or module.weight not in group_of:
                continue
            bias = module.bias
            if bias is not None and bias in group_of and group_of[bias] != group_of[module.weight]:
                raise ValueError(f"params: the weight and bias of layer {name!r} must be in the same group")
            if module in self._layers:
                continue
            self._layers[module] = name or type(module).__name__
            self._trains_bias[module] = bias is not None and bias in group_of
            self._handles.append(module.register_forward_hook(_hook(self, "_capture_layer")))

    def remove_hooks(self) -> None:
        """Detach from the model: no more statistics are captured (``step()`` then fails)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # ------------------------------------------------------------------ hooks

    def _capturing(self) -> bool:
        return (self.model.training and torch.is_grad_enabled()
                and self.param_groups[0]["step"] % self.factor_update_frequency == 0)

    def _start_forward(self, model: torch.nn.Module, inputs: Any) -> None:
        if model is self.model and self._capturing():
            self._captured = {}

    def _capture_layer(self, layer: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not (layer in self._layers and self._capturing() and isinstance(output, torch.Tensor)
                and output.requires_grad):
            return
        captured = self._captured.setdefault(layer, Captured())
        captured.inputs.append(inputs[0].detach())
        gauss_newton = self.curvature == "gauss-newton"

        def keep(grad: torch.Tensor) -> None:
            if self._sampling == gauss_newton:
                captured.output_grads.append(grad.detach())

        output.register_hook(keep)

    def _end_forward(self, model: torch.nn.Module, inputs: Any, output: Any) -> None:
        if not (model is self.model and self._capturing() and self._captured):
            return
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"KFAC needs the model to return a tensor, got {type(output).__name__}")
        self._batch_size = output.shape[0] if output.ndim else 1
        if self.curvature == "gauss-newton":
            self._sampling = True
            try:
                gauss_newton_backward(output, self.loss, [layer.weight for layer in self._captured])
            finally:
                self._sampling = False

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One K-FAC update; ``closure`` (zero_grad, forward, backward, return loss) re-evaluates.

        Raises ``FloatingPointError`` with the state untouched if the loss, a gradient or a new
        curvature statistic is not finite, and ``RuntimeError`` if a layer with a gradient has no
        statistics to update its factors from.
        """
        loss, _ = guarded_closure(self, closure)
        count = self.param_groups[0]["step"]
        layers = [layer for layer in self._layers if layer.weight.grad is not None]
        fresh = self._batch_factors(layers) if count % self.factor_update_frequency == 0 else {}
        check_finite_step(None, [f for pair in fresh.values() for f in pair], "KFAC")
        for layer in layers:
            if layer not in fresh and "A" not in self.state[layer.weight]:
                raise RuntimeError(f"KFAC has no curvature for layer {self._layers[layer]!r} yet: its first "
                                   "gradient came on a step without a factor update")
        self._captured = {}
        group_of = {p: g for g in self.param_groups for p in g["params"]}
        for layer, (A, G) in fresh.items():
            state = self.state[layer.weight]
            if "A" in state:
                beta = group_of[layer.weight]["factor_decay"]
                state["A"].lerp_(A, 1.0 - beta)
                state["G"].lerp_(G, 1.0 - beta)
            else:
                state["A"], state["G"] = A, G
        for layer in layers:
            state = self.state[layer.weight]
            if count % self.inverse_update_frequency == 0 or "A_inverse" not in state:
                damping = group_of[layer.weight]["damping"]
                state["A_inverse"], state["G_inverse"] = damped_inverses(state["A"], state["G"], damping, self.inverse)
        for group in self.param_groups:
            group["step"] += 1
        self._apply(layers, group_of)
        return loss

    def _batch_factors(self, layers: list[torch.nn.Module]) -> dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
        fresh = {}
        for layer in layers:
            captured = self._captured.get(layer)
            if captured is None or not captured.inputs or not captured.output_grads:
                raise RuntimeError(f"KFAC captured no activations or output gradients for layer "
                                   f"{self._layers[layer]!r}: call step() after a forward and backward pass "
                                   "of the model in training mode with gradients enabled")
            fresh[layer] = batch_factors(layer, captured, self._trains_bias[layer], self._batch_size)
        return fresh

    def _apply(self, layers: list[torch.nn.Module], group_of: dict[torch.Tensor, dict[str, Any]]) -> None:
        """Precondition the layers, clip, then the SGD-momentum update of every parameter."""
        directions: dict[torch.Tensor, torch.Tensor] = {}
        inner = []
        for layer in layers:
            group = group_of[layer.weight]
            state = self.state[layer.weight]
            with_bias = self._trains_bias[layer]
            gamma = _gradient_matrix(layer, with_bias, group["weight_decay"])
            delta = state["G_inverse"] @ gamma @ state["A_inverse"]
            inner.append(group["lr"] ** 2 * (delta * gamma).sum())
            n_weight = layer.weight[0].numel()
            directions[layer.weight] = delta[:, :n_weight].reshape(layer.weight.shape)
            if with_bias:
                directions[layer.bias] = delta[:, n_weight]
        if self.kl_clip is not None and inner:
            nu = (self.kl_clip / torch.stack(inner).sum()).sqrt().clamp(max=1.0)
            directions = {p: d * nu for p, d in directions.items()}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = directions.get(p)
                if d is None:
                    d = p.grad if not group["weight_decay"] else p.grad.add(p, alpha=group["weight_decay"])
                _sgd_momentum(p, d, self.state[p], group)


def _hook(optimizer: KFAC, method: str) -> Callable[..., None]:
    """A module hook calling ``optimizer.<method>`` through a weak reference.

    A plain function, not a bound method: ``copy.deepcopy(model)`` shares it instead of copying
    the optimizer, and the methods ignore modules that are not the ones they were registered on.
    """
    ref = weakref.ref(optimizer)

    def hook(*args: Any) -> None:
        target = ref()
        if target is not None:
            getattr(target, method)(*args)

    return hook


def damped_inverses(A: torch.Tensor, G: torch.Tensor, damping: float,
                    method: str = "eigh") -> tuple[torch.Tensor, torch.Tensor]:
    """(A + π sqrt(λ) I)^{-1} and (G + sqrt(λ)/π I)^{-1} with π = sqrt((tr A / dim A) / (tr G / dim G)).

    π = 1 when a factor is zero (no information to balance by).

    Example:
        >>> A, G = torch.eye(2, dtype=torch.float64), 4 * torch.eye(3, dtype=torch.float64)
        >>> Ai, Gi = damped_inverses(A, G, 1e-2)
        >>> Ai.diagonal(), Gi.diagonal()   # π = 1/2: 1/(1 + 0.05), 1/(4 + 0.2)
        (tensor([0.9524, 0.9524], dtype=torch.float64), tensor([0.2381, 0.2381, 0.2381], dtype=torch.float64))
    """
    mean_a = A.diagonal().mean()
    mean_g = G.diagonal().mean()
    usable = (mean_a > 0) & (mean_g > 0)
    pi = torch.where(usable, (mean_a / torch.where(usable, mean_g, 1.0)).sqrt(), 1.0)
    root = damping**0.5
    return _damped_inverse(A, pi * root, method), _damped_inverse(G, root / pi, method)


def _damped_inverse(M: torch.Tensor, shift: torch.Tensor, method: str) -> torch.Tensor:
    if method == "newton":
        return inv_root(M + shift * torch.eye(M.shape[-1], dtype=M.dtype, device=M.device), 1)
    eigenvalues, Q = torch.linalg.eigh(M)
    # M is a Gram matrix: eigenvalues below 0 are rounding.
    return (Q / (eigenvalues.clamp_min(0) + shift).unsqueeze(-2)) @ Q.mT


def _supported(module: torch.nn.Module) -> bool:
    if isinstance(module, torch.nn.Linear):
        return True
    return isinstance(module, torch.nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"


def _gradient_matrix(layer: torch.nn.Module, with_bias: bool, weight_decay: float) -> torch.Tensor:
    """Γ = [∇W, ∇b] (+ weight decay), W flattened to (C_out, -1)."""
    weight = layer.weight
    gamma = weight.grad.reshape(weight.shape[0], -1)
    if weight_decay:
        gamma = gamma + weight_decay * weight.reshape(weight.shape[0], -1)
    if with_bias:
        bias = layer.bias.grad if layer.bias.grad is not None else torch.zeros_like(layer.bias)
        if weight_decay:
            bias = bias + weight_decay * layer.bias
        gamma = torch.cat([gamma, bias.unsqueeze(1)], dim=1)
    return gamma


def _sgd_momentum(p: torch.Tensor, d: torch.Tensor, state: dict, group: dict[str, Any]) -> None:
    """torch.optim.SGD's update (dampening 0, no Nesterov) with the direction ``d``."""
    if group["momentum"]:
        buffer = state.get("momentum_buffer")
        if buffer is None:
            buffer = state["momentum_buffer"] = d.clone()
        else:
            buffer.mul_(group["momentum"]).add_(d)
        d = buffer
    p.add_(d, alpha=-group["lr"])
