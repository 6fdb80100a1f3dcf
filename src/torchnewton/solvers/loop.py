"""The one iteration loop behind every iterative method in torchnewton.

A method is any object with three parts (the optimistix ``iterative_solve`` model):

* ``init(problem, x0) -> state``
* ``step(problem, state, running) -> state``: ``running`` (B,) bool marks the members not yet
  done; the loop freezes the others afterwards, so a step may skip work for them
* ``terminate(problem, state) -> (done, status)``: a bool tensor (B,) and an int64 tensor (B,)
  of :class:`~torchnewton.core.status.Status` codes, read only where ``done`` is true.

and optionally ``record(problem, state) -> dict`` for the history. The state is a dataclass whose
tensor fields all carry the batch as their leading dimension. The loop freezes members of the
batch once they are done (their fields stop changing), counts iterations per member, calls the
callback, and turns members still running at ``max_iter`` into ``Status.MAX_ITER``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Protocol, TypeVar

import torch

from ..core.status import Status

S = TypeVar("S")


class IterativeMethod(Protocol[S]):
    def init(self, problem: Any, x0: torch.Tensor) -> S: ...

    def step(self, problem: Any, state: S, running: torch.Tensor) -> S: ...

    def terminate(self, problem: Any, state: S) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class LoopOutput(Generic[S]):
    state: S
    status: torch.Tensor  # int64 (B,)
    nit: torch.Tensor  # int64 (B,)
    history: list[dict[str, Any]] = field(default_factory=list)


def freeze(done: torch.Tensor, old: S, new: S) -> S:
    """Keep ``old`` for members of the batch that are done, ``new`` for the others."""
    if not bool(done.any()):
        return new
    updates = {}
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a is b:  # a field the step left untouched needs no masking
            continue
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() > 0:
            mask = done.view(done.shape + (1,) * (b.dim() - 1))
            updates[f.name] = torch.where(mask, a, b)
        else:
            updates[f.name] = b
    return dataclasses.replace(new, **updates)


def iterate(method: IterativeMethod[S], problem: Any, x0: torch.Tensor, *, max_iter: int,
            callback: Callable[[S], Any] | None = None, record_history: bool = False) -> LoopOutput[S]:
    """Run ``method`` from ``x0`` (B, ...) until every member is done or ``max_iter`` steps.

    ``callback(state)`` is called after every iteration; returning ``True`` stops the loop and
    members still running end with ``Status.CALLBACK_STOP``.
    """
    state = method.init(problem, x0)
    batch = x0.shape[0]
    status = torch.full((batch,), int(Status.RUNNING), dtype=torch.long, device=x0.device)
    nit = torch.zeros(batch, dtype=torch.long, device=x0.device)
    done, code = method.terminate(problem, state)
    status = torch.where(done, code, status)
    history: list[dict[str, Any]] = []
    record = getattr(method, "record", None)
    if record_history and record is not None:
        history.append(record(problem, state))
    for _ in range(max_iter):
        if bool(done.all()):
            break
        state = freeze(done, state, method.step(problem, state, ~done))
        nit = nit + (~done).long()
        now_done, code = method.terminate(problem, state)
        status = torch.where(now_done & ~done, code, status)
        done = done | now_done
        if record_history and record is not None:
            history.append(record(problem, state))
        if callback is not None and callback(state) is True:
            status = torch.where(done, status, torch.full_like(status, int(Status.CALLBACK_STOP)))
            done = torch.ones_like(done)
            break
    status = torch.where(done, status, torch.full_like(status, int(Status.MAX_ITER)))
    return LoopOutput(state=state, status=status, nit=nit, history=history)
