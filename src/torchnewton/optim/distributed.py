"""The matrix transforms of one optimizer step, shared between the ranks of ``torch.distributed``.

The transform (Muon's polar factor, a family member's filter) is the only stage of the pipeline
that needs whole matrices; momentum, scaling, weight decay and the AdamW groups are elementwise.
Its cost, about m·n·min(m, n) flops per m×n matrix, is what a data-parallel run would otherwise
repeat on every rank. Two layouts of the parameters, both on ``torch.distributed`` collectives:

- **Replicated** (DDP: every rank holds every matrix and the same all-reduced gradient, so the same
  momentum). Each rank transforms its share of the matrices (attention heads count as separate
  matrices), then one ``all_gather`` of equal-length buffers (one per dtype) hands every rank every
  result (per param group). Chosen by the optimizer's ``process_group``; every rank must step the
  same matrices.
- **Sharded** (FSDP2 ``fully_shard``, or any ``DTensor`` with one ``Shard`` placement on a 1-D
  mesh). Each matrix has an owner rank: one ``all_to_all_single`` sends the owners the shards of
  their matrices, the owners transform the full matrices, a second ``all_to_all_single`` sends
  every rank its shard of the results (two collectives per param group and dtype, and only the
  owner ever holds a full matrix). A stack of heads sharded along the head dimension needs no
  communication: each rank holds whole heads. Chosen by the parameters themselves; needs no
  ``process_group``.

With ``per_head = k`` a row-sharded matrix is viewed as k heads; that view exists only when every
rank holds whole heads, i.e. when the world size divides k (``check_sharded_heads`` says so before
a step starts, instead of DTensor failing midway with the momentum already updated). Replicated
matrices have no such constraint: each head is a unit of its own.

Owners are assigned by longest-processing-time-first on the cost m·n·min(m, n) (Graham, "Bounds on
multiprocessing timing anomalies", 1969: within 4/3 of the best makespan), deterministically, so
every rank computes the same plan without communicating. The results equal a single-process step
up to the rounding of different batch sizes in the batched matrix products (bitwise equal on CPU
in the tests). The replicated layout is that of Jordan's reference Muon (matrices dealt to ranks,
then all-gathered), with cost-balanced owners; for sharded parameters Liu et al., "Muon is
Scalable for LLM Training" (2025), gather each full matrix on every rank and compute it there
redundantly, where here only its owner receives it.

Example (every rank of a DDP job; ``process_group="auto"`` is the default group)::

    model = DistributedDataParallel(net)
    opt = torchnewton.optim.Muon(model.parameters(), lr=0.02, process_group="auto")
"""
from __future__ import annotations

import heapq
import sys
from collections import defaultdict
from functools import lru_cache
from typing import Any, Union

import torch
import torch.distributed as dist

from .matrices import BatchedTransform, transform_by_shape

ProcessGroupOption = Union["dist.ProcessGroup", str, None]


def check_process_group(process_group: Any) -> None:
    """``process_group`` is None, "auto" or a ``torch.distributed.ProcessGroup``."""
    if process_group is None or (isinstance(process_group, str) and process_group == "auto"):
        return
    if isinstance(process_group, str):
        raise ValueError(f"process_group must be None, 'auto' or a torch.distributed.ProcessGroup, "
                         f"got {process_group!r}")
    if not (dist.is_available() and isinstance(process_group, dist.ProcessGroup)):
        raise TypeError(f"process_group must be None, 'auto' or a torch.distributed.ProcessGroup, "
                        f"got {type(process_group).__name__}")


def resolve_process_group(process_group: ProcessGroupOption) -> "dist.ProcessGroup | None":
    """The group that shares the replicated matrices, or None where there is nothing to share.

    "auto" is the default group once ``torch.distributed`` is initialized; a group of one rank
    is None.
    """
    if process_group is None or not (dist.is_available() and dist.is_initialized()):
        return None
    group = dist.group.WORLD if isinstance(process_group, str) else process_group
    return group if dist.get_world_size(group) > 1 else None


