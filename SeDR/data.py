"""Data layer: memmap readers, the query view, segmentation, collation and segment-budget batching.

Readers: docs/data.md#readers; the query view: docs/data.md#query-view; segment rows,
placeholders and the fuse matrix: docs/segmentation.md. The functions are pure and operate on
numpy token arrays; tensors are only built by the collators.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from SeDR.batch import QueryBatch, RowGroups, SegmentBatch, TrainBatch
from SeDR.batching import ROW_GROUP_OVERHEAD, TrainItem, cap_hard_negative_segments, plan_row_groups
from SeDR.constants import (
    CLS_ID,
    EOS_ID,
    MULTI_SEGMENT_RESERVE,
    PAD_ID,
    PREPROCESS_RECORD,
    SHORT_TAIL_CAP,
    SHORT_TAIL_FRACTION,
    SINGLE_SEGMENT_RESERVE,
)
from SeDR.errors import DataFormatError, MissingInputError
from SeDR.outputs import fingerprint

logger = logging.getLogger(__name__)

PREPROCESS_HINT = "run `python SeDR_preprocess.py --data_path ./data --max_seq_length 2048` first"


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


class TokenCache:
    """Read-only view of a preprocessed ``<prefix>.memmap`` (int32 ``[N, maxlen]``).

    ``cache[i]`` returns ``ids[i, :length[i]]``. Like the original, falls back to a ``memmap/``
    sub-folder when the files are not found directly under the folder.
    """

    def __init__(self, folder: str | Path, prefix: str):
        folder = Path(folder)
        if not (folder / f"{prefix}_meta").exists() and (folder / "memmap" / f"{prefix}_meta").exists():
            folder = folder / "memmap"
        meta_path = folder / f"{prefix}_meta"
        if not meta_path.exists():
            raise MissingInputError(meta_path, PREPROCESS_HINT)
        try:
            meta = json.loads(meta_path.read_text())
            self.total, self.width = int(meta["total_number"]), int(meta["embedding_size"])
            dtype = np.dtype(meta.get("type", "int32"))
        except (ValueError, KeyError, TypeError) as err:
            raise DataFormatError(meta_path, None, f"unreadable shape record ({err}); {PREPROCESS_HINT}") from None
        self.path = folder / f"{prefix}.memmap"
        want = self.total * self.width * dtype.itemsize
        have = self.path.stat().st_size if self.path.exists() else None
        if have != want:
            raise DataFormatError(self.path, None, f"{'missing' if have is None else f'{have} bytes'}, but "
                                  f"{meta_path.name} says {self.total} x {self.width} {dtype} ({want} bytes): "
                                  f"the folder is incomplete or truncated; {PREPROCESS_HINT}")
        self.ids = np.memmap(self.path, dtype=dtype, mode="r", shape=(self.total, self.width))
        lengths_path = folder / f"{prefix}_length.npy"
        try:
            self.lengths = np.load(lengths_path).astype(np.int64)
        except (OSError, ValueError) as err:
            raise DataFormatError(lengths_path, None, f"unreadable ({err}); {PREPROCESS_HINT}") from None
        if len(self.lengths) != self.total or (len(self.lengths) and not 0 <= self.lengths.min() <= self.lengths.max()
                                               <= self.width):
            raise DataFormatError(lengths_path, None, f"{len(self.lengths)} lengths in 0..{self.width} expected "
                                  f"{self.total} for {meta_path}; {PREPROCESS_HINT}")

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[i, : self.lengths[i]], dtype=np.int64)


def passages(preprocess_dir: str | Path) -> TokenCache:
    return TokenCache(preprocess_dir, "passages")


def queries(preprocess_dir: str | Path, split: str) -> TokenCache:
    return TokenCache(preprocess_dir, f"{split}-query")


def iter_qrels(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """``(qid, docid, rel)`` strings of each line of a TREC-format qrels file ``qid iter docid rel``.

    Shared by the relevance dict here and the metric qrels of :mod:`SeDR.evaluation`; a malformed
    line raises a :class:`DataFormatError` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, PREPROCESS_HINT)
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise DataFormatError(path, line_no, f"expected `qid iter docid rel`, got {len(parts)} fields")
            if not parts[3].lstrip("-").isdigit():
                raise DataFormatError(path, line_no, f"relevance {parts[3]!r} is not an integer")
            yield parts[0], parts[2], parts[3]


