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
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(vectors float32 [rows, d], doc offsets int32 [rows])`` for documents ``start..end-1``.

    ``compact`` trims the masked padding columns of each pass; ``row_groups`` (implies
    ``compact``) also buckets the rows of a pass by real width so the encoder runs each bucket at
    its own width (:func:`SeDR.data.preprocess_folder.plan_row_groups`, ``group_overhead`` tokens per bucket).
    Both leave the vectors unchanged up to float summation order (masked columns only).
    """
    model.eval()
    seg_counts = corpus_segment_counts(passages, spec)
    end = len(passages) if end is None else end
    bar = progress(
        total=int(seg_counts[start:end].sum()), desc="encode documents", unit="seg", enabled=show_progress
    )
    for offsets in document_batches(seg_counts, max_bsize, start, end):
        batch = collate_pass(
            model,
            [passages[d] for d in offsets],
            offsets,
            spec,
            compact=compact,
            row_groups=row_groups,
            group_overhead=group_overhead,
        )
        with precision.autocast():
            vecs = model.encode_segments(batch.to(device))
        rows = model.rows_per_document(batch.seg_counts).cpu().numpy()  # s_b, or K for multi-view models
        doc_ids = np.repeat(np.asarray(offsets, dtype=np.int32), rows)
        vecs = vecs.float().cpu().numpy()
        if len(vecs) != len(doc_ids):
            raise RuntimeError(f"model returned {len(vecs)} rows for {len(doc_ids)} expected")
        bar.update(int(batch.seg_counts.sum()))
        yield vecs, doc_ids
    bar.close()


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
