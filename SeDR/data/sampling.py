"""Which queries share a training micro-batch and which documents share an encoding pass.

* :class:`SegmentBudgetBatchSampler` packs training queries while their positives' segment total
  fits ``max_bsize`` (no look-ahead, no reordering), with per-rank shares under DDP.
* :func:`document_batches` packs documents in offset order for inference.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


def cap_hard_negative_segments(counts: Sequence[int], budget: int) -> list[int]:
    """Cap segment counts in order so the total stays within ``budget``; later ones keep >= 1."""
    caps, left, H = [], int(budget), len(counts)
    for k, s in enumerate(counts):
        c = max(1, min(int(s), left - (H - k - 1)))
        caps.append(c)
        left -= c
    return caps


def pack_by_segment_budget(seg_counts: Sequence[int], max_bsize: int) -> list[list[int]]:
    """Group indices ``0..n-1`` in order, popping from the front while the total fits.

    No look-ahead and no reordering; an item larger than the budget forms a group on its own.
    """
    groups: list[list[int]] = []
    stream = deque(range(len(seg_counts)))
    while stream:
        group = [stream.popleft()]
        used = int(seg_counts[group[0]])
        while stream and used + int(seg_counts[stream[0]]) <= max_bsize:
            used += int(seg_counts[stream[0]])
            group.append(stream.popleft())
        groups.append(group)
    return groups


@dataclass(frozen=True)
class TrainItem:
    """One drawn training query with its sampled positive and hard negatives (document offsets)."""

    query: int
    positive: int
    negatives: tuple[int, ...]


def without_hard_negatives(query_offsets: Sequence[int], hard_negatives: dict) -> str | None:
    """What is wrong when training queries have no hard negative (``None`` when each has one)."""
    missing = [q for q in query_offsets if not hard_negatives.get(q)]
    if not missing:
        return None
    return (
        f"{len(missing)} training queries have no hard negatives (e.g. query offset "
        f"{missing[0]}); regenerate them with `SeDR/inference.py --gen_hardneg`"
    )


class SegmentBudgetBatchSampler:
    """Packs training queries into micro-batches whose positives hold at most ``max_bsize`` segments.

    Per epoch: a permutation of the training queries from a seeded RNG (replacing the original's
    ``random.sample`` on a set, docs/deviations.md#dev-query-shuffle); each query draws, in order, a positive
    uniformly from its relevant documents and ``hard_num`` negatives uniformly from the first ``hardneg_topk``
    entries of its hard-negative list. Items are popped from the front of that stream while the
    positives' segment total fits the budget; no look-ahead, no reordering.
    A single item larger than the budget forms a batch on its own.

    Under DDP every rank computes the same epoch plan and takes micro-batches
    ``rank, rank + world_size, ...``, cut to a common count so all ranks step together.
    """

    def __init__(
        self,
        query_offsets: Sequence[int],
        rel: dict[int, list[int]],
        hard_negatives: dict[int, list[int]],
        doc_seg_counts: np.ndarray,
        max_bsize: int,
        hardneg_topk: int,
        hard_num: int = 1,
        seed: int = 42,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.rank, self.world_size = rank, world_size
        self.query_offsets = [int(q) for q in query_offsets]
        self.rel, self.hard_negatives = rel, hard_negatives
        self.doc_seg_counts = np.asarray(doc_seg_counts)
        self.max_bsize, self.hardneg_topk, self.hard_num = int(max_bsize), int(hardneg_topk), int(hard_num)
        self.seed = seed
        self.epoch = 0
        self._plan: list[list[TrainItem]] | None = None
        if problem := without_hard_negatives(self.query_offsets, hard_negatives):
            raise ValueError(problem)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._plan = None
        self.epoch = epoch

    def _draw(self, rng: random.Random, q: int) -> TrainItem:
        pos = rng.choice(self.rel[q])
        pool = self.hard_negatives[q][: self.hardneg_topk]
        if self.hard_num == 1:
            negs = (rng.choice(pool),)
        else:
            negs = tuple(
                rng.sample(pool, self.hard_num)
                if len(pool) >= self.hard_num
                else rng.choices(pool, k=self.hard_num)
            )
        return TrainItem(q, int(pos), tuple(int(n) for n in negs))

    def plan(self) -> list[list[TrainItem]]:
        """The epoch's micro-batches (deterministic in ``seed`` and ``epoch``)."""
        if self._plan is None:
            rng = random.Random(self.seed * 1_000_003 + self.epoch)
            order = list(self.query_offsets)
            rng.shuffle(order)
            items = [self._draw(rng, q) for q in order]
            groups = pack_by_segment_budget(
                [int(self.doc_seg_counts[it.positive]) for it in items], self.max_bsize
            )
            batches = [[items[i] for i in g] for g in groups]
            self._plan = batches
        return self._plan

    def local_plan(self) -> list[list[TrainItem]]:
        """This rank's share of the epoch plan (all of it in a single process)."""
        plan = self.plan()
        if self.world_size == 1:
            return plan
        per_rank = len(plan) // self.world_size
        return plan[self.rank : per_rank * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[list[TrainItem]]:
        return iter(self.local_plan())

    def __len__(self) -> int:
        return len(self.local_plan())


class ItemDataset(torch.utils.data.Dataset):
    """Identity dataset so a :class:`SegmentBudgetBatchSampler` can drive a ``DataLoader``."""

    def __getitem__(self, item):
        return item

    def __len__(self) -> int:  # pragma: no cover - never called with a batch sampler
        raise TypeError("ItemDataset is indexed by the batch sampler's items")


def document_batches(
    seg_counts: np.ndarray, max_bsize: int, start: int = 0, end: int | None = None
) -> Iterator[list[int]]:
    """Offsets ``start..end-1`` in order, packed while the segment total stays within ``max_bsize``."""
    end = len(seg_counts) if end is None else end
    batch: list[int] = []
    used = 0
    for d in range(start, end):
        s = int(seg_counts[d])
        if batch and used + s > max_bsize:
            yield batch
            batch, used = [], 0
        batch.append(d)
        used += s
    if batch:
        yield batch