def load_rel(path: str | Path) -> dict[int, list[int]]:
    """Offset qrels ``qoffset \\t 0 \\t doffset \\t rel`` → ``{qoffset: [doffset, ...]}``.

    Every line counts, whatever its ``rel`` (docs/data.md#relevance-dict): this dict only feeds the
    train/dev masks and labels, whose qrels are binary. TREC metrics read the file themselves.
    """
    rel: dict[int, list[int]] = {}
    for q, d, _ in iter_qrels(path):
        rel.setdefault(int(q), []).append(int(d))
    return rel


def load_id_map(path: str | Path) -> dict[int, int]:
    """``pid2offset.pickle`` / ``{split}-qid2offset.pickle``: original integer id → offset."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, PREPROCESS_HINT)
    with open(path, "rb") as f:
        return pickle.load(f)


def preprocess_fingerprint(preprocess_dir: str | Path) -> str:
    """Identity of a preprocess folder's corpus: its shape record, document lengths and settings record."""
    folder = Path(preprocess_dir)
    return fingerprint([folder / "passages_meta", folder / "passages_length.npy", folder / PREPROCESS_RECORD])


# --------------------------------------------------------------------------------------------
# Query view (docs/data.md#query-view)
# --------------------------------------------------------------------------------------------


def truncate_query(ids: np.ndarray, max_query_length: int) -> np.ndarray:
    """Keep ``CLS``, the next ``Lq - 2`` tokens and the final ``EOS`` (unchanged if short enough)."""
    n = len(ids)
    s = min(max_query_length - 1, n - 1)
    return np.concatenate([ids[:1], ids[1:s], ids[n - 1:]])


def collate_queries(items: Sequence[np.ndarray], offsets: Sequence[int], max_query_length: int,
                    pad_id: int = PAD_ID, pad_to_max_length: bool = True) -> QueryBatch:
    """Truncate (keep the first and last token) and pad with ``PAD`` (mask 0) to ``max_query_length`` or to the batch maximum."""
    views = [truncate_query(np.asarray(x), max_query_length) for x in items]
    width = max_query_length if pad_to_max_length else max(len(v) for v in views)
    ids = torch.full((len(views), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(views), width), dtype=torch.long)
    for i, v in enumerate(views):
        ids[i, : len(v)] = torch.from_numpy(v)
        mask[i, : len(v)] = 1
    return QueryBatch(ids, mask, torch.as_tensor(list(offsets), dtype=torch.long))


