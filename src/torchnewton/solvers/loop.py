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

Two paths, one loop body. A batch of one problem on the CPU (``globalize.members.lean``) runs
with Python control flow: the done flag is read back once per iteration (a free read on the
CPU), nothing is masked or frozen (the loop stops as soon as the one member is done), and the
counters are Python ints; the methods then choose their own scalar paths by the same test. A
larger batch, or one on an accelerator, tests ``done.all()`` on the host only every
``sync_every`` iterations (1 on the CPU, where a read-back costs nothing, 8 elsewhere):
between checks the steps run on members that may be done, whose results ``freeze`` discards
without a host read, so the loop itself issues no synchronization per iteration.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Protocol, TypeVar

import torch

from ..core.status import Status
from ..globalize.members import lean

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


def freeze(done: torch.Tensor, old: S, new: S, *, check: bool = True) -> S:
    """Keep ``old`` for members of the batch that are done, ``new`` for the others.

    ``check`` first asks the host whether any member is done (skipping the masking when none
    is); without it the masking always runs and nothing is read back.
    """
    if check and not bool(done.any()):
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
            callback: Callable[[S], Any] | None = None, record_history: bool = False,
            sync_every: int | None = None) -> LoopOutput[S]:
    """Run ``method`` from ``x0`` (B, ...) until every member is done or ``max_iter`` steps.

    ``callback(state)`` is called after every iteration; returning ``True`` stops the loop and
    members still running end with ``Status.CALLBACK_STOP``. ``sync_every`` sets how often a
    batched loop reads ``done.all()`` back (default 1 on the CPU, 8 on other devices).
    """
    state = method.init(problem, x0)
    record = getattr(method, "record", None) if record_history else None
    history: list[dict[str, Any]] = [] if record is None else [record(problem, state)]
    done, code = method.terminate(problem, state)
    if lean(x0):
        return _iterate_one(method, problem, state, done, code, max_iter, callback, record, history, x0.device)
    batch = x0.shape[0]
    sync_every = (1 if x0.device.type == "cpu" else 8) if sync_every is None else sync_every
    status = torch.where(done, code, torch.full((batch,), int(Status.RUNNING), dtype=torch.long, device=x0.device))
    nit = torch.zeros(batch, dtype=torch.long, device=x0.device)
    for k in range(max_iter):
        if k % sync_every == 0 and bool(done.all()):
            break
        state = freeze(done, state, method.step(problem, state, ~done), check=sync_every == 1)
        nit = nit + (~done).long()
        now_done, code = method.terminate(problem, state)
        status = torch.where(now_done & ~done, code, status)
        done = done | now_done
        if record is not None:
            history.append(record(problem, state))
        if callback is not None and callback(state) is True:
            status = torch.where(done, status, torch.full_like(status, int(Status.CALLBACK_STOP)))
            done = torch.ones_like(done)
            break
    status = torch.where(done, status, torch.full_like(status, int(Status.MAX_ITER)))
    return LoopOutput(state=state, status=status, nit=nit, history=history)


def _iterate_one(method: IterativeMethod[S], problem: Any, state: S, done: Any, code: Any, max_iter: int,
                 callback: Callable[[S], Any] | None, record: Callable | None,
                 history: list[dict[str, Any]], device: torch.device) -> LoopOutput[S]:
    """The loop for a batch of one on the CPU: the same steps, Python control flow around them."""
    running = torch.ones(1, dtype=torch.bool, device=device)
    finished = bool(done)
    status = int(code) if finished else int(Status.RUNNING)
    nit = 0
    for _ in range(max_iter):
        if finished:
            break
        state = method.step(problem, state, running)
        nit += 1
        done, code = method.terminate(problem, state)
        if bool(done):
            finished, status = True, int(code)
        if record is not None:
            history.append(record(problem, state))
        if callback is not None and callback(state) is True:
            status = status if finished else int(Status.CALLBACK_STOP)
            finished = True
            break
    status = status if finished else int(Status.MAX_ITER)
    return LoopOutput(state=state, status=torch.tensor([status], device=device),
                      nit=torch.tensor([nit], device=device), history=history)
