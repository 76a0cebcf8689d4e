"""Batch containers shared by the collators (``SeDR.data.preprocess_folder``) and the models
(``SeDR.modeling``).

Layout of a document batch (docs/segmentation.md#batch-layout): all segment rows of all documents of the batch
are stacked in document order (every segment of document 0, then of document 1, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch


def _map(obj, fn):
    """``obj`` with ``fn`` applied to every tensor field (nested batches included)."""
    kwargs = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            v = fn(v)
        elif hasattr(v, "__dataclass_fields__"):
            v = _map(v, fn)
        kwargs[f.name] = v
    return replace(obj, **kwargs)


def _to(obj, device):
    return _map(obj, lambda t: t.to(device, non_blocking=True))


def _rebuild(cls, values: dict):
    return cls(**{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in values.items()})


class _ByValue:
    """Pickled with its tensors as numpy arrays, i.e. by value in one stream: a batch crosses from a
    collating worker to the trainer about 6x faster than as torch's shared-memory tensors, which
    cost a file per tensor (17 in a training batch; bench/train_step.py)."""

    def __reduce__(self):
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return _rebuild, (
            type(self),
            {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in values.items()},
        )


def _pinned(obj):
    """Page-locked copies, which a GPU copies asynchronously (``DataLoader(pin_memory=True)`` calls
    ``pin_memory()`` on the batches it yields)."""
    return _map(obj, lambda t: t.pin_memory())


@dataclass
class RowGroups(_ByValue):
    """Rows of a document batch bucketed by real width, for a per-group encoder pass
    (docs/segmentation.md#row-groups).

    Group ``g`` holds rows ``rows[start_g : start_g + sizes[g]]``; the encoder runs it on the
    columns ``[0, widths[g])`` plus the last ``P`` placeholder columns only. The dropped columns are
    masked padding of every row of the group, so the outputs are unchanged up to float summation
    order (see :func:`SeDR.data.row_groups.plan_row_groups` and :func:`SeDR.modeling.encoder.encode`).

    Attributes:
        rows: ``(n_seg,)`` int64 permutation of the batch rows, group after group.
        sizes: rows of each group.
        widths: leading columns kept per group: CLS + content + EOS of its widest row.
        num_placeholders: ``P``, the trailing columns every group keeps (also for encoders that
            never fill them: MaxP-style rows attend to their placeholders,
            docs/segmentation.md#placeholder-masks).
    """

    rows: torch.Tensor
    sizes: tuple[int, ...]
    widths: tuple[int, ...]
    num_placeholders: int

    def to(self, device) -> RowGroups:
        return _to(self, device)

    def pin_memory(self) -> RowGroups:
        return _pinned(self)


@dataclass
class SegmentBatch(_ByValue):
    """Segment rows of a batch of documents.

    Attributes:
        input_ids: ``(n_seg, T)`` int64 token ids, ``T = L + M + 1`` (docs/segmentation.md#segment-rows).
        attention_mask: ``(n_seg, T)`` int64 0/1 mask, placeholder validity included.
        seg_counts: ``(n_docs,)`` int64 number of segments ``s_b`` of each document.
        fuse_mat: ``(n_seg, P)`` int64 batch fuse matrix (docs/segmentation.md#fuse-matrix),
            or ``None`` when ``M = 1``.
        doc_offsets: ``(n_docs,)`` int64 document offsets (row numbers of the corpus memmap).
        max_seg_num: ``M`` of the data path (the width of the per-document matrix).
        row_groups: optional bucketing of the rows by real width (:class:`RowGroups`), or ``None``
            to encode all rows at the full width ``T``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    seg_counts: torch.Tensor
    fuse_mat: torch.Tensor | None
    doc_offsets: torch.Tensor
    max_seg_num: int
    row_groups: RowGroups | None = None

    @property
    def num_docs(self) -> int:
        return int(self.seg_counts.numel())

    @property
    def num_segments(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seg_sep(self) -> torch.Tensor:
        """Cumulative segment counts ``[0, s_0, s_0 + s_1, ...]`` (length ``n_docs + 1``)."""
        return torch.cat([self.seg_counts.new_zeros(1), torch.cumsum(self.seg_counts, 0)])

    def segment_types(self) -> torch.Tensor:
        """Segment position ids ``0..s_b-1`` of every row
        (docs/segmentation.md#segment-types), shape ``(n_seg,)``."""
        # output_size: the row count is known on the host, so a GPU batch needs no sync to size it
        starts = torch.repeat_interleave(self.seg_sep[:-1], self.seg_counts, output_size=self.num_segments)
        return torch.arange(self.num_segments, device=self.seg_counts.device) - starts

    def to(self, device) -> SegmentBatch:
        return _to(self, device)

    def pin_memory(self) -> SegmentBatch:
        return _pinned(self)


@dataclass
class QueryBatch(_ByValue):
    """Queries padded with ``PAD`` (mask 0): ``input_ids``/``attention_mask`` of shape ``(B, Lq)``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    query_offsets: torch.Tensor

    def to(self, device) -> QueryBatch:
        return _to(self, device)

    def pin_memory(self) -> QueryBatch:
        return _pinned(self)


@dataclass
class TrainBatch(_ByValue):
    """One training micro-batch (docs/training.md#training-batches).

    Attributes:
        queries: ``B`` queries.
        positives: the ``B`` positive documents, in query order.
        negatives: the ``B * h`` hard negatives, query-major (``h`` per query, in query order).
        rel_pair_mask: ``(B, B)`` float, 0 where positive ``j`` is relevant to query ``i``
            (diagonal 0), else 1.
        hard_pair_mask: ``(B, B * h)`` float, 0 where negative ``k`` is relevant to query ``i``, else 1.
    """

    queries: QueryBatch
    positives: SegmentBatch
    negatives: SegmentBatch
    rel_pair_mask: torch.Tensor
    hard_pair_mask: torch.Tensor

    @property
    def num_queries(self) -> int:
        return int(self.queries.input_ids.shape[0])

    def to(self, device) -> TrainBatch:
        return _to(self, device)

    def pin_memory(self) -> TrainBatch:
        return _pinned(self)