def check_sharded_heads(param: Any, per_head: int) -> None:
    """Raise ``ValueError`` naming ``per_head`` if a sharded (DTensor) parameter cannot be split
    into ``per_head`` row blocks shard by shard; plain tensors always can.

    Its rows are split by ``torch.chunk`` over the mesh's W ranks; the heads are whole on every
    rank exactly when W divides per_head (then W divides the rows and each chunk is per_head / W
    heads). One head (per_head = 1) is the whole matrix, gathered to its owner; columns-sharded
    matrices keep whole rows, so any per_head fits them.
    """
    tensor_module = _dtensor_module()
    if tensor_module is None or not isinstance(param, tensor_module.DTensor):
        return
    dim = _shard_dim(param)
    world = param.device_mesh.size()
    if dim == 0 and per_head > 1 and per_head % world:
        raise ValueError(
            f"per_head={per_head} does not fit a parameter of shape {tuple(param.shape)} whose rows are "
            f"sharded over {world} ranks (FSDP2): every rank must hold whole heads, so per_head must be a "
            f"multiple of the world size {world}; set per_head to a multiple of {world}, or shard this "
            "parameter along another dimension, or keep it replicated (DDP)")


def local_tensor(tensor: Any) -> torch.Tensor:
    """This rank's part of ``tensor``: the local shard of a DTensor, a plain tensor itself."""
    tensor_module = _dtensor_module()
    if tensor_module is not None and isinstance(tensor, tensor_module.DTensor):
        return tensor.to_local()
    return tensor


def agree_across_shards(flags: torch.Tensor, params: list[Any]) -> torch.Tensor:
    """``flags`` (any shape, bool) or-ed over the ranks of every mesh that shards one of ``params``.

    A check on local shards sees only this rank's part; every rank must take the same decision
    (raise, or step and enter the collectives), so the flags are all-reduced (one small
    collective per mesh). Replicated parameters need none: every rank holds the same values.
    """
    tensor_module = _dtensor_module()
    if tensor_module is None:
        return flags
    meshes = {id(p.device_mesh): p.device_mesh for p in params if isinstance(p, tensor_module.DTensor)}
    if not meshes:
        return flags
    agreed = flags.to(torch.int32)
    for mesh in meshes.values():
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX, group=mesh.get_group())
    return agreed.bool()


def transform_cost(rows: int, cols: int) -> int:
    """Flops of one product of a Newton–Schulz-type step, up to a constant: m·n·min(m, n)."""
    return rows * cols * min(rows, cols)


