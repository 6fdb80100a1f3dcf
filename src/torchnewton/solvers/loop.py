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
    is); without it the masking always runs and nothing is read back. Only the tensor fields
    that the step replaced are masked.
    """
    if check and not bool(done.any()):
        return new
    updates: dict[str, torch.Tensor] = {}
    rows: list[torch.Tensor] = []  # the indices of the done members, found once if needed
    for name in _field_names(old):
        a, b = getattr(old, name), getattr(new, name)
        if a is b:  # a field the step left untouched (or wrote in place) needs no masking
            continue
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() > 0:
            updates[name] = _keep_rows(done, a, b, rows)
    return dataclasses.replace(new, **updates) if updates else new


def _keep_rows(done: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
    """``a`` in the rows where ``done``, ``b`` elsewhere (a new tensor, as ``torch.where``).

    On the CPU, ``torch.where`` with a mask broadcast along the rows runs element by element,
    about 5x the time of a copy on a (64, 1024) field; there a clone of ``b`` with the done rows
    copied in from ``a`` gives the same values (a copy, bit for bit) at the cost of one host
    read of the done indices, which is free on the CPU. Small rows, other devices and mixed
    dtypes keep ``torch.where``.
    """
    if done.is_cpu and a.dtype == b.dtype and a.shape == b.shape and a[0].numel() >= _ROW_COPY_MIN:
        if not rows:
            rows.append(done.nonzero().squeeze(1))
        return b.clone().index_copy_(0, rows[0], a.index_select(0, rows[0]))
    return torch.where(done.view(done.shape + (1,) * (b.dim() - 1)), a, b)


_ROW_COPY_MIN = 256  # elements per member from which the row copy beats torch.where on the CPU


def _field_names(state: Any) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(type(state))
    if names is None:
        names = _FIELD_NAMES[type(state)] = tuple(f.name for f in dataclasses.fields(state))
    return names


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


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
    # a member's count is the iteration in which it finished, written then; members still running
    # at the end get the number of iterations run
    nit = torch.zeros(batch, dtype=torch.long, device=x0.device)
    steps = 0
    for k in range(max_iter):
        if k % sync_every == 0 and bool(done.all()):
            break
        state = freeze(done, state, method.step(problem, state, ~done), check=sync_every == 1)
        steps = k + 1
        now_done, code = method.terminate(problem, state)
        finished = now_done & ~done
        # read back only where that is free (sync_every == 1): an iteration that ends nobody
        # then skips the updates, which would leave the tensors as they are
        if sync_every != 1 or bool(finished.any()):
            status = torch.where(finished, code, status)
            nit = torch.where(finished, steps, nit)
            done = done | now_done
        if record is not None:
            history.append(record(problem, state))
        if callback is not None and callback(state) is True:
            status = torch.where(done, status, torch.full_like(status, int(Status.CALLBACK_STOP)))
            nit = torch.where(done, nit, steps)
            done = torch.ones_like(done)
            break
    nit = torch.where(done, nit, steps)
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
