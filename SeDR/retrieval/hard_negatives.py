"""Static hard negatives: the top documents of each training query that are not relevant to it.

``hard_negative.json`` maps query offsets (decimal strings) to document offsets, best first,
positives excluded, at most ``HARDNEG_LIST_LENGTH`` (300) per query.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from SeDR.core.constants import HARDNEG_LIST_LENGTH, SEGMENT_HITS
from SeDR.core.errors import DataFormatError, MissingInputError
from SeDR.core.outputs import atomic_write
from SeDR.retrieval.exact_search import SEARCH_BATCH, iter_search
from SeDR.retrieval.ranking import unique_docs


def select_hard_negatives(
    rows: np.ndarray, row_doc_ids: np.ndarray, relevant: Collection[int], keep: int = HARDNEG_LIST_LENGTH
) -> list[int]:
    """Walk the hits in rank order, keep each document once, skip relevant ones, stop at ``keep``."""
    docs, _, _ = unique_docs(rows, row_doc_ids)
    relevant = set(int(d) for d in relevant)
    return [int(d) for d in docs if int(d) not in relevant][:keep]


def hard_negatives_for_queries(
    index,
    row_doc_ids: np.ndarray,
    queries: np.ndarray,
    query_offsets: Sequence[int],
    rel: Mapping[int, Collection[int]],
    hits: int = SEGMENT_HITS,
    keep: int = HARDNEG_LIST_LENGTH,
    batch_size: int = SEARCH_BATCH,
    show_progress: bool = True,
) -> dict[int, list[int]]:
    """Hard negatives of every query: ``{query offset: [doc offset, ...] best first}``
    (docs/retrieval.md#hard-negative-generation)."""
    query_offsets = list(query_offsets)
    out: dict[int, list[int]] = {}
    for start, _, rows in iter_search(index, queries, hits, batch_size, show_progress, "hard negatives"):
        for i, r in enumerate(rows):
            q = int(query_offsets[start + i])
            out[q] = select_hard_negatives(r, row_doc_ids, rel.get(q, ()), keep)
    return out


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