# --------------------------------------------------------------------------------------------
# Segmentation (docs/segmentation.md)
# --------------------------------------------------------------------------------------------


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
            raise ValueError(f"max_seg_length {self.max_seg_length} leaves no room for content "
                             f"(max_seg_num {self.max_seg_num}, extra reserve {self.extra_reserve})")

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
    """Segments ``s`` of a document with ``length`` stored tokens (docs/segmentation.md#segment-count); works on arrays too."""
    L, M, g = spec.content_len, spec.max_seg_num, spec.ignore_len
    n = np.minimum(np.asarray(length, dtype=np.int64), L * M)
    s = -(-n // L)
    tail = n - (s - 1) * L
    s = s - ((s > 1) & (tail < g))
    return int(s) if np.ndim(s) == 0 else s


def collate_documents(docs: Sequence[np.ndarray], doc_offsets: Sequence[int], spec: SegmentSpec,
                      seg_caps: Sequence[int] | None = None, cls_id: int = CLS_ID, eos_id: int = EOS_ID,
                      pad_id: int = PAD_ID, compact: bool = False, row_groups: bool = False,
                      group_overhead: int = ROW_GROUP_OVERHEAD) -> SegmentBatch:
    """Build the segment rows, masks and fuse matrix of a batch of documents (docs/segmentation.md#segment-rows).

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
    counts = num_segments(np.array([len(d) for d in docs], dtype=np.int64), spec) if len(docs) else np.zeros(0, int)
    counts = np.atleast_1d(counts)
    if seg_caps is not None:
        counts = np.minimum(counts, np.asarray(seg_caps, dtype=np.int64))
    n_seg = int(counts.sum())
    pieces = []
    for d, s in zip(docs, counts):
        for k in range(int(s)):
            pieces.append(np.asarray(d[k * L: (k + 1) * L]))
    width = (max((len(p) for p in pieces), default=0) if compact or row_groups else L) + 2
    T = width + P
    ids = np.full((n_seg, T), pad_id, dtype=np.int64)
    mask = np.zeros((n_seg, T), dtype=np.int64)
    for r, p in enumerate(pieces):
        c = len(p)
        ids[r, 0] = cls_id
        ids[r, 1: c + 1] = p
        ids[r, c + 1] = eos_id
        mask[r, : c + 2] = 1
    fuse = None
    if P > 0:
        fuse = np.zeros((n_seg, P), dtype=np.int64)
        row = 0
        for s in counts:
            s = int(s)
            table, valid = fuse_table(s, P)
            fuse[row: row + s] = table + row
            mask[row: row + s, T - P:] = valid
            row += s
    groups = None
    if row_groups and n_seg:
        plan = plan_row_groups(np.array([len(p) + 2 for p in pieces]), P, group_overhead)
        if len(plan) > 1:
            groups = RowGroups(rows=torch.from_numpy(np.concatenate([g for g, _ in plan])),
                               sizes=tuple(len(g) for g, _ in plan), widths=tuple(w for _, w in plan),
                               num_placeholders=P)
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
    """Local fuse table ``F_s`` and placeholder mask ``A_s`` of an ``s``-segment document (docs/segmentation.md#fuse-matrix).

    ``F_s[i, j]`` is the ``j``-th other segment of segment ``i`` (skipping ``i``) for ``j < s - 1``,
    else 0; ``A_s[i, j] = 1[j < s - 1]``.
    """
    P = num_placeholders
    j = np.arange(P)[None, :]
    i = np.arange(s)[:, None]
    valid = np.broadcast_to(j < s - 1, (s, P)).astype(np.int64)
    table = np.where(j < i, j, j + 1) * valid
    return table.astype(np.int64), valid


class TrainCollator:
    """Turns a list of :class:`TrainItem` into a :class:`TrainBatch` (docs/training.md#collation)."""

    def __init__(self, passage_cache: TokenCache, query_cache: TokenCache, rel: dict[int, list[int]],
                 spec: SegmentSpec, max_query_length: int, max_bsize: int, hard_num: int = 1,
                 cls_id: int = CLS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID, compact: bool = False,
                 row_groups: bool = False):
        self.passages, self.queries, self.rel, self.spec = passage_cache, query_cache, rel, spec
        self.max_query_length, self.max_bsize, self.hard_num = max_query_length, max_bsize, hard_num
        self.ids = {"cls_id": cls_id, "eos_id": eos_id, "pad_id": pad_id}
        self.compact = compact
        self.row_groups = row_groups  # see collate_documents: rows bucketed by width, implies compact

    def __call__(self, items: Sequence[TrainItem]) -> TrainBatch:
        qs = [it.query for it in items]
        pos = [it.positive for it in items]
        negs = [n for it in items for n in it.negatives]
        queries = collate_queries([self.queries[q] for q in qs], qs, self.max_query_length,
                                  pad_id=self.ids["pad_id"], pad_to_max_length=True)
        positives = collate_documents([self.passages[d] for d in pos], pos, self.spec,
                                      compact=self.compact, row_groups=self.row_groups, **self.ids)
        neg_docs = [self.passages[d] for d in negs]
        caps = cap_hard_negative_segments(num_segments(np.array([len(d) for d in neg_docs]), self.spec),
                                          self.max_bsize * self.hard_num)
        negatives = collate_documents(neg_docs, negs, self.spec, seg_caps=caps, compact=self.compact,
                                      row_groups=self.row_groups, **self.ids)
        rel_pair_mask, hard_pair_mask = pair_masks(qs, self.rel, pos, negs)
        return TrainBatch(queries, positives, negatives, rel_pair_mask, hard_pair_mask)


def pair_masks(query_offsets: Sequence[int], rel: dict[int, list[int]], positives: Sequence[int],
               negatives: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """False-negative masks (docs/training.md#false-negative-masks): ``(B, len(positives))`` and ``(B, len(negatives))``, 0 where relevant."""
    rel_sets = [set(rel.get(int(q), ())) for q in query_offsets]
    B = len(rel_sets)
    rel_pair_mask = torch.tensor([[0.0 if d in r else 1.0 for d in positives] for r in rel_sets]).reshape(B, -1)
    hard_pair_mask = torch.tensor([[0.0 if d in r else 1.0 for d in negatives] for r in rel_sets]).reshape(B, -1)
    return rel_pair_mask, hard_pair_mask
