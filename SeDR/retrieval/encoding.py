"""Batched encoding of documents (one vector per segment) and of queries, for inference and ADORE.

Documents are processed in offset order and packed into forward passes of at most
``max_bsize`` segments (docs/retrieval.md#document-encoding); each pass yields the vectors of its rows and the
document offset of every row (rows of a document are contiguous and in segment order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from SeDR.core.progress import progress
from SeDR.core.runtime import Precision
from SeDR.data import collation, preprocess_folder, segmentation
from SeDR.data.row_groups import ROW_GROUP_OVERHEAD
from SeDR.data.sampling import document_batches
from SeDR.data.segmentation import SegmentSpec

logger = logging.getLogger(__name__)


def corpus_segment_counts(passages: preprocess_folder.TokenCache, spec: SegmentSpec) -> np.ndarray:
    return np.asarray(segmentation.num_segments(passages.lengths, spec), dtype=np.int64)


def collate_pass(
    model,
    docs: list[np.ndarray],
    offsets: list[int],
    spec: SegmentSpec,
    compact: bool = True,
    row_groups: bool = True,
    group_overhead: int = ROW_GROUP_OVERHEAD,
):
    """The :class:`~SeDR.data.batches.SegmentBatch` of one forward pass of :func:`encode_corpus` (also used by
    bench/batching.py, so the benchmark times exactly these batches)."""
    return segmentation.collate_documents(
        docs,
        offsets,
        spec,
        compact=compact,
        row_groups=row_groups,
        group_overhead=group_overhead,
        **model.special_ids,
    )  # CLS/EOS/PAD of the backbone


def _as_is(item):
    """The loader's collate function: a pass is collated already (a module-level function, so worker
    processes started by ``spawn`` can use it too)."""
    return item


class _Passes(torch.utils.data.Dataset):
    """The forward passes of :func:`encode_corpus` as a dataset, so a ``DataLoader`` (with workers)
    collates them in order ahead of the model."""

    def __init__(self, model, passages, plan: list[list[int]], spec: SegmentSpec, **collate_kwargs):
        self.passages, self.plan, self.spec, self.kwargs = passages, plan, spec, collate_kwargs
        self.special_ids = model.special_ids

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int):
        offsets = self.plan[i]
        docs = [self.passages[d] for d in offsets]
        return offsets, segmentation.collate_documents(
            docs, offsets, self.spec, **self.kwargs, **self.special_ids
        )


@torch.inference_mode()
def encode_corpus(
    model,
    passages: preprocess_folder.TokenCache,
    spec: SegmentSpec,
    max_bsize: int,
    device: torch.device,
    precision: Precision,
    start: int = 0,
    end: int | None = None,
    compact: bool = True,
    row_groups: bool = True,
    group_overhead: int = ROW_GROUP_OVERHEAD,
    show_progress: bool = True,
    num_workers: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(vectors float32 [rows, d], doc offsets int32 [rows])`` for documents ``start..end-1``.

    ``compact`` trims the masked padding columns of each pass; ``row_groups`` (implies
    ``compact``) also buckets the rows of a pass by real width so the encoder runs each bucket at
    its own width (:func:`SeDR.data.row_groups.plan_row_groups`, ``group_overhead`` tokens per bucket).
    Both leave the vectors unchanged up to float summation order (masked columns only).

    ``num_workers`` processes collate the next passes while the model runs (pinned memory and an
    asynchronous copy on a GPU), and each pass's vectors are copied back after the next pass is
    queued, so on a GPU neither the collation nor the copy waits for the other. The passes and their
    vectors are the same with any number of workers.
    """
    model.eval()
    seg_counts = corpus_segment_counts(passages, spec)
    end = len(passages) if end is None else end
    bar = progress(
        total=int(seg_counts[start:end].sum()), desc="encode documents", unit="seg", enabled=show_progress
    )
    plan = list(document_batches(seg_counts, max_bsize, start, end))
    passes = _Passes(
        model, passages, plan, spec, compact=compact, row_groups=row_groups, group_overhead=group_overhead
    )
    loader = torch.utils.data.DataLoader(
        passes,
        batch_size=None,  # each item is a whole pass
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=_as_is,
    )
    pending = None  # the previous pass: its vectors are read once the next pass is queued
    for offsets, batch in loader:
        with precision.autocast():
            vecs = model.encode_segments(batch.to(device))
        if pending is not None:
            yield _finish(model, *pending, bar)
        pending = (vecs, offsets, batch.seg_counts)
    if pending is not None:
        yield _finish(model, *pending, bar)
    bar.close()


def _finish(model, vecs: torch.Tensor, offsets: list[int], seg_counts: torch.Tensor, bar):
    rows = model.rows_per_document(seg_counts).cpu().numpy()  # s_b, or K for multi-view models
    doc_ids = np.repeat(np.asarray(offsets, dtype=np.int32), rows)
    vecs = vecs.float().cpu().numpy()
    if len(vecs) != len(doc_ids):
        raise RuntimeError(f"model returned {len(vecs)} rows for {len(doc_ids)} expected")
    bar.update(int(seg_counts.sum()))
    return vecs, doc_ids


@torch.inference_mode()
def encode_queries(
    model,
    query_cache: preprocess_folder.TokenCache,
    max_query_length: int,
    batch_size: int,
    device: torch.device,
    precision: Precision,
    offsets: list[int] | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Query vectors float32 ``[n, d]`` in offset order (or for ``offsets``)."""
    model.eval()
    offsets = list(range(len(query_cache))) if offsets is None else list(offsets)
    pad_id = model.special_ids["pad_id"]
    out = []
    for i in progress(
        range(0, len(offsets), batch_size), desc="encode queries", unit="batch", enabled=show_progress
    ):
        chunk = offsets[i : i + batch_size]
        qb = collation.collate_queries(
            [query_cache[q] for q in chunk], chunk, max_query_length, pad_id=pad_id, pad_to_max_length=False
        )
        with precision.autocast():
            out.append(model.encode_queries(qb.to(device)).float().cpu().numpy())
    d = out[0].shape[1] if out else 0
    return np.concatenate(out) if out else np.zeros((0, d), dtype=np.float32)
