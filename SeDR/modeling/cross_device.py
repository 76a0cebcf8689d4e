"""Cross-device in-batch negatives (``--negatives_x_device``): every rank scores its queries against
the positives and hard negatives of all ranks.

Off by default: the paper trained on one GPU, so a rank's micro-batch is the paper's batch. On,
each rank's score matrix gains the other ranks' documents as extra negatives. Two pieces:

* :func:`gather_rows` concatenates a tensor's rows from all ranks in rank order with a
  differentiable all-gather (``torch.distributed.nn``), padding to the largest count first
  (segment-budget micro-batches hold different numbers of queries). Its backward sums every rank's
  gradient for a rank's rows into that rank, so with DDP's gradient averaging a step follows the
  gradient of the mean of the ranks' losses, the same objective as without gathering: no loss
  rescaling is needed.
* :func:`globalize_batch` rebuilds the false-negative masks of SPEC §4.2 for this rank's
  queries against the gathered documents, from the training relevance dict and the documents'
  corpus offsets (gathered as Python objects).

The Late-Cache stays per rank: a rank caches its own queries with their own documents.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from SeDR.data import pair_masks


def _world() -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(rows of every rank concatenated in rank order, index of this rank's first row)``, with gradients.

    Single process: ``(t, 0)`` unchanged.
    """
    rank, world = _world()
    if world == 1:
        return t, 0
    from torch.distributed import _functional_collectives as fc

    # The autograd all-gather of functional collectives, under its current name
    # (``all_gather_single_autograd``; ``all_gather_tensor_autograd`` in older torch, deprecated since).
    gather = getattr(fc, "all_gather_single_autograd", None) or fc.all_gather_tensor_autograd
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    counts = [int(c) for c in counts]
    most = max(counts)
    padded = t
    if t.shape[0] < most:
        padded = torch.cat([t, t.new_zeros((most - t.shape[0],) + tuple(t.shape[1:]))])  # (most, ...)
    # Differentiable; its backward reduce-scatters (sums) the gradients of every rank's copy.
    gathered = fc.wait_tensor(gather(padded.contiguous(), 0, dist.group.WORLD))  # (world·most, ...)
    rows = torch.cat([gathered[r * most: r * most + c] for r, c in enumerate(counts)])  # (Σ counts, ...)
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
    from dataclasses import replace

    mine = (batch.positives.doc_offsets.tolist(), batch.negatives.doc_offsets.tolist())
    everyone = gather_objects(mine)  # rank order, as gather_rows concatenates the vectors
    rel_mask, hard_mask = pair_masks(batch.queries.query_offsets.tolist(), rel,
                                     [d for p, _ in everyone for d in p], [d for _, n in everyone for d in n])
    return replace(batch, rel_pair_mask=rel_mask.to(batch.rel_pair_mask.device),
                   hard_pair_mask=hard_mask.to(batch.hard_pair_mask.device))
