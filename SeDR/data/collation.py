"""Tensors from token arrays: the query view (docs/data.md#query-view), training batches with their
false-negative masks (docs/training.md#collation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from SeDR.core.constants import (
    CLS_ID,
    EOS_ID,
    PAD_ID,
)
from SeDR.data.batches import QueryBatch, TrainBatch
from SeDR.data.preprocess_folder import TokenCache
from SeDR.data.sampling import TrainItem, cap_hard_negative_segments
from SeDR.data.segmentation import SegmentSpec, collate_documents, num_segments


def truncate_query(ids: np.ndarray, max_query_length: int) -> np.ndarray:
    """Keep ``CLS``, the next ``Lq - 2`` tokens and the final ``EOS`` (unchanged if short enough)."""
    n = len(ids)
    s = min(max_query_length - 1, n - 1)
    return np.concatenate([ids[:1], ids[1:s], ids[n - 1 :]])


def collate_queries(
    items: Sequence[np.ndarray],
    offsets: Sequence[int],
    max_query_length: int,
    pad_id: int = PAD_ID,
    pad_to_max_length: bool = True,
) -> QueryBatch:
    """Truncate (keep the first and last token) and pad with ``PAD`` (mask 0)
    to ``max_query_length`` or to the batch maximum."""
    views = [truncate_query(np.asarray(x), max_query_length) for x in items]
    width = max_query_length if pad_to_max_length else max(len(v) for v in views)
    ids = torch.full((len(views), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(views), width), dtype=torch.long)
    for i, v in enumerate(views):
        ids[i, : len(v)] = torch.from_numpy(v)
        mask[i, : len(v)] = 1
    return QueryBatch(ids, mask, torch.as_tensor(list(offsets), dtype=torch.long))


class TrainCollator:
    """Turns a list of :class:`TrainItem` into a :class:`TrainBatch` (docs/training.md#collation)."""

    def __init__(
        self,
        passage_cache: TokenCache,
        query_cache: TokenCache,
        rel: dict[int, list[int]],
        spec: SegmentSpec,
        max_query_length: int,
        max_bsize: int,
        hard_num: int = 1,
        cls_id: int = CLS_ID,
        eos_id: int = EOS_ID,
        pad_id: int = PAD_ID,
        compact: bool = False,
        row_groups: bool = False,
    ):
        self.passages, self.queries, self.rel, self.spec = passage_cache, query_cache, rel, spec
        self.max_query_length, self.max_bsize, self.hard_num = max_query_length, max_bsize, hard_num
        self.ids = {"cls_id": cls_id, "eos_id": eos_id, "pad_id": pad_id}
        self.compact = compact
        self.row_groups = row_groups  # see collate_documents: rows bucketed by width, implies compact

    def __call__(self, items: Sequence[TrainItem]) -> TrainBatch:
        qs = [it.query for it in items]
        pos = [it.positive for it in items]
        negs = [n for it in items for n in it.negatives]
        queries = collate_queries(
            [self.queries[q] for q in qs],
            qs,
            self.max_query_length,
            pad_id=self.ids["pad_id"],
            pad_to_max_length=True,
        )
        positives = collate_documents(
            [self.passages[d] for d in pos],
            pos,
            self.spec,
            compact=self.compact,
            row_groups=self.row_groups,
            **self.ids,
        )
        neg_docs = [self.passages[d] for d in negs]
        caps = cap_hard_negative_segments(
            num_segments(np.array([len(d) for d in neg_docs]), self.spec), self.max_bsize * self.hard_num
        )
        negatives = collate_documents(
            neg_docs,
            negs,
            self.spec,
            seg_caps=caps,
            compact=self.compact,
            row_groups=self.row_groups,
            **self.ids,
        )
        rel_pair_mask, hard_pair_mask = pair_masks(qs, self.rel, pos, negs)
        return TrainBatch(queries, positives, negatives, rel_pair_mask, hard_pair_mask)


def pair_masks(
    query_offsets: Sequence[int],
    rel: dict[int, list[int]],
    positives: Sequence[int],
    negatives: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """False-negative masks (docs/training.md#false-negative-masks):
    ``(B, len(positives))`` and ``(B, len(negatives))``, 0 where relevant."""
    rel_sets = [set(rel.get(int(q), ())) for q in query_offsets]
    B = len(rel_sets)
    rel_pair_mask = torch.tensor([[0.0 if d in r else 1.0 for d in positives] for r in rel_sets]).reshape(
        B, -1
    )
    hard_pair_mask = torch.tensor([[0.0 if d in r else 1.0 for d in negatives] for r in rel_sets]).reshape(
        B, -1
    )
    return rel_pair_mask, hard_pair_mask
