"""Segment-embedding files: one float32 row per segment plus the document offset of each row.

``passages.memmap`` (float32 ``[S, d]``), ``passages-id.memmap`` (int32 ``[S]``, non-decreasing
document offsets, each document's rows contiguous and in segment order) and a completion record
``passages-meta.json``. The layout of the first two is the original code's, so its inference
folders can be read (:func:`load_segment_embeddings` with ``legacy_dim``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SeDR.core.errors import DataFormatError, MissingInputError
from SeDR.core.outputs import atomic_write, writing
from SeDR.modeling.checkpoint import model_fingerprint

logger = logging.getLogger(__name__)

EMBED_FILE = "{prefix}.memmap"
EMBED_ID_FILE = "{prefix}-id.memmap"
EMBED_META_FILE = "{prefix}-meta.json"
FIRST_ROW_CACHE = "pid2embids.pkl"
EMBED_FORMAT = "SeDR segment embeddings v1"
ENCODE_HINT = "encode the corpus first with `python SeDR/inference.py ...` (it writes passages.memmap)"
# Rows copied per chunk when joining shards (memory only).
COPY_CHUNK_ROWS = 1 << 18


@dataclass
class SegmentEmbeddings:
    """``vectors`` float32 ``[S, d]`` and ``doc_ids`` int32 ``[S]`` (document offset of each row)."""

    vectors: np.ndarray
    doc_ids: np.ndarray
    folder: Path
    info: dict

    @property
    def num_rows(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def embedding_paths(folder: str | Path, prefix: str = "passages") -> tuple[Path, Path, Path]:
    """Paths of the vectors, the row→doc ids and the completion record."""
    folder = Path(folder)
    return (
        folder / EMBED_FILE.format(prefix=prefix),
        folder / EMBED_ID_FILE.format(prefix=prefix),
        folder / EMBED_META_FILE.format(prefix=prefix),
    )


class SegmentEmbeddingWriter:
    """Streams ``(vectors, doc offsets)`` batches into ``passages.memmap`` / ``passages-id.memmap``.

    Rows go to hidden temporary files, renamed to their final names by :meth:`close`; until then an
    earlier complete encoding stays as it was. The completion record (``passages-meta.json``, with
    ``info`` = what made the vectors) is written last, so a kill at any point never leaves a file
    that looks complete but is not. Use as a context manager: on an exception the temporary files go.
    """

    def __init__(self, folder: str | Path, dim: int, prefix: str = "passages", info: dict | None = None):
        self.emb_path, self.id_path, self.meta_path = embedding_paths(folder, prefix)
        self.tmp_paths = [p.with_name(f".{p.name}.tmp") for p in (self.emb_path, self.id_path)]
        self.dim, self.info = int(dim), dict(info or {})
        self.rows, self.last_doc = 0, -1
        with writing(self.tmp_paths[0]):
            self.emb_path.parent.mkdir(parents=True, exist_ok=True)
            self._emb, self._ids = (open(p, "wb") for p in self.tmp_paths)

    def append(self, vectors: np.ndarray, doc_ids: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)
        doc_ids = np.ascontiguousarray(doc_ids, dtype=np.int32)  # (n,)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(doc_ids) != len(vectors):
            raise ValueError(
                f"expected vectors [n, {self.dim}] and n doc ids, got {vectors.shape} and {doc_ids.shape}"
            )
        if len(doc_ids) == 0:
            return
        if doc_ids[0] < self.last_doc or np.any(np.diff(doc_ids) < 0):
            raise ValueError("document offsets must be non-decreasing across the written rows")
        with writing(self.emb_path):
            self._emb.write(vectors.tobytes())
            self._ids.write(doc_ids.tobytes())
        self.rows += len(doc_ids)
        self.last_doc = int(doc_ids[-1])

    def _record(self, complete: bool) -> None:
        meta = {
            "format": EMBED_FORMAT,
            "rows": self.rows,
            "dim": self.dim,
            "dtype": "float32",
            "id_dtype": "int32",
            "num_docs": self.last_doc + 1,
            "complete": complete,
            "info": self.info,
        }
        atomic_write(self.meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))

    def close(self) -> None:
        """Flush, move the files to their final names and mark them complete."""
        with writing(self.emb_path):
            for f in (self._emb, self._ids):
                f.flush()
                os.fsync(f.fileno())
                f.close()
        self._record(complete=False)  # a kill between the renames leaves an incomplete folder of ours
        for tmp, final in zip(self.tmp_paths, (self.emb_path, self.id_path)):
            os.replace(tmp, final)
        self._record(complete=True)

    def abort(self) -> None:
        for f in (self._emb, self._ids):
            f.close()
        for p in self.tmp_paths:
            p.unlink(missing_ok=True)

    def __enter__(self) -> SegmentEmbeddingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_record(folder: str | Path, prefix: str = "passages") -> dict | None:
    """The completion record of our encoding in ``folder`` (complete or not), or None if there is none."""
    meta_path = embedding_paths(folder, prefix)[2]
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


def _read_meta(folder: str | Path, prefix: str) -> dict | None:
    """The record of a complete encoding whose files have the recorded sizes, else None."""
    emb_path, id_path, _ = embedding_paths(folder, prefix)
    meta = read_record(folder, prefix)
    if not meta or not meta.get("complete") or not (emb_path.exists() and id_path.exists()):
        return None
    rows, dim = int(meta.get("rows", -1)), int(meta.get("dim", -1))
    sizes_ok = emb_path.stat().st_size == rows * dim * 4 and id_path.stat().st_size == rows * 4
    return meta if sizes_ok else None


# The identity record of an encoding (docs/errors.md#embedding-identity), one for inference folders
# and index folders. Who owns a folder of vectors: another owner's folder is never written into.
OWNER_KEYS = ("model_path", "model_class")
# What a search must share with the index it searches (a copied model folder is the same model).
SEARCH_KEYS = (
    "model_fingerprint",
    "model_class",
    "seg_length",
    "max_seg_num",
    "content_len",
    "dim",
    "max_doc_length",
    "max_doc_character",
    "tokenizer_record",
)
# Fields added to the record later: compared only where a folder records them.
LATER_KEYS = ("tokenizer_record",)


def embedding_identity(model, model_path, seg_length: int, max_seg_num: int, content_len: int, **documents):
    """What makes an encoding: the model (folder, class, weights' fingerprint), the segment shape and the
    vector dimension, then what describes the documents (``documents``: the preprocess folder's
    fingerprint and size for inference; the tokenizer and text cuts for an index folder)."""
    return {
        "model_path": str(Path(model_path).resolve()),
        "model_class": model.model_class_name,
        "model_fingerprint": model_fingerprint(model_path),
        "seg_length": seg_length,
        "max_seg_num": max_seg_num,
        "content_len": content_len,
        "dim": model.embedding_dim,
        **documents,
    }


def identity_changes(stored: Mapping, wanted: Mapping, keys: Sequence[str] | None = None) -> dict:
    """``{key: (stored, wanted)}`` for every identity field among ``keys`` (default: all of ``wanted``)
    that differs; a :data:`LATER_KEYS` field a folder does not record is not compared."""
    keys = list(wanted) if keys is None else keys
    return {
        k: (stored.get(k), wanted.get(k))
        for k in keys
        if stored.get(k) != wanted.get(k) and not (k in LATER_KEYS and k not in stored)
    }


def embeddings_complete(
    folder: str | Path, prefix: str = "passages", expect_info: Mapping | None = None
) -> bool:
    """True iff a finished encoding is there (record present, file sizes match, ``info`` agrees)."""
    meta = _read_meta(folder, prefix)
    return meta is not None and not identity_changes(meta.get("info", {}), expect_info or {})


def foreign_embeddings(folder: str | Path, prefix: str = "passages") -> bool:
    """Segment-embedding files without our record: written by another program (the original code)."""
    emb_path, id_path, meta_path = embedding_paths(folder, prefix)
    return emb_path.exists() and id_path.exists() and not meta_path.exists()


def load_segment_embeddings(
    folder: str | Path, prefix: str = "passages", legacy_dim: int | None = None, hint: str = ENCODE_HINT
) -> SegmentEmbeddings:
    """Open complete segment embeddings read-only (memmaps, nothing loaded into memory).

    ``legacy_dim`` opens files without a completion record (e.g. from the original code) by
    deriving the row count from the id file; sizes must agree exactly. ``hint``: the command that
    writes them again (an index folder's is ``python -m SeDR.index``).
    """
    emb_path, id_path, meta_path = embedding_paths(folder, prefix)
    meta = _read_meta(folder, prefix)
    if meta is None:
        record = read_record(folder, prefix)
        if record is not None and record.get("complete") and emb_path.exists():
            want = int(record["rows"]) * int(record["dim"]) * 4
            raise DataFormatError(
                emb_path,
                None,
                f"{emb_path.stat().st_size} bytes, but its record says "
                f"{record['rows']} rows x {record['dim']} ({want} bytes): truncated; {hint}",
            )
        if legacy_dim is None or not (emb_path.exists() and id_path.exists()):
            state = "incomplete (no completion record)" if emb_path.exists() else "missing"
            raise MissingInputError(emb_path, f"embeddings are {state}; {hint}")
        rows = id_path.stat().st_size // 4
        if emb_path.stat().st_size != rows * legacy_dim * 4 or id_path.stat().st_size % 4:
            raise DataFormatError(
                emb_path,
                None,
                f"{emb_path.stat().st_size} bytes do not hold the {rows} rows of "
                f"{id_path.name} at dimension {legacy_dim} (float32): truncated, or made by a "
                "model of another dimension",
            )
        meta = {"rows": rows, "dim": legacy_dim, "info": {"legacy": True}}
    rows, dim = int(meta["rows"]), int(meta["dim"])
    vectors = np.memmap(emb_path, dtype=np.float32, mode="r", shape=(rows, dim))
    doc_ids = np.memmap(id_path, dtype=np.int32, mode="r", shape=(rows,))
    return SegmentEmbeddings(vectors, doc_ids, Path(folder), dict(meta.get("info", {})))


def check_rows_per_document(folder: str | Path, model_dim: int, expected_rows: np.ndarray) -> None:
    """A foreign encoding must have this model's dimension and, per document, the rows this model emits."""
    emb = load_segment_embeddings(folder, legacy_dim=model_dim)
    counts = np.bincount(np.asarray(emb.doc_ids, dtype=np.int64), minlength=len(expected_rows))
    if len(counts) != len(expected_rows) or (emb.num_rows and int(np.asarray(emb.doc_ids).min()) < 0):
        raise DataFormatError(
            emb.folder / EMBED_ID_FILE.format(prefix="passages"),
            None,
            f"document offsets do not cover the corpus's {len(expected_rows)} documents",
        )
    bad = np.flatnonzero(counts != expected_rows)
    if len(bad):
        d = int(bad[0])
        raise DataFormatError(
            emb.folder / EMBED_ID_FILE.format(prefix="passages"),
            None,
            f"document {d} has {counts[d]} rows, this model and segmentation give "
            f"{expected_rows[d]} ({len(bad)} documents differ): made with other settings",
        )
    first_row_index(emb.doc_ids)  # contiguous and in offset order


def concat_embedding_shards(
    folder: str | Path,
    shard_prefixes: Sequence[str],
    prefix: str = "passages",
    rows_per_chunk: int = COPY_CHUNK_ROWS,
) -> SegmentEmbeddings:
    """Join complete per-shard encodings (contiguous document ranges, in order) into one."""
    shards = [load_segment_embeddings(folder, p) for p in shard_prefixes]
    if not shards:
        raise ValueError("no shards given")
    with SegmentEmbeddingWriter(folder, shards[0].dim, prefix, info=shards[0].info) as writer:
        for shard in shards:
            for i in range(0, shard.num_rows, rows_per_chunk):
                writer.append(shard.vectors[i : i + rows_per_chunk], shard.doc_ids[i : i + rows_per_chunk])
    return load_segment_embeddings(folder, prefix)


def first_row_index(row_doc_ids: np.ndarray) -> np.ndarray:
    """``first_row[doc]`` = first row of document ``doc``, plus the sentinel ``S``: int64 ``[N + 1]``.

    Rows of document ``d`` are ``first_row[d] : first_row[d + 1]``. Requires the layout of
    docs/retrieval.md#embedding-files: documents 0..N-1 appear contiguously and in offset order,
    each with at least one row.
    """
    ids = np.asarray(row_doc_ids, dtype=np.int64)  # (S,)
    if len(ids) == 0:
        return np.zeros(1, dtype=np.int64)
    step = np.diff(ids)
    bad = np.flatnonzero((step != 0) & (step != 1))
    if ids[0] != 0 or len(bad):
        where = 0 if ids[0] != 0 else int(bad[0]) + 1
        raise ValueError(
            f"row {where} has document offset {int(ids[where])} after "
            f"{int(ids[where - 1]) if where else 'the start'}: the row->doc ids must list "
            "documents 0..N-1 contiguously in offset order (re-encode the corpus in one pass "
            "or join shards in order)"
        )
    return np.concatenate([[0], np.flatnonzero(step) + 1, [len(ids)]]).astype(np.int64)


def load_or_build_first_row(folder: str | Path, row_doc_ids: np.ndarray, cache: bool = True) -> np.ndarray:
    """:func:`first_row_index`, cached in ``{folder}/pid2embids.pkl`` (rebuilt if the row count changed).

    ``cache=False`` for a folder we do not own (the original code writes a file of that name too).
    """
    if not cache:
        return first_row_index(row_doc_ids)
    path = Path(folder) / FIRST_ROW_CACHE
    if path.exists():
        try:
            with open(path, "rb") as f:
                cached = pickle.load(f)
            if isinstance(cached, dict) and cached.get("num_rows") == len(row_doc_ids):
                return np.asarray(cached["first_row"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, AttributeError):
            pass
        logger.info("rebuilding stale %s", path)
    first_row = first_row_index(row_doc_ids)
    payload = {"num_rows": len(row_doc_ids), "first_row": first_row}
    atomic_write(path, lambda f: pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL))
    return first_row