@lru_cache(maxsize=64)
def balanced_owners(costs: tuple[int, ...], world_size: int) -> tuple[int, ...]:
    """The rank that transforms each matrix: longest first, each to the least-loaded rank.

    Ties go to the lower index and the lower rank, so every rank computes the same plan.

    Example:
        >>> balanced_owners((8, 1, 4, 4), 2)
        (0, 0, 1, 1)
    """
    if world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    owners = [0] * len(costs)
    loads = [(0, rank) for rank in range(world_size)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        owners[index] = rank
        heapq.heappush(loads, (load + costs[index], rank))
    return tuple(owners)


def run_transforms(matrices: list[torch.Tensor], transform: BatchedTransform,
                   process_group: ProcessGroupOption) -> list[torch.Tensor]:
    """``transform`` of every (k, m, n) stack in ``matrices``, the work shared between ranks.

    ``DTensor`` stacks take the sharded path on their own mesh; plain tensors are replicated
    across ``process_group`` (or transformed locally when it resolves to None). The transform
    must act on each matrix of a batch independently and keep the dtype and shape.
    """
    tensor_module = _dtensor_module()
    is_sharded = [tensor_module is not None and isinstance(M, tensor_module.DTensor) for M in matrices]
    out: list[torch.Tensor | None] = [None] * len(matrices)
    plain = [i for i, sharded in enumerate(is_sharded) if not sharded]
    group = resolve_process_group(process_group)
    if plain:
        tensors = [matrices[i] for i in plain]
        results = (transform_by_shape(tensors, transform) if group is None
                   else replicated_transforms(tensors, transform, group))
        for i, result in zip(plain, results):
            out[i] = result
    sharded = [i for i, s in enumerate(is_sharded) if s]
    if sharded:
        for i, result in zip(sharded, sharded_transforms([matrices[i] for i in sharded], transform)):
            out[i] = result
    return out  # type: ignore[return-value]


def replicated_transforms(matrices: list[torch.Tensor], transform: BatchedTransform,
                          group: "dist.ProcessGroup") -> list[torch.Tensor]:
    """Every rank transforms its share of the single matrices, then one all-gather per dtype."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    units = [(i, h) for i, M in enumerate(matrices) for h in range(M.shape[0])]
    owners = balanced_owners(tuple(transform_cost(*matrices[i].shape[-2:]) for i, _ in units), world)
    mine = [u for u, owner in zip(units, owners) if owner == rank]
    inputs = [matrices[i][h:h + 1] for i, h in mine]
    computed = dict(zip(mine, _checked(transform_by_shape(inputs, transform), inputs)))
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for u, (i, _) in enumerate(units):
        buckets[(matrices[i].dtype, matrices[i].device)].append(u)
    pieces: dict[tuple[int, int], torch.Tensor] = {}
    for (dtype, device), members in buckets.items():
        by_rank = [[units[u] for u in members if owners[u] == r] for r in range(world)]
        lengths = [sum(matrices[i][0].numel() for i, _ in part) for part in by_rank]
        width = max(lengths)
        send = torch.zeros(width, dtype=dtype, device=device)
        if by_rank[rank]:
            torch.cat([computed[u].reshape(-1) for u in by_rank[rank]], out=send[:lengths[rank]])
        gathered = torch.empty(world * width, dtype=dtype, device=device)
        dist.all_gather(list(gathered.chunk(world)), send, group=group)
        for r, part in enumerate(by_rank):
            offset = r * width
            for i, h in part:
                size = matrices[i][0].numel()
                pieces[(i, h)] = gathered[offset:offset + size].view(1, *matrices[i].shape[1:])
                offset += size
    return [pieces[(i, 0)] if M.shape[0] == 1 else torch.cat([pieces[(i, h)] for h in range(M.shape[0])])
            for i, M in enumerate(matrices)]


def sharded_transforms(matrices: list[Any], transform: BatchedTransform) -> list[Any]:
    """Transform DTensor stacks: whole-matrix shards locally, the rest gathered to owner ranks."""
    dims = [_shard_dim(M) for M in matrices]
    out: list[Any] = [None] * len(matrices)
    local = [i for i, d in enumerate(dims) if d == 0]
    inputs = [matrices[i].to_local() for i in local]
    for i, result in zip(local, _checked(transform_by_shape(inputs, transform), inputs)):
        out[i] = _as_dtensor(result, matrices[i])
    gathered = [i for i, d in enumerate(dims) if d != 0]
    buckets: dict[Any, list[int]] = defaultdict(list)
    for i in gathered:
        M = matrices[i]
        buckets[(M.device_mesh, M.dtype, M.device)].append(i)
    for (mesh, _, _), members in buckets.items():
        stacks = [matrices[i] for i in members]
        for i, result in zip(members, _owner_transforms(stacks, [dims[i] for i in members], mesh, transform)):
            out[i] = result
    return out


def _owner_transforms(stacks: list[Any], dims: list[int], mesh: Any,
                      transform: BatchedTransform) -> list[Any]:
    """Shards to owners (all-to-all), transform there, result shards back (all-to-all)."""
    group, world, rank = mesh.get_group(), mesh.size(), mesh.get_local_rank()
    owners = balanced_owners(tuple(M.shape[0] * transform_cost(*M.shape[-2:]) for M in stacks), world)
    rows = [_chunk_sizes(M.shape[d], world) for M, d in zip(stacks, dims)]
    locals_ = [M.to_local() for M in stacks]
    for M, d, sizes, L in zip(stacks, dims, rows, locals_):
        if L.shape[d] != sizes[rank]:
            raise ValueError(f"a sharded parameter of shape {tuple(M.shape)} holds {L.shape[d]} of "
                             f"dimension {d} on rank {rank}, not the even split {sizes[rank]}; "
                             "only torch.chunk-style sharding is supported")
    mine = [j for j, owner in enumerate(owners) if owner == rank]

    def shard_numel(j: int, r: int) -> int:
        return stacks[j].numel() // stacks[j].shape[dims[j]] * rows[j][r]

    def shard_shape(j: int, r: int) -> list[int]:
        shape = list(stacks[j].shape)
        shape[dims[j]] = rows[j][r]
        return shape

    order = sorted(range(len(stacks)), key=lambda j: owners[j])  # by owner, then index
    # Sizes of this rank's shards per owner, and of every rank's shards of the matrices it owns.
    own_shards = [sum(shard_numel(j, rank) for j in order if owners[j] == o) for o in range(world)]
    owned_shards = [sum(shard_numel(j, r) for j in mine) for r in range(world)]
    received = _exchange(_flat([locals_[j] for j in order], locals_[0]), owned_shards, own_shards, group)
    offset = 0
    parts: dict[int, list[torch.Tensor]] = {j: [] for j in mine}
    for r in range(world):
        for j in mine:
            size = shard_numel(j, r)
            parts[j].append(received[offset:offset + size].view(shard_shape(j, r)))
            offset += size
    fulls = [torch.cat(parts[j], dim=dims[j]) for j in mine]
    results = _checked(transform_by_shape(fulls, transform), fulls)
    pieces = [result.split(rows[j], dim=dims[j]) for j, result in zip(mine, results)]
    send = _flat([piece[r] for r in range(world) for piece in pieces], locals_[0])
    received = _exchange(send, own_shards, owned_shards, group)
    out: list[Any] = [None] * len(stacks)
    offset = 0
    for j in order:
        size = shard_numel(j, rank)
        out[j] = _as_dtensor(received[offset:offset + size].view(shard_shape(j, rank)), stacks[j])
        offset += size
    return out


def _exchange(send: torch.Tensor, receive_sizes: list[int], send_sizes: list[int],
              group: "dist.ProcessGroup") -> torch.Tensor:
    received = send.new_empty(sum(receive_sizes))
    dist.all_to_all_single(received, send, receive_sizes, send_sizes, group=group)
    return received


def _flat(tensors: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    if not tensors:
        return like.new_empty(0)
    return torch.cat([t.reshape(-1) for t in tensors])


def _chunk_sizes(length: int, world: int) -> list[int]:
    """Rows of each rank under ``torch.chunk`` (DTensor's Shard): ceil-sized, the last ones short."""
    chunk = -(-length // world)
    return [max(0, min(chunk, length - r * chunk)) for r in range(world)]


def _dtensor_module() -> Any:
    """``torch.distributed.tensor`` if loaded: a DTensor cannot exist before (and importing it
    here would cost every user of the optimizers half a second)."""
    return sys.modules.get("torch.distributed.tensor")


def _shard_dim(M: Any) -> int:
    placements = M.placements
    if M.device_mesh.ndim != 1 or type(placements[0]) is not _dtensor_module().Shard:
        raise ValueError(f"a sharded matrix must be a DTensor with one Shard placement on a 1-D device "
                         f"mesh (FSDP2 fully_shard), got placements {tuple(placements)} on a "
                         f"{M.device_mesh.ndim}-D mesh")
    return placements[0].dim


def _as_dtensor(local: torch.Tensor, like: Any) -> Any:
    return _dtensor_module().DTensor.from_local(local, like.device_mesh, like.placements,
                                                run_check=False, shape=like.shape, stride=like.stride())


def _checked(results: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Other ranks size their buffers from the inputs: a transform must keep shape and dtype."""
    for result, source in zip(results, inputs):
        if result.shape != source.shape or result.dtype != source.dtype:
            raise RuntimeError(f"a matrix transform returned {tuple(result.shape)} {result.dtype} for a "
                               f"{tuple(source.shape)} {source.dtype} input; distributed steps need "
                               "transforms that keep shape and dtype")
    return results
