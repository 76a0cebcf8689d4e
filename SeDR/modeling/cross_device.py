"""Cross-device in-batch negatives (``--negatives_x_device``): every rank scores its queries against
the positives and hard negatives of all ranks.

Off by default: the paper trained on one GPU, so a rank's micro-batch is the paper's batch. On,
each rank's score matrix gains the other ranks' documents as extra negatives. Two pieces:

* :func:`gather_rows` concatenates a tensor's rows from all ranks in rank order with a
  differentiable all-gather, padding to the largest count first
  (segment-budget micro-batches hold different numbers of queries). Its backward sums every rank's
  gradient for a rank's rows into that rank, so with DDP's gradient averaging a step follows the
  gradient of the mean of the ranks' losses, the same objective as without gathering: no loss
  rescaling is needed.
* :func:`globalize_batch` rebuilds the false-negative masks (docs/training.md#false-negative-masks) for this
  rank's queries against the gathered documents, from the training relevance dict and the documents'
  corpus offsets (gathered as Python objects).

The Late-Cache stays per rank: a rank caches its own queries with their own documents.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.distributed as dist

from SeDR.data.collation import pair_masks


def _world() -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


class _GatherRows(torch.autograd.Function):
    """All-gather of equally sized blocks; backward sums every rank's gradient for this rank's block.

    Plain synchronous collectives (``all_gather`` forward, ``all_reduce`` backward): the
    functional-collective autograd all-gather left work behind that now and then aborted gloo
    processes at exit.
    """

    @staticmethod
    def forward(ctx, block: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()
        parts = [torch.empty_like(block) for _ in range(ctx.world)]
        dist.all_gather(parts, block)
        return torch.cat(parts)  # (world·most, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # Σ over ranks of d(loss_r)/d(gathered rows)
        return grad.chunk(ctx.world)[ctx.rank]


def gather_rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(rows of every rank concatenated in rank order, index of this rank's first row)``, with gradients.

    Single process: ``(t, 0)`` unchanged.
    """
    rank, world = _world()
    if world == 1:
        return t, 0
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    counts = [int(c) for c in counts]
    most = max(counts)
    padded = t
    if t.shape[0] < most:
        padded = torch.cat([t, t.new_zeros((most - t.shape[0],) + tuple(t.shape[1:]))])  # (most, ...)
    gathered = _GatherRows.apply(padded.contiguous())  # (world·most, ...)
    rows = torch.cat([gathered[r * most : r * most + c] for r, c in enumerate(counts)])  # (Σ counts, ...)
    return rows, sum(counts[:rank])


def gather_objects(obj) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    _, world = _world()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def globalize_batch(batch, rel: dict[int, list[int]]):
    """``batch`` with its masks widened to every rank's documents (a collective: all ranks must call it)."""
    mine = (batch.positives.doc_offsets.tolist(), batch.negatives.doc_offsets.tolist())
    everyone = gather_objects(mine)  # rank order, as gather_rows concatenates the vectors
    rel_mask, hard_mask = pair_masks(
        batch.queries.query_offsets.tolist(),
        rel,
        [d for p, _ in everyone for d in p],
        [d for _, n in everyone for d in n],
    )
    return replace(
        batch,
        rel_pair_mask=rel_mask.to(batch.rel_pair_mask.device),
        hard_pair_mask=hard_mask.to(batch.hard_pair_mask.device),
    )
