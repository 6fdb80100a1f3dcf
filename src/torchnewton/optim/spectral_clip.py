"""SPECTRA: spectral clipping of the matrix updates (and gradients) of any torch.optim optimizer.

Jiang, Semenov, Stich, "Enhancing LLM Training via Spectral Clipping" (ICML 2026). For a matrix
parameter X with learning rate η and decoupled weight decay λ, the wrapped optimizer's step
X_k -> X_{k+1}^base defines its update direction U_k (AdamW: m_hat / (sqrt(v_hat) + eps)),

    X_{k+1}^base = (1 - λη) X_k - η U_k,

and post-clipping replaces the step by

    X_{k+1} = (1 - λη) X_k - η clip_c(U_k),      clip_c(U) = P min(Σ, c) Q^T for U = P Σ Q^T,

so each step moves X by at most η c in spectral norm besides the decay: the paper shows this is
a composite Frank–Wolfe step over the spectral-norm ball of radius c. ``max_sv`` = c is per unit
learning rate, as in the paper, so it keeps its meaning under an lr schedule. Pre-clipping
(``pre_max_sv``, an absolute threshold) replaces each matrix gradient G by clip(G), in place as
``torch.nn.utils.clip_grad_norm_`` does, before the inner step: against the sparse spectral
spikes of stochastic-gradient noise.

U_k is recovered from the parameters before and after the inner step, so any optimizer works
unchanged. λ is the group's ``weight_decay`` when it is decoupled (AdamW, Adam with
decoupled_weight_decay=True, torch.optim.Muon, the Muon family here; or say so with
``decoupled_weight_decay=True``); otherwise (SGD, Adam) the decay is part of U and is clipped
with it. Parameters with ndim >= 2 are clipped, a conv kernel (out, in, kh, kw) as the
(out, in·kh·kw) matrix; the others keep the inner step. Same-shaped matrices share one batched
call of ``torchnewton.linalg.clip_singular_values``. A group's ``max_sv`` / ``pre_max_sv``
(None: off) can differ per group and can be changed between steps like ``lr``.

Differences from the paper's code: that code clips with the smooth map σ / sqrt(1 + σ²/c²)
(which also shrinks the singular values below c), multiplies the clipped update by
sqrt(max(1, rows / cols)), and holds c η constant during warmup; here the clipping is exact,
the factor is 1 (so a threshold above every update's spectral norm reproduces the inner
optimizer), and c is the group's ``max_sv`` at each step.

Rounding: U_k is recovered to about eps ||X_k|| / η (relative 1e-4 for float32 weights of size 1
and η = 1e-3); where nothing is clipped the result equals the inner step to a rounding of X.
The clipping itself errs by about eps sqrt(k) σ_max / c relative to c in its working precision
(see ``clip_singular_values``): 1e-3 in float32 for gradients whose top singular value is 1000 c;
``dtype=torch.float64`` removes that floor.

Example:
    >>> model = torch.nn.Linear(8, 4)
    >>> opt = SpectralClip(torch.optim.AdamW(model.parameters(), lr=1e-3), max_sv=1.0)
    >>> model(torch.randn(16, 8)).square().mean().backward(); opt.step(); opt.zero_grad()
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

import torch

from ..linalg.spectral_clip import CLIP_DTYPES, CLIP_METHODS, clip_singular_values
from .matrices import matrix_view, transform_by_shape
from .pipeline import MatrixOptimizer
from .validate import check_choice, check_gradient, check_positive

THRESHOLD_KEYS = ("max_sv", "pre_max_sv")
# Optimizers whose groups carry a decoupled weight_decay but no "decoupled_weight_decay" key.
_DECOUPLED = tuple(cls for cls in (getattr(torch.optim, "Muon", None), MatrixOptimizer) if cls is not None)


class SpectralClip(torch.optim.Optimizer):
    """Wrap ``optimizer``: clip each matrix update to spectral norm ``max_sv`` (per unit lr).

    Args:
        optimizer: any ``torch.optim.Optimizer``; the wrapper shares its ``param_groups`` and
            ``state``, so lr schedulers, ``state_dict`` and ``add_param_group`` act on both.
        max_sv: post-clipping threshold c > 0 of the update direction, or None (no post-clipping).
        pre_max_sv: pre-clipping threshold of the gradients, or None (default: off).
        method, steps, dtype: passed to ``clip_singular_values`` ("polar-express", 10 steps,
            and float32, or float64 for float64 parameters, by default).
        decoupled_weight_decay: whether the groups' ``weight_decay`` is decoupled; None detects
            it (see the module docstring).

    ``step(closure)``: a closure is passed to the inner optimizer, wrapped so that the gradients
    it computes are pre-clipped before the inner update uses them.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_sv: float | None,
                 pre_max_sv: float | None = None, *, method: str = "polar-express",
                 steps: int | None = None, dtype: torch.dtype | None = None,
                 decoupled_weight_decay: bool | None = None) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        _check_thresholds({"max_sv": max_sv, "pre_max_sv": pre_max_sv})
        check_choice("method", method, CLIP_METHODS)
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be a positive int or None, got {steps!r}")
        if dtype is not None and dtype not in CLIP_DTYPES:
            raise TypeError(f"dtype must be None, torch.float32 or torch.float64, got {dtype}")
        if decoupled_weight_decay is not None and not isinstance(decoupled_weight_decay, bool):
            raise TypeError(f"decoupled_weight_decay must be None or a bool, got {decoupled_weight_decay!r}")
        self.optimizer = optimizer
        self.method, self.steps, self.dtype = method, steps, dtype
        self.decoupled_weight_decay = decoupled_weight_decay
        # Optimizer.__setstate__ creates the hook registries without adding parameter groups:
        # the groups and the state stay the inner optimizer's (see the properties below).
        defaults = {**optimizer.defaults, "max_sv": max_sv, "pre_max_sv": pre_max_sv}
        torch.optim.Optimizer.__setstate__(self, {"defaults": defaults})
        self._fill_groups()

    # ------------------------------------------------------------------ shared with the inner optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> defaultdict:  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value: defaultdict) -> None:
        self.optimizer.state = value

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "defaults": self.defaults, "method": self.method,
                "steps": self.steps, "dtype": self.dtype,
                "decoupled_weight_decay": self.decoupled_weight_decay}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer; its ``max_sv`` / ``pre_max_sv`` default to the wrapper's."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        _check_thresholds(param_group)
        for key in THRESHOLD_KEYS:
            param_group.setdefault(key, self.defaults[key])
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict; its groups carry ``max_sv`` and ``pre_max_sv``."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        self._fill_groups()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _fill_groups(self) -> None:
        for group in self.param_groups:
            _check_thresholds(group)
            for key in THRESHOLD_KEYS:
                group.setdefault(key, self.defaults[key])

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Pre-clip the gradients, run the inner step, then clip each matrix update."""
        self._fill_groups()  # groups added to the inner optimizer directly, thresholds changed since
        if closure is None:
            self._pre_clip()
            inner_closure = None
        else:
            def inner_closure() -> Any:
                loss = closure()
                with torch.no_grad():
                    self._pre_clip()
                return loss
        # A closure computes the gradients inside the inner step, so every trainable matrix
        # is saved; without one only those with a gradient can change.
        before = {p: p.detach().clone() for group in self.param_groups if group["max_sv"] is not None
                  for p in group["params"]
                  if p.ndim >= 2 and (p.grad is not None if closure is None else p.requires_grad)}
        loss = self.optimizer.step(inner_closure)
        self._post_clip(before)
        return loss

    def _pre_clip(self) -> None:
        grads, jobs = [], []
        for group in self.param_groups:
            if group["pre_max_sv"] is None:
                continue
            for p in group["params"]:
                if p.grad is not None and p.ndim >= 2:
                    check_gradient(p, type(self).__name__)
                    grads.append(p.grad)
                    jobs.append((p.grad.to(_accumulation_dtype(p)), group["pre_max_sv"]))
        for grad, clipped in zip(grads, self._clip(jobs)):
            grad.copy_(clipped.reshape(grad.shape))

    def _post_clip(self, before: dict[torch.Tensor, torch.Tensor]) -> None:
        targets, jobs = [], []
        for group in self.param_groups:
            lr = float(group["lr"])
            if group["max_sv"] is None or lr == 0.0:
                continue
            decay = 1.0 - lr * float(group.get("weight_decay", 0.0)) if self._decoupled(group) else 1.0
            for p in group["params"]:
                if p not in before or p.grad is None:
                    continue
                check_gradient(p, type(self).__name__)
                work = _accumulation_dtype(p)
                decayed = before[p].to(work) * decay
                update = (decayed - p.to(work)) / lr  # U_k of the inner step
                targets.append((p, decayed, lr))
                jobs.append((update, group["max_sv"]))
        for (p, decayed, lr), clipped in zip(targets, self._clip(jobs)):
            p.copy_(decayed - lr * clipped.reshape(p.shape))

    def _clip(self, jobs: list[tuple[torch.Tensor, float]]) -> list[torch.Tensor]:
        """Clip each (tensor, threshold) as a matrix; one batched call per threshold, device, dtype, shape."""
        buckets: dict[tuple, list[int]] = defaultdict(list)
        for i, (tensor, c) in enumerate(jobs):
            buckets[(float(c), tensor.device, tensor.dtype)].append(i)
        out: list[torch.Tensor | None] = [None] * len(jobs)
        for (c, _, _), indices in buckets.items():
            clip = lambda M, c=c: clip_singular_values(M, c, method=self.method, steps=self.steps,
                                                       dtype=self.dtype, check_finite=False)
            results = transform_by_shape([matrix_view(jobs[i][0], 1) for i in indices], clip)
            for i, result in zip(indices, results):
                out[i] = result
        return out  # type: ignore[return-value]

    def _decoupled(self, group: dict[str, Any]) -> bool:
        if self.decoupled_weight_decay is not None:
            return self.decoupled_weight_decay
        if "decoupled_weight_decay" in group:
            return bool(group["decoupled_weight_decay"])
        return isinstance(self.optimizer, _DECOUPLED)


def _accumulation_dtype(param: torch.Tensor) -> torch.dtype:
    """U_k and the new parameters are formed in the parameter's precision, at least float32."""
    return torch.promote_types(param.dtype, torch.float32)


def _check_thresholds(values: dict[str, Any]) -> None:
    for key in THRESHOLD_KEYS:
        if values.get(key) is not None:
            check_positive(key, values[key])
