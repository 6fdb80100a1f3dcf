"""The update pipeline every matrix optimizer of the Muon family shares.

    momentum -> matrix transform -> scaling -> decoupled weight decay and apply

One optimizer object trains a whole model: each parameter group is either a matrix group
(``use_muon=True``: hidden weight matrices, conv kernels flattened to matrices) or an AdamW group
(``use_muon=False``: embeddings, output heads, norms, biases). A group that does not say is split
at construction: its parameters with ndim >= 2 go to a matrix group, the rest to an AdamW group
with the ``adamw_*`` hyperparameters. The AdamW group's own ``lr`` is its AdamW learning rate,
so ``torch.optim.lr_scheduler`` schedules both kinds of group unchanged.

A family member is a subclass that overrides some of the stages:

- ``_prepare(M, group)``: the momentum matrices (k, m, n) of one shape before the transform
  (ROOT's outlier suppression);
- ``_transform(M, group)``: the batched matrix transform (Muon: the orthogonal polar factor by a
  fixed number of Newton–Schulz-type steps);
- ``_scale(O, param, state, group)``: the transformed update of one parameter, as a tensor of the
  parameter's shape before the learning rate (the shape rule ``adjust_lr``; AdaMuon/NorMuon's
  second moments);

and declares its own hyperparameters in ``_family_defaults`` / ``_check_family``.
The transforms of a step are independent across matrices; ``_run_transforms`` batches the
same-shaped ones and is where the distributed version shares the work between ranks.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from .adamw import adamw_step, init_adamw_state
from .distributed import (ProcessGroupOption, agree_across_shards, check_process_group, check_sharded_heads,
                          local_tensor, run_transforms)
from .finite import first_nonfinite_group
from .matrices import check_matrix_parameter, matrix_view
from .momentum import ema_momentum
from .scaling import ADJUST_LR_RULES, adjust_lr_factor
from .validate import (
    check_betas,
    check_choice,
    check_gradient,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_unit_interval,
)

ADAMW_KEYS = ("adamw_lr", "adamw_betas", "adamw_eps", "adamw_wd")


class MatrixOptimizer(torch.optim.Optimizer):
    """Base class: the pipeline, the AdamW groups and the torch.optim contract.

    Matrix-group hyperparameters: ``lr``, ``momentum`` (EMA coefficient), ``nesterov``,
    ``weight_decay`` (decoupled, multiplied by ``lr`` as in torch.optim.Muon), ``adjust_lr``
    (see ``scaling``), ``per_head``. AdamW-group hyperparameters: ``adamw_lr``, ``adamw_betas``,
    ``adamw_eps``, ``adamw_wd``. ``process_group`` (None, "auto" or a ProcessGroup): the ranks
    that share the transforms of replicated (DDP) matrices; sharded (FSDP2/DTensor) matrices use
    their own mesh (see ``optim.distributed``).
    """

    _family_defaults: dict[str, Any] = {}
    # Not a group option (a ProcessGroup is no state to save); the class default survives pickling.
    process_group: ProcessGroupOption = None

    def __init__(self, params: Iterable[Any], *, lr: float, momentum: float, nesterov: bool,
                 weight_decay: float, adjust_lr: str, per_head: int, adamw_lr: float,
                 adamw_betas: tuple[float, float], adamw_eps: float, adamw_wd: float,
                 process_group: ProcessGroupOption = None, **family: Any) -> None:
        check_process_group(process_group)
        self.process_group = process_group
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        adjust_lr=adjust_lr, per_head=per_head, adamw_lr=adamw_lr,
                        adamw_betas=tuple(adamw_betas), adamw_eps=adamw_eps, adamw_wd=adamw_wd,
                        use_muon=None, **family)
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ groups and validation

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; one that does not set ``use_muon`` is split into a matrix and an AdamW group."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        use_muon = param_group.get("use_muon", None)
        if use_muon is None:
            matrices = [p for p in params if p.ndim >= 2]
            others = [p for p in params if p.ndim < 2]
            parts = [(True, matrices), (False, others)]
        else:
            parts = [(bool(use_muon), params)]
        for is_matrix, part in parts:
            if part or len(parts) == 1:
                group = {**param_group, "params": part, "use_muon": is_matrix}
                if not is_matrix:
                    group = self._as_adamw_group(group, explicit=use_muon is not None)
                super().add_param_group(group)
                self._check_group(self.param_groups[-1])

    def _as_adamw_group(self, group: dict[str, Any], *, explicit: bool) -> dict[str, Any]:
        """An AdamW group keeps its hyperparameters under torch.optim's names (lr, betas, eps,
        weight_decay), so schedulers and tools that read ``group["lr"]`` see the AdamW values.

        In a group the caller marked ``use_muon=False`` those names are AdamW's own; in a group
        split automatically they are the matrix group's, and the ``adamw_*`` keys apply.
        """
        def pick(name: str, adamw_name: str) -> Any:
            if explicit and name in group:
                return group[name]
            return group.get(adamw_name, self.defaults[adamw_name])

        return {**group, "lr": pick("lr", "adamw_lr"), "betas": tuple(pick("betas", "adamw_betas")),
                "eps": pick("eps", "adamw_eps"), "weight_decay": pick("weight_decay", "adamw_wd")}

    def _check_group(self, group: dict[str, Any]) -> None:
        if group["use_muon"]:
            self._check_hyperparameters(group)
            for p in group["params"]:
                check_matrix_parameter(p, group["per_head"])
                check_sharded_heads(p, group["per_head"])
        else:
            check_nonnegative("adamw_lr", group["lr"])
            check_betas("adamw_betas", group["betas"])
            check_positive("adamw_eps", group["eps"])
            check_nonnegative("adamw_wd", group["weight_decay"])

    def _check_hyperparameters(self, h: dict[str, Any]) -> None:
        check_nonnegative("lr", h["lr"])
        check_unit_interval("momentum", h["momentum"])
        if not isinstance(h["nesterov"], bool):
            raise TypeError(f"nesterov must be a bool, got {h['nesterov']!r}")
        check_nonnegative("weight_decay", h["weight_decay"])
        check_choice("adjust_lr", h["adjust_lr"], ADJUST_LR_RULES)
        check_positive_int("per_head", h["per_head"])
        check_nonnegative("adamw_lr", h["adamw_lr"])
        check_betas("adamw_betas", h["adamw_betas"])
        check_positive("adamw_eps", h["adamw_eps"])
        check_nonnegative("adamw_wd", h["adamw_wd"])
        self._check_family(h)

    def _check_family(self, h: dict[str, Any]) -> None:
        """Validate the family member's own hyperparameters (a subclass hook)."""

    # ------------------------------------------------------------------ the stages

    def _prepare(self, M: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        return M

    def _transform(self, M: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def _scale(self, O: torch.Tensor, param: torch.Tensor, state: dict, group: dict[str, Any]) -> torch.Tensor:
        """Default scaling: the ``adjust_lr`` factor of the (per-head) matrix shape."""
        rows, cols = O.shape[-2:]
        return O.reshape(param.shape) * adjust_lr_factor(group["adjust_lr"], rows, cols)

    def _run_transforms(self, matrices: list[torch.Tensor],
                        transform: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        return run_transforms(matrices, transform, self.process_group)

    def _init_matrix_state(self, state: dict, param: torch.Tensor, group: dict[str, Any]) -> None:
        """Create the per-parameter state of a matrix parameter (subclasses add their buffers)."""
        state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient; ``closure`` re-evaluates the loss first.

        Raises ``FloatingPointError`` naming the param group, with every parameter and all of the
        optimizer state unchanged, if a gradient or a momentum buffer has nan or inf entries.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                check_gradient(p, type(self).__name__)
                if group["use_muon"]:  # per_head may have been changed since the group was added
                    check_sharded_heads(p, group["per_head"])
            work.append((group, params))
        self._check_finite(work)
        for group, params in work:
            if group["use_muon"]:
                self._matrix_step(group, params)
            else:
                self._adamw_step(group, params)
        return loss

    def _check_finite(self, work: list[tuple[dict[str, Any], list[torch.Tensor]]]) -> None:
        """One fused reduction over the gradients and momentum buffers of all groups, one host sync
        (and, for sharded parameters, one small all-reduce so that every rank decides alike)."""
        tensors = []
        for group, params in work:
            buffers = [self.state[p]["momentum_buffer"] for p in params
                       if group["use_muon"] and "momentum_buffer" in self.state[p]]
            tensors.append([local_tensor(t) for t in [p.grad for p in params] + buffers])
        params = [p for _, group_params in work for p in group_params]
        bad = first_nonfinite_group(tensors, lambda flags: agree_across_shards(flags, params))
        if bad is not None:
            group = work[bad][0]
            kind = "a matrix" if group["use_muon"] else "an AdamW"
            label = f" ({group['name']!r})" if "name" in group else ""
            raise FloatingPointError(
                f"{type(self).__name__}.step: param group {bad}{label}, {kind} group, has a gradient "
                "or momentum with nan or inf entries; the step was not taken: parameters and optimizer "
                "state are unchanged")

    def _matrix_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        if not params:
            return
        states = [self.state[p] for p in params]
        for p, s in zip(params, states):
            if "momentum_buffer" not in s:
                self._init_matrix_state(s, p, group)
        directions = ema_momentum([s["momentum_buffer"] for s in states], [p.grad for p in params],
                                  group["momentum"], group["nesterov"])
        heads = group["per_head"]
        matrices = [matrix_view(d, heads) for d in directions]
        transformed = self._run_transforms(
            matrices, lambda M: self._transform(self._prepare(M, group), group))
        updates = [self._scale(O, p, s, group) for O, p, s in zip(transformed, params, states)]
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_add_(params, updates, alpha=-lr)

    def _adamw_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        states = [self.state[p] for p in params]
        for p, s in zip(params, states):
            init_adamw_state(s, p)
        adamw_step(params, [p.grad for p in params], states, lr=group["lr"], betas=group["betas"],
                   eps=group["eps"], weight_decay=group["weight_decay"])
