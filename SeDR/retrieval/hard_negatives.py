"""Static hard negatives: the top documents of each training query that are not relevant to it.

``hard_negative.json`` maps query offsets (decimal strings) to document offsets, best first,
positives excluded, at most ``HARDNEG_LIST_LENGTH`` (300) per query. It is generated one block of
queries at a time, each block's lists kept as int32 arrays in a file of its own until the final
file is assembled by streaming and renamed into place (docs/scale.md#hard-negatives).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SeDR.core.constants import HARDNEG_LIST_LENGTH, SEGMENT_HITS
from SeDR.core.errors import DataFormatError, MissingInputError
from SeDR.core.outputs import atomic_write, writing
from SeDR.retrieval.exact_search import iter_search
from SeDR.retrieval.ranking import exact_hits, max_rows_per_document, unique_docs

logger = logging.getLogger(__name__)

PARTS_MANIFEST = "manifest.json"
JSON_QUERIES_PER_WRITE = 1024  # queries formatted per write of the assembled file (memory only)
SELECT_QUERIES = 1024  # queries whose hits are reduced to lists at once (memory only)


def hard_negative_array(
    rows: np.ndarray, row_doc_ids: np.ndarray, relevant: Collection[int], keep: int = HARDNEG_LIST_LENGTH
) -> np.ndarray:
    """Walk the hits in rank order, keep each document once, skip relevant ones, stop at ``keep``:
    the document offsets as an int64 array."""
    docs, _, _ = unique_docs(rows, row_doc_ids)
    if len(relevant):
        docs = docs[~np.isin(docs, np.fromiter(relevant, dtype=np.int64, count=len(relevant)))]
    return docs[:keep]


def select_hard_negatives(
    rows: np.ndarray, row_doc_ids: np.ndarray, relevant: Collection[int], keep: int = HARDNEG_LIST_LENGTH
) -> list[int]:
    """:func:`hard_negative_array` as a list of ints."""
    return hard_negative_array(rows, row_doc_ids, relevant, keep).tolist()


def hard_negatives_for_queries(
    index,
    row_doc_ids: np.ndarray,
    queries: np.ndarray,
    query_offsets: Sequence[int],
    rel: Mapping[int, Collection[int]],
    hits: int = SEGMENT_HITS,
    keep: int = HARDNEG_LIST_LENGTH,
    batch_size: int | None = None,
    show_progress: bool = True,
) -> dict[int, list[int]]:
    """Hard negatives of a few queries in memory: ``{query offset: [doc offset, ...] best first}``
    (docs/retrieval.md#hard-negative-generation); :func:`generate_hard_negatives` streams them to a file."""
    query_offsets = list(query_offsets)
    out: dict[int, list[int]] = {}
    for start, _, rows in iter_search(index, queries, hits, batch_size, show_progress, "hard negatives"):
        for i, r in enumerate(rows):
            q = int(query_offsets[start + i])
            out[q] = select_hard_negatives(r, row_doc_ids, rel.get(q, ()), keep)
    return out


def hard_negative_block(
    rows: np.ndarray,
    row_doc_ids: np.ndarray,
    relevant: Sequence[Collection[int]],
    keep: int = HARDNEG_LIST_LENGTH,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hard_negative_array` of every query of a block at once: ``(lengths int32 [n], docs int32
    [sum])``, each query's documents best first (the same lists, without a Python loop over hits)."""
    rows = np.asarray(rows, dtype=np.int64)  # (n, H)
    n, h = rows.shape
    docs = np.where(rows >= 0, np.asarray(row_doc_ids)[np.maximum(rows, 0)], -1).astype(np.int64)
    # Sorting (document, rank) keys puts each document's hits together, best first: its first hit.
    keys = np.sort(docs * h + np.arange(h), axis=1)
    first = np.ones((n, h), dtype=bool)
    first[:, 1:] = keys[:, 1:] // h != keys[:, :-1] // h
    kept = np.zeros((n, h), dtype=bool)
    i, j = np.nonzero(first)
    kept[i, keys[i, j] % h] = True  # True at each document's first (= best) hit
    kept &= docs >= 0
    most = max((len(r) for r in relevant), default=0)
    if most:
        rel = np.full((n, most), -2, dtype=np.int64)
        for i, r in enumerate(relevant):
            rel[i, : len(r)] = list(r)
        for j in range(most):
            kept &= docs != rel[:, j : j + 1]
    kept &= np.cumsum(kept, axis=1, dtype=np.int32) <= keep
    return kept.sum(1).astype(np.int32), docs[kept].astype(np.int32)


def _json_members(offsets: np.ndarray, lengths: np.ndarray, docs: np.ndarray) -> bytes:
    """The ``"q":[d,...]`` members of a stretch of queries as ``json.dumps`` writes the whole dict."""
    ends = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).tolist()
    flat = docs.tolist()
    stretch = {str(q): flat[ends[i] : ends[i + 1]] for i, q in enumerate(offsets.tolist())}
    return json.dumps(stretch, separators=(",", ":"))[1:-1].encode()


def write_hard_negatives(path: str | Path, hard_negatives: Mapping[int, Sequence[int]]) -> None:
    """``hard_negative.json``: keys = query offsets as decimal strings, values = doc offsets best first."""
    payload = {str(int(q)): [int(d) for d in docs] for q, docs in hard_negatives.items()}

    def write(f):
        f.write(json.dumps(payload, separators=(",", ":")).encode())

    atomic_write(Path(path), write)


def require_hard_negative_file(path: str | Path) -> Path:
    """``path``, or one line saying how to generate the file; checked before a run claims its folder."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(path, "generate it with `python SeDR/inference.py ... --gen_hardneg`")
    return path


@dataclass
class HardNegativeSummary:
    queries: int
    short: int  # queries with fewer than ``keep`` negatives
    resumed_blocks: int  # query blocks found complete from an interrupted run


class _Parts:
    """The query blocks of one generation, each an ``.npz`` of int32 ``offsets``, ``lengths`` and ``docs``,
    in ``.{name}.parts/`` beside the final file; reused only by a run with the same ``identity``."""

    def __init__(self, path: Path, identity: dict):
        self.folder = path.parent / f".{path.name}.parts"
        self.identity = json.loads(json.dumps(identity))  # as it reads back (tuples become lists)
        manifest = self.folder / PARTS_MANIFEST
        try:
            same = json.loads(manifest.read_text()) == self.identity
        except (OSError, ValueError):
            same = False
        if not same:
            with writing(self.folder):
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder.mkdir(parents=True)
                atomic_write(manifest, lambda f: f.write(json.dumps(self.identity, indent=1).encode()))

    def path(self, start: int) -> Path:
        return self.folder / f"block-{start:012d}.npz"

    def done(self, start: int) -> bool:
        return self.path(start).exists()

    def write(self, start: int, offsets: np.ndarray, lengths: np.ndarray, docs: np.ndarray) -> None:
        final = self.path(start)
        tmp = final.with_name(final.name + ".tmp")
        with writing(final):
            with open(tmp, "wb") as f:
                np.savez(f, offsets=offsets, lengths=lengths, docs=docs)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)

    def read(self, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.load(self.path(start)) as z:
            return z["offsets"], z["lengths"], z["docs"]


def generate_hard_negatives(
    index,
    row_doc_ids: np.ndarray,
    encode: Callable[[int, int], np.ndarray],
    num_queries: int,
    rel: Mapping[int, Collection[int]],
    path: str | Path,
    *,
    query_offsets: Sequence[int] | None = None,
    identity: Mapping | None = None,
    hits: int = SEGMENT_HITS,
    keep: int = HARDNEG_LIST_LENGTH,
    block_size: int | None = None,
    exact: bool = False,
    show_progress: bool = True,
    before_write: Callable[[Path], None] | None = None,
) -> HardNegativeSummary:
    """Write ``hard_negative.json`` for queries ``0..num_queries-1`` (docs/scale.md#hard-negatives).

    ``encode(a, b)`` gives the vectors of queries ``a..b-1`` (query offsets ``query_offsets[a:b]``,
    default ``a..b-1``); each block of ``block_size`` queries (default: the index's query block) is
    encoded, searched in one pass over the rows, reduced to its lists and written to a block file, so
    memory holds one block. A rerun with the same ``identity`` (what made the vectors and the
    search) skips the blocks already written; the final file is assembled from the blocks and renamed
    into place, the same bytes as :func:`write_hard_negatives` of the whole dict. ``exact``
    (``--doc_topk_exact``) searches enough rows to make each list the exact best documents.
    ``before_write(path)`` runs just before the final file is written (the caller keeps a backup).
    """
    path = Path(path)
    settings = getattr(index, "settings", None)
    block = int(block_size or (settings.query_block if settings else num_queries) or 1)
    offsets_all = np.asarray(range(num_queries) if query_offsets is None else query_offsets, dtype=np.int64)
    if exact:
        most_rel = max((len(rel.get(int(q), ())) for q in offsets_all), default=0)
        hits = exact_hits(keep + most_rel, max_rows_per_document(row_doc_ids), hits)
    parts = _Parts(
        path,
        {
            **dict(identity or {}),
            "num_queries": int(num_queries),
            "hits": int(hits),
            "keep": int(keep),
            "block_size": block,
        },
    )
    starts = list(range(0, num_queries, block))
    resumed = sum(parts.done(a) for a in starts)
    if resumed:
        logger.info(
            "hard negatives: %d of %d query blocks already written in %s; resuming",
            resumed,
            len(starts),
            parts.folder,
        )
    short = 0
    for a in starts:
        if parts.done(a):
            continue
        b = min(a + block, num_queries)
        qvecs = encode(a, b)
        _, _, rows = next(
            iter_search(index, qvecs, hits, b - a, show_progress, f"hard negatives {a:,d}-{b:,d}")
        )
        del qvecs
        lengths, docs = [], []
        for i in range(0, len(rows), SELECT_QUERIES):
            part = offsets_all[a + i : min(b, a + i + SELECT_QUERIES)].tolist()
            n_i, d_i = hard_negative_block(
                rows[i : i + SELECT_QUERIES], row_doc_ids, [rel.get(q, ()) for q in part], keep
            )
            lengths.append(n_i)
            docs.append(d_i)
        del rows
        parts.write(a, offsets_all[a:b], np.concatenate(lengths), np.concatenate(docs))
    if before_write:
        before_write(path)

    def assemble(f):
        nonlocal short
        f.write(b"{")
        first = True
        for a in starts:
            offsets, lengths, docs = parts.read(a)
            short += int((lengths < keep).sum())
            ends = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
            for i in range(0, len(lengths), JSON_QUERIES_PER_WRITE):
                j = min(i + JSON_QUERIES_PER_WRITE, len(lengths))
                f.write(
                    (b"" if first else b",")
                    + _json_members(offsets[i:j], lengths[i:j], docs[ends[i] : ends[j]])
                )
                first = False
        f.write(b"}")

    atomic_write(path, assemble)
    shutil.rmtree(parts.folder, ignore_errors=True)
    return HardNegativeSummary(num_queries, short, resumed)


def load_hard_negatives(path: str | Path, num_docs: int | None = None) -> dict[int, list[int]]:
    """Read ``hard_negative.json`` into ``{query offset: [doc offset, ...]}``, every entry checked.

    Keys must be query offsets, values lists of document offsets in ``0..num_docs-1``; a bad entry is
    reported with its query and position before any training starts.
    """
    path = require_hard_negative_file(path)
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataFormatError(path, None, f"not JSON ({err}); regenerate it with --gen_hardneg") from None
    if not isinstance(raw, dict):
        raise DataFormatError(path, None, "expected a JSON object {query offset: [document offsets]}")
    out: dict[int, list[int]] = {}
    for key, docs in raw.items():
        if not key.isdecimal():
            raise DataFormatError(path, None, f"key {key!r} is not a query offset")
        arr = np.asarray(docs if isinstance(docs, list) else None)
        if arr.ndim != 1 or (len(arr) and arr.dtype.kind not in "iu"):
            raise DataFormatError(path, None, f"query {key}: expected a list of integer document offsets")
        bad = np.flatnonzero(
            (arr < 0) | (arr >= (num_docs if num_docs is not None else np.iinfo(np.int64).max))
        )
        if len(bad):
            i = int(bad[0])
            raise DataFormatError(
                path,
                None,
                f"query {key}, position {i}: document offset {docs[i]} is outside "
                f"0..{num_docs - 1 if num_docs is not None else 'N-1'}; regenerate the file "
                "for this preprocess folder with --gen_hardneg",
            )
        out[int(key)] = docs
    return out
