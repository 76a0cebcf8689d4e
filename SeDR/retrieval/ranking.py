"""Documents from segment hits: each document ranked by its best segment, and the run files.

Rankings are ``{query offset: [(doc offset, score), ...]}`` best first. Before evaluation or
writing, scores are made strictly decreasing in rank order (:func:`rank_consistent_scores`), so
tools that sort by score (trec_eval and ir_measures break ties by docid) see our rank order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SeDR.core.constants import MRR_CUTOFF, SEGMENT_HITS
from SeDR.core.errors import DataFormatError, MissingInputError
from SeDR.core.outputs import atomic_write_text
from SeDR.data.msmarco_files import decode_line
from SeDR.data.preprocess_folder import load_id_map
from SeDR.retrieval.exact_search import iter_search

logger = logging.getLogger(__name__)

# query offset -> [(doc offset, score), ...] best first
Rankings = dict[int, list[tuple[int, float]]]
Run = dict[str, dict[str, float]]
DEFAULT_RUN_TAG = "SeDR"
TIE_RULE = (
    "scores made strictly decreasing in rank order: a score >= the previous one is replaced by the "
    "next float32 below it, so score-sorting tools reproduce the rank column"
)


def unique_docs(
    rows: np.ndarray, row_doc_ids: np.ndarray, scores: np.ndarray | None = None, k_docs: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Documents of ranked segment rows, each at its first (= best) hit, in rank order.

    Args:
        rows: int ``[k]`` segment rows best first; ``-1`` (faiss: fewer hits than asked) is dropped.
        row_doc_ids: int ``[S]`` document offset of every row.
        scores: optional float ``[k]`` scores of ``rows``.
        k_docs: keep at most this many documents.

    Returns:
        ``(docs [m], best_rows [m], best_scores [m] or None)`` with ``m <= k_docs``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    valid = rows >= 0
    rows = rows[valid]
    docs = np.asarray(row_doc_ids[rows], dtype=np.int64)
    _, first = np.unique(docs, return_index=True)
    first = np.sort(first)[:k_docs]
    best_scores = None if scores is None else np.asarray(scores)[valid][first]
    return docs[first], rows[first], best_scores


def rank_documents(
    scores: np.ndarray, rows: np.ndarray, row_doc_ids: np.ndarray, query_offsets: Sequence[int], k_docs: int
) -> Rankings:
    """Per query, the first ``k_docs`` unique documents of its segment hits with their best score."""
    out: Rankings = {}
    for q, s, r in zip(query_offsets, scores, rows):
        docs, _, best = unique_docs(r, row_doc_ids, s, k_docs)
        out[int(q)] = [(int(d), float(v)) for d, v in zip(docs, best)]
    return out


def max_rows_per_document(row_doc_ids: np.ndarray, chunk_rows: int = 1 << 22) -> int:
    """The most rows any document has (rows of a document are contiguous), read in chunks of the ids."""
    most, run, last = 0, 0, None
    for lo in range(0, len(row_doc_ids), chunk_rows):
        ids = np.asarray(row_doc_ids[lo : lo + chunk_rows], dtype=np.int64)
        starts = np.flatnonzero(np.diff(ids)) + 1  # first row of each new document inside the chunk
        edges = np.concatenate([[0], starts, [len(ids)]])
        lengths = np.diff(edges)
        if last is not None and ids[0] == last:  # the first document continues the previous chunk's last
            lengths[0] += run
        else:
            most = max(most, run)
        most = max(most, int(lengths[:-1].max(initial=0)))
        run, last = int(lengths[-1]), int(ids[-1])
    return max(most, run)


def exact_hits(k_docs: int, max_rows: int, hits: int = SEGMENT_HITS) -> int:
    """Segment hits that make the first ``k_docs`` documents exact (docs/retrieval.md#maxp-exactness):
    the rows above the best row of the document at rank ``k`` belong to the ``k - 1`` documents above it,
    ``max_rows`` at most each, so ``(k - 1) * max_rows + 1`` rows hold it; never fewer than ``hits``."""
    return max(int(hits), (int(k_docs) - 1) * int(max_rows) + 1)


def retrieve_documents(
    index,
    row_doc_ids: np.ndarray,
    queries: np.ndarray,
    query_offsets: Sequence[int],
    k_docs: int,
    hits: int = SEGMENT_HITS,
    batch_size: int | None = None,
    show_progress: bool = True,
    exact: bool = False,
) -> Rankings:
    """docs/retrieval.md#maxp-aggregation: search ``hits`` segment rows per query, keep the first ``k_docs``
    unique documents (101 for dev, 100 for TREC-DL), each scored by its best segment among the hits.

    ``exact`` (``--doc_topk_exact``): search as many rows as make the ``k_docs`` documents exactly the
    best by their best segment over every row (:func:`exact_hits`), not only over the first ``hits``.
    Queries are searched ``batch_size`` at a time (default: the index's query block), one pass each.
    """
    if exact:
        hits = exact_hits(k_docs, max_rows_per_document(row_doc_ids), hits)
    query_offsets = list(query_offsets)
    out: Rankings = {}
    for start, scores, rows in iter_search(index, queries, hits, batch_size, show_progress, "retrieve"):
        out.update(
            rank_documents(scores, rows, row_doc_ids, query_offsets[start : start + len(rows)], k_docs)
        )
    return out


def rank_consistent_scores(scores: Sequence[float]) -> np.ndarray:
    """float32 scores, strictly decreasing: each score ``>=`` its predecessor becomes the next float32
    below the predecessor. Distinct float32 values stay distinct when written with ``%.9g``."""
    out = np.asarray(scores, dtype=np.float32).copy()
    for i in range(1, len(out)):
        if not out[i] < out[i - 1]:
            out[i] = np.nextafter(out[i - 1], np.float32(-np.inf))
    return out


def _id_array(ids_by_offset: Mapping[int, int | str] | Mapping, n: int, what: str) -> np.ndarray:
    """``{id: offset}`` over offsets ``0..n-1`` as an array of ids by offset (int64 if every id is an int)."""
    ids = list(ids_by_offset.keys())
    offsets = np.fromiter(ids_by_offset.values(), dtype=np.int64, count=n)
    if n and (offsets.min() < 0 or offsets.max() >= n or len(np.unique(offsets)) != n):
        raise ValueError(f"{what} does not map onto offsets 0..N-1")
    if all(isinstance(i, (int, np.integer)) for i in ids):
        out = np.empty(n, dtype=np.int64)
    else:
        ids = [str(i) for i in ids]
        out = np.empty(n, dtype=f"U{max((len(i) for i in ids), default=1)}")
    out[offsets] = ids
    return out


@dataclass
class OriginalIds:
    """Offset → original id maps as arrays indexed by offset: documents ``D<number>`` (inverse of
    ``pid2offset.pickle``) and per-split query ids (inverse of ``{split}-qid2offset.pickle``). A
    collection's string document ids (docs/own-collection.md#ids) are kept in ``doc_strings`` and
    returned exactly."""

    doc_numbers: np.ndarray  # int64 [N_docs], MS MARCO number of each doc offset (empty for a collection)
    query_ids: dict[str, np.ndarray] = field(default_factory=dict)  # split -> ids [N_queries] by offset
    doc_strings: np.ndarray | None = None  # a collection's document id of each offset

    @classmethod
    def from_maps(cls, pid2offset: Mapping, qid2offset_by_split: Mapping[str, Mapping]):
        queries = {s: _id_array(m, len(m), f"{s}-qid2offset") for s, m in qid2offset_by_split.items()}
        return cls._with_docs(_id_array(pid2offset, len(pid2offset), "pid2offset"), queries)

    @classmethod
    def _with_docs(cls, doc_ids: np.ndarray, queries: dict[str, np.ndarray]) -> OriginalIds:
        if doc_ids.dtype.kind == "i":
            return cls(doc_ids, queries)
        return cls(np.zeros(0, dtype=np.int64), queries, doc_ids)

    @classmethod
    def load(cls, preprocess_dir: str | Path, splits: Sequence[str]) -> OriginalIds:
        """The maps of a preprocess folder, each pickle's dict dropped once it is an array."""
        folder = Path(preprocess_dir)
        pid2offset = load_id_map(folder / "pid2offset.pickle")
        doc_ids = _id_array(pid2offset, len(pid2offset), "pid2offset")
        del pid2offset
        queries = {
            s: _id_array(m, len(m), f"{s}-qid2offset")
            for s in splits
            for m in [load_id_map(folder / f"{s}-qid2offset.pickle")]
        }
        return cls._with_docs(doc_ids, queries)

    def doc(self, offset: int) -> str:
        if self.doc_strings is not None:
            return str(self.doc_strings[offset])
        return f"D{int(self.doc_numbers[offset])}"

    def query(self, split: str, offset: int) -> str:
        return str(self.query_ids[split][int(offset)])


def rankings_to_run(
    rankings: Rankings, cutoff: int | None = None, ids: OriginalIds | None = None, split: str | None = None
) -> Run:
    """An ir_measures run ``{qid: {docid: score}}`` (offset ids, or original ids with ``ids``+``split``)."""
    run: Run = {}
    for q, ranked in rankings.items():
        ranked = ranked[:cutoff]
        scores = rank_consistent_scores([s for _, s in ranked])
        qid = ids.query(split, q) if ids is not None else str(q)
        run[qid] = {
            (ids.doc(d) if ids is not None else str(d)): float(s) for (d, _), s in zip(ranked, scores)
        }
    return run


def write_trec_run(
    path: str | Path,
    rankings: Rankings,
    ids: OriginalIds | None = None,
    split: str | None = None,
    run_tag: str = DEFAULT_RUN_TAG,
    cutoff: int | None = None,
) -> None:
    """TREC run ``qid Q0 docid rank score run_tag``
    (ranks from 1; scores as :func:`rank_consistent_scores`)."""
    lines = []
    for q in sorted(rankings):
        ranked = rankings[q][:cutoff]
        qid = ids.query(split, q) if ids is not None else str(q)
        for rank, ((d, _), s) in enumerate(zip(ranked, rank_consistent_scores([s for _, s in ranked])), 1):
            docid = ids.doc(d) if ids is not None else str(d)
            lines.append(f"{qid} Q0 {docid} {rank} {s:.9g} {run_tag}\n")
    atomic_write_text(path, "".join(lines))


def write_msmarco_run(
    path: str | Path,
    rankings: Rankings,
    ids: OriginalIds | None = None,
    split: str | None = None,
    cutoff: int = MRR_CUTOFF,
) -> None:
    """MS MARCO run ``qid<TAB>docid<TAB>rank`` (top ``cutoff`` = 100 documents)."""
    lines = []
    for q in sorted(rankings):
        qid = ids.query(split, q) if ids is not None else str(q)
        for rank, (d, _) in enumerate(rankings[q][:cutoff], 1):
            lines.append(f"{qid}\t{ids.doc(d) if ids is not None else d}\t{rank}\n")
    atomic_write_text(path, "".join(lines))


def read_trec_run(path: str | Path) -> Run:
    """A TREC run file as ``{qid: {docid: score}}``."""
    path = Path(path)
    run: Run = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataFormatError(path, line_no, "expected `qid Q0 docid rank score tag`")
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run


def read_ranked_run(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """A TREC run ``qid Q0 docid rank score tag`` as rankings ``{qid: [(docid, score), ...]}`` best first
    (docs/own-collection.md#evaluate).

    Documents are ordered by score, descending; equal scores keep the rank column's order, then the
    file's: the tie rule of our own run files, whose rank column is the ranking. Queries keep the order of
    their first line. A malformed line, a score that is not finite, or a document listed twice for a query
    stops with the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(path, "give a TREC run file (qid Q0 docid rank score tag)")
    found: dict[str, list[tuple[float, int, int, str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            parts = decode_line(raw, path, line_no).split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataFormatError(
                    path, line_no, f"expected `qid Q0 docid rank score tag`, got {len(parts)} fields"
                )
            qid, _, docid, rank, score, _ = parts
            try:
                value, position = float(score), int(rank)
            except ValueError:
                raise DataFormatError(
                    path, line_no, f"rank {rank!r} or score {score!r} is not a number"
                ) from None
            if not np.isfinite(value):
                raise DataFormatError(path, line_no, f"score {score!r} is not a finite number")
            if (qid, docid) in seen:
                raise DataFormatError(
                    path,
                    line_no,
                    f"document {docid!r} is ranked twice for query {qid!r} (also on line {seen[qid, docid]})",
                )
            seen[qid, docid] = line_no
            found.setdefault(qid, []).append((-value, position, line_no, docid))
    return {q: [(d, -v) for v, _, _, d in sorted(rows)] for q, rows in found.items()}
