"""Segment rows of a document: shape, count, placeholders and the fuse matrix (docs/segmentation.md).

The functions are pure and operate on numpy token arrays; tensors are only built when a batch is
collated."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from SeDR.core.constants import (
    CLS_ID,
    EOS_ID,
    MULTI_SEGMENT_RESERVE,
    PAD_ID,
    SHORT_TAIL_CAP,
    SHORT_TAIL_FRACTION,
    SINGLE_SEGMENT_RESERVE,
)
from SeDR.data.batches import RowGroups, SegmentBatch
from SeDR.data.row_groups import ROW_GROUP_OVERHEAD, plan_row_groups


@dataclass(frozen=True)
class SegmentSpec:
    """Shape of the segment rows for ``--max_seg_length Lraw`` and ``--max_seg_num M``.

    ``extra_reserve`` shrinks the content budget further; STAR_Multi uses ``K - 1`` so that its
    row stays within 512 positions after the view tokens are inserted (docs/models.md#star-multi).
    """

    max_seg_length: int
    max_seg_num: int
    extra_reserve: int = 0

    def __post_init__(self):
        if self.max_seg_num < 1:
            raise ValueError(f"max_seg_num must be >= 1, got {self.max_seg_num}")
        if self.content_len < 1:
            raise ValueError(
                f"max_seg_length {self.max_seg_length} leaves no room for content "
                f"(max_seg_num {self.max_seg_num}, extra reserve {self.extra_reserve})"
            )

    @property
    def content_len(self) -> int:
        """``L``: content tokens per segment (512,4 → 500; 512,1 → 510)."""
        reserve = MULTI_SEGMENT_RESERVE if self.max_seg_num > 1 else SINGLE_SEGMENT_RESERVE
        return self.max_seg_length - reserve - self.extra_reserve

    @property
    def num_placeholders(self) -> int:
        """``P = M - 1`` placeholder slots at the end of every row."""
        return self.max_seg_num - 1

    @property
    def row_len(self) -> int:
        """``T = L + M + 1`` (512,4 → 505; 512,1 → 512)."""
        return self.content_len + self.max_seg_num + 1

    @property
    def ignore_len(self) -> int:
        """``g``: a trailing piece shorter than this is dropped."""
        return min(math.floor(SHORT_TAIL_FRACTION * self.content_len), SHORT_TAIL_CAP)


def num_segments(length, spec: SegmentSpec):
    """Segments ``s`` of a document with ``length`` stored tokens (docs/segmentation.md#segment-count);
    works on arrays too."""
    L, M, g = spec.content_len, spec.max_seg_num, spec.ignore_len
    n = np.minimum(np.asarray(length, dtype=np.int64), L * M)
    s = -(-n // L)
    tail = n - (s - 1) * L
    s = s - ((s > 1) & (tail < g))
    return int(s) if np.ndim(s) == 0 else s


def collate_documents(
    docs: Sequence[np.ndarray],
    doc_offsets: Sequence[int],
    spec: SegmentSpec,
    seg_caps: Sequence[int] | None = None,
    cls_id: int = CLS_ID,
    eos_id: int = EOS_ID,
    pad_id: int = PAD_ID,
    compact: bool = False,
    row_groups: bool = False,
    group_overhead: int = ROW_GROUP_OVERHEAD,
) -> SegmentBatch:
    """Build the segment rows, masks and fuse matrix of a batch of documents
    (docs/segmentation.md#segment-rows).

    Args:
        docs: stored token ids of each document (no CLS/EOS).
        doc_offsets: corpus offsets of the documents, carried along.
        seg_caps: optional per-document cap on the segment count (docs/training.md#hard-negative-capping);
            a cap removes trailing segments.
        compact: drop the all-padding columns between the longest content and the placeholders.
            Those positions are masked out, so outputs are unchanged up to float summation order;
            rows then have ``max_c + 2 + P`` columns instead of ``T``.
        row_groups: also bucket the rows by real width (:func:`plan_row_groups`, implies
            ``compact``) so that the encoder runs each bucket at its own width; ``None`` on the
            batch when one bucket is best.
        group_overhead: cost of one more bucket, in processed tokens (see :data:`ROW_GROUP_OVERHEAD`).
    """
    L, P = spec.content_len, spec.num_placeholders
    counts = (
        num_segments(np.array([len(d) for d in docs], dtype=np.int64), spec)
        if len(docs)
        else np.zeros(0, int)
    )
    counts = np.atleast_1d(counts)
    if seg_caps is not None:
        counts = np.minimum(counts, np.asarray(seg_caps, dtype=np.int64))
    n_seg = int(counts.sum())
    pieces = []
    for d, s in zip(docs, counts):
        for k in range(int(s)):
            pieces.append(np.asarray(d[k * L : (k + 1) * L]))
    width = (max((len(p) for p in pieces), default=0) if compact or row_groups else L) + 2
    T = width + P
    ids = np.full((n_seg, T), pad_id, dtype=np.int64)
    mask = np.zeros((n_seg, T), dtype=np.int64)
    for r, p in enumerate(pieces):
        c = len(p)
        ids[r, 0] = cls_id
        ids[r, 1 : c + 1] = p
        ids[r, c + 1] = eos_id
        mask[r, : c + 2] = 1
    fuse = None
    if P > 0:
        fuse = np.zeros((n_seg, P), dtype=np.int64)
        row = 0
        for s in counts:
            s = int(s)
            table, valid = fuse_table(s, P)
            fuse[row : row + s] = table + row
            mask[row : row + s, T - P :] = valid
            row += s
    groups = None
    if row_groups and n_seg:
        plan = plan_row_groups(np.array([len(p) + 2 for p in pieces]), P, group_overhead)
        if len(plan) > 1:
            groups = RowGroups(
                rows=torch.from_numpy(np.concatenate([g for g, _ in plan])),
                sizes=tuple(len(g) for g, _ in plan),
                widths=tuple(w for _, w in plan),
                num_placeholders=P,
            )
    return SegmentBatch(
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy(mask),
        seg_counts=torch.from_numpy(counts.astype(np.int64)),
        fuse_mat=None if fuse is None else torch.from_numpy(fuse),
        doc_offsets=torch.as_tensor(list(doc_offsets), dtype=torch.long),
        max_seg_num=spec.max_seg_num,
        row_groups=groups,
    )


def fuse_table(s: int, num_placeholders: int) -> tuple[np.ndarray, np.ndarray]:
    """Local fuse table ``F_s`` and placeholder mask ``A_s`` of an ``s``-segment document
    (docs/segmentation.md#fuse-matrix).

    ``F_s[i, j]`` is the ``j``-th other segment of segment ``i`` (skipping ``i``) for ``j < s - 1``,
    else 0; ``A_s[i, j] = 1[j < s - 1]``.
    """
    P = num_placeholders
    j = np.arange(P)[None, :]
    i = np.arange(s)[:, None]
    valid = np.broadcast_to(j < s - 1, (s, P)).astype(np.int64)
    table = np.where(j < i, j, j + 1) * valid
    return table.astype(np.int64), valid
