"""Segment-vector storage, exact inner-product search, and the row→document bookkeeping.

The index holds one row per segment; a document is ranked by its best segment among the
``SEGMENT_HITS`` (1024) hits of a query (SPEC §7.3). The same hits feed the hard-negative walk
(SPEC §6) and ADORE's positive/negative choice (SPEC §8).

faiss is optional on the GPU side: with ``faiss-gpu`` installed and a visible GPU the index lives on
one GPU or is sharded over several; otherwise one warning is logged and search runs on faiss-cpu
(same results: the flat index is exact). :class:`TorchFlatIndex` is an exact pure-torch
alternative (any device) used for cross-checks.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from SeDR.constants import HARDNEG_KEEP, SEGMENT_HITS
from SeDR.errors import DataFormatError, MissingInputError

logger = logging.getLogger(__name__)

# GPU temporary memory of the original's faiss resources (SPEC §7.3).
SINGLE_GPU_TEMP_MEMORY = 512 * 1024 * 1024
SHARDED_GPU_TEMP_MEMORY = 200 * 1024 * 1024
# ADORE keeps the first `metric_cut` unique documents of each query's hits (SPEC §8).
ADORE_METRIC_CUT = 200
# Queries per search call and rows per index `add` (memory only, results do not depend on them).
SEARCH_BATCH = 1024
ADD_BATCH_ROWS = 1 << 18

EMBED_FILE = "{prefix}.memmap"
EMBED_ID_FILE = "{prefix}-id.memmap"
EMBED_META_FILE = "{prefix}-meta.json"
FIRST_ROW_CACHE = "pid2embids.pkl"
EMBED_FORMAT = "SeDR segment embeddings v1"
ENCODE_HINT = "encode the corpus first with `python SeDR/inference.py ...` (it writes passages.memmap)"

# query offset -> [(doc offset, score), ...] best first
Rankings = dict[int, list[tuple[int, float]]]


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# Segment-embedding memmaps (SPEC §7.2)
# --------------------------------------------------------------------------------------------


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
    return (folder / EMBED_FILE.format(prefix=prefix), folder / EMBED_ID_FILE.format(prefix=prefix),
            folder / EMBED_META_FILE.format(prefix=prefix))


class SegmentEmbeddingWriter:
    """Streams ``(vectors, doc offsets)`` batches into ``passages.memmap`` / ``passages-id.memmap``.

    The completion record (``passages-meta.json``) is removed when writing starts and written only
    by :meth:`close`, so an interrupted encoding is never mistaken for a complete one. Use as a
    context manager: on an exception the files stay incomplete.
    """

    def __init__(self, folder: str | Path, dim: int, prefix: str = "passages", info: dict | None = None):
        self.emb_path, self.id_path, self.meta_path = embedding_paths(folder, prefix)
        self.emb_path.parent.mkdir(parents=True, exist_ok=True)
        self.meta_path.unlink(missing_ok=True)
        self.dim, self.info = int(dim), dict(info or {})
        self.rows, self.last_doc = 0, -1
        self._emb = open(self.emb_path, "wb")
        self._ids = open(self.id_path, "wb")

    def append(self, vectors: np.ndarray, doc_ids: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)
        doc_ids = np.ascontiguousarray(doc_ids, dtype=np.int32)  # (n,)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(doc_ids) != len(vectors):
            raise ValueError(f"expected vectors [n, {self.dim}] and n doc ids, got {vectors.shape} and "
                             f"{doc_ids.shape}")
        if len(doc_ids) == 0:
            return
        if doc_ids[0] < self.last_doc or np.any(np.diff(doc_ids) < 0):
            raise ValueError("document offsets must be non-decreasing across the written rows (SPEC §7.2)")
        self._emb.write(vectors.tobytes())
        self._ids.write(doc_ids.tobytes())
        self.rows += len(doc_ids)
        self.last_doc = int(doc_ids[-1])

    def close(self) -> None:
        """Flush the data and mark the files complete."""
        self._abort()
        meta = {"format": EMBED_FORMAT, "rows": self.rows, "dim": self.dim, "dtype": "float32",
                "id_dtype": "int32", "num_docs": self.last_doc + 1, "complete": True, "info": self.info}
        _atomic_write(self.meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))

    def _abort(self) -> None:
        for f in (self._emb, self._ids):
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()

    def __enter__(self) -> SegmentEmbeddingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


def _read_meta(folder: str | Path, prefix: str) -> dict | None:
    emb_path, id_path, meta_path = embedding_paths(folder, prefix)
    if not (meta_path.exists() and emb_path.exists() and id_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return None
    rows, dim = int(meta.get("rows", -1)), int(meta.get("dim", -1))
    sizes_ok = emb_path.stat().st_size == rows * dim * 4 and id_path.stat().st_size == rows * 4
    return meta if meta.get("complete") and sizes_ok else None


def embeddings_complete(folder: str | Path, prefix: str = "passages", expect_info: Mapping | None = None) -> bool:
    """True iff a finished encoding is there (record present, file sizes match, ``info`` agrees)."""
    meta = _read_meta(folder, prefix)
    if meta is None:
        return False
    info = meta.get("info", {})
    mismatched = {k: (info.get(k), v) for k, v in (expect_info or {}).items() if info.get(k) != v}
    if mismatched:
        logger.warning("existing embeddings in %s were made with different settings %s (stored, wanted)",
                       folder, mismatched)
        return False
    return True


def load_segment_embeddings(folder: str | Path, prefix: str = "passages",
                            legacy_dim: int | None = None) -> SegmentEmbeddings:
    """Open complete segment embeddings read-only (memmaps, nothing loaded into memory).

    ``legacy_dim`` opens files without a completion record (e.g. from the original code) by
    deriving the row count from the id file; sizes must agree exactly.
    """
    emb_path, id_path, meta_path = embedding_paths(folder, prefix)
    meta = _read_meta(folder, prefix)
    if meta is None:
        if legacy_dim is None or not (emb_path.exists() and id_path.exists()):
            state = "incomplete (no completion record)" if emb_path.exists() else "missing"
            raise MissingInputError(emb_path, f"embeddings are {state}; {ENCODE_HINT}")
        rows = id_path.stat().st_size // 4
        if emb_path.stat().st_size != rows * legacy_dim * 4:
            raise DataFormatError(emb_path, None, f"size does not match {rows} rows of dimension {legacy_dim}")
        meta = {"rows": rows, "dim": legacy_dim, "info": {"legacy": True}}
    rows, dim = int(meta["rows"]), int(meta["dim"])
    vectors = np.memmap(emb_path, dtype=np.float32, mode="r", shape=(rows, dim))
    doc_ids = np.memmap(id_path, dtype=np.int32, mode="r", shape=(rows,))
    return SegmentEmbeddings(vectors, doc_ids, Path(folder), dict(meta.get("info", {})))


def concat_embedding_shards(folder: str | Path, shard_prefixes: Sequence[str], prefix: str = "passages",
                            rows_per_chunk: int = ADD_BATCH_ROWS) -> SegmentEmbeddings:
    """Join complete per-shard encodings (contiguous document ranges, in order) into one."""
    shards = [load_segment_embeddings(folder, p) for p in shard_prefixes]
    if not shards:
        raise ValueError("no shards given")
    with SegmentEmbeddingWriter(folder, shards[0].dim, prefix, info=shards[0].info) as writer:
        for shard in shards:
            for i in range(0, shard.num_rows, rows_per_chunk):
                writer.append(shard.vectors[i: i + rows_per_chunk], shard.doc_ids[i: i + rows_per_chunk])
    return load_segment_embeddings(folder, prefix)


# --------------------------------------------------------------------------------------------
# Row -> document bookkeeping (SPEC §7.3, §8 step 1)
# --------------------------------------------------------------------------------------------


def first_row_index(row_doc_ids: np.ndarray) -> np.ndarray:
    """``first_row[doc]`` = first row of document ``doc``, plus the sentinel ``S``: int64 ``[N + 1]``.

    Rows of document ``d`` are ``first_row[d] : first_row[d + 1]``. Requires the layout of SPEC §7.2:
    documents 0..N-1 appear contiguously and in offset order, each with at least one row.
    """
    ids = np.asarray(row_doc_ids, dtype=np.int64)  # (S,)
    if len(ids) == 0:
        return np.zeros(1, dtype=np.int64)
    step = np.diff(ids)
    bad = np.flatnonzero((step != 0) & (step != 1))
    if ids[0] != 0 or len(bad):
        where = 0 if ids[0] != 0 else int(bad[0]) + 1
        raise ValueError(f"row {where} has document offset {int(ids[where])} after "
                         f"{int(ids[where - 1]) if where else 'the start'}: the row->doc ids must list "
                         "documents 0..N-1 contiguously in offset order (re-encode the corpus in one pass "
                         "or join shards in order)")
    return np.concatenate([[0], np.flatnonzero(step) + 1, [len(ids)]]).astype(np.int64)


def load_or_build_first_row(folder: str | Path, row_doc_ids: np.ndarray) -> np.ndarray:
    """:func:`first_row_index`, cached in ``{folder}/pid2embids.pkl`` (rebuilt if the row count changed)."""
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
    _atomic_write(path, lambda f: pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL))
    return first_row


def unique_docs(rows: np.ndarray, row_doc_ids: np.ndarray, scores: np.ndarray | None = None,
                k_docs: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
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


def rank_documents(scores: np.ndarray, rows: np.ndarray, row_doc_ids: np.ndarray,
                   query_offsets: Sequence[int], k_docs: int) -> Rankings:
    """Per query, the first ``k_docs`` unique documents of its segment hits with their best score."""
    out: Rankings = {}
    for q, s, r in zip(query_offsets, scores, rows):
        docs, _, best = unique_docs(r, row_doc_ids, s, k_docs)
        out[int(q)] = [(int(d), float(v)) for d, v in zip(docs, best)]
    return out


# --------------------------------------------------------------------------------------------
# Exact inner-product indexes (SPEC §7.3)
# --------------------------------------------------------------------------------------------


def _faiss():
    import faiss

    return faiss


def faiss_gpu_available() -> bool:
    """faiss was built with GPU support and sees at least one GPU."""
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_faiss_gpus(gpu_ids: Sequence[int] | None) -> list[int]:
    """The GPU ids to place the index on; ``[]`` means CPU.

    Asking for GPUs without faiss GPU support or without a visible GPU logs one warning and
    returns ``[]`` (``--faiss_gpus 0`` on a CPU machine must work). An id beyond the visible GPUs
    is a user error.
    """
    ids = [int(i) for i in (gpu_ids or [])]
    if not ids:
        return []
    if not faiss_gpu_available():
        logger.warning("--faiss_gpus %s requested but faiss has no GPU support or sees no GPU; searching "
                       "on CPU with faiss-cpu (exact, same results, slower). For GPU search replace "
                       "faiss-cpu by faiss-gpu.", " ".join(map(str, ids)))
        return []
    n = _faiss().get_num_gpus()
    wrong = [i for i in ids if not 0 <= i < n]
    if wrong or len(set(ids)) != len(ids):
        raise ValueError(f"--faiss_gpus {ids}: faiss sees GPUs 0..{n - 1}; give distinct ids in that range")
    return ids


class FaissFlatIndex:
    """Exact inner-product index over segment rows (``IndexFlatIP``, float32) on CPU or GPU(s).

    Keeps the GPU resources alive as long as the index. ``fp16`` stores GPU vectors in float16
    (half the memory, approximate scores); it is ignored on CPU.
    """

    def __init__(self, vectors: np.ndarray, gpu_ids: Sequence[int] | None = None, fp16: bool = False,
                 add_batch_rows: int = ADD_BATCH_ROWS, show_progress: bool = True):
        faiss = _faiss()
        self.dim = int(vectors.shape[1])
        self.gpu_ids = resolve_faiss_gpus(gpu_ids)
        self.resources: list = []
        cpu_index = faiss.IndexFlatIP(self.dim)
        for i in tqdm(range(0, len(vectors), add_batch_rows), desc="build index", unit="chunk",
                      disable=not show_progress or None):
            cpu_index.add(np.ascontiguousarray(vectors[i: i + add_batch_rows], dtype=np.float32))
        if not self.gpu_ids:
            if fp16:
                logger.info("--faiss_fp16 has no effect on a CPU index")
            self.index = cpu_index
        elif len(self.gpu_ids) == 1:
            res = faiss.StandardGpuResources()
            res.setTempMemory(SINGLE_GPU_TEMP_MEMORY)
            co = faiss.GpuClonerOptions()
            co.useFloat16 = bool(fp16)
            self.resources.append(res)
            self.index = faiss.index_cpu_to_gpu(res, self.gpu_ids[0], cpu_index, co)
        else:
            for _ in self.gpu_ids:
                res = faiss.StandardGpuResources()
                res.setTempMemory(SHARDED_GPU_TEMP_MEMORY)
                self.resources.append(res)
            co = faiss.GpuMultipleClonerOptions()
            co.shard = True  # each GPU holds a contiguous slice of the rows (IndexShards)
            co.useFloat16 = bool(fp16)
            self.index = faiss.index_cpu_to_gpu_multiple_py(self.resources, cpu_index, co, self.gpu_ids)
        if self.gpu_ids:
            cpu_index.reset()
        where = f"GPU {self.gpu_ids}" if self.gpu_ids else "CPU"
        logger.info("flat inner-product index: %d rows of dimension %d on %s", self.ntotal, self.dim, where)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: scores float32 ``[n, k]``, rows int64 ``[n, k]`` (``-1`` if fewer)."""
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), int(k))
        return scores, rows.astype(np.int64, copy=False)


class TorchFlatIndex:
    """Exact inner-product top-k in torch, on any device (a cross-check for faiss, or GPU search
    without faiss-gpu). Rows are scanned in chunks so the score matrix stays small."""

    def __init__(self, vectors: np.ndarray, device: torch.device | str = "cpu", chunk_rows: int = ADD_BATCH_ROWS):
        self.device = torch.device(device)
        self.vectors = torch.as_tensor(np.asarray(vectors, dtype=np.float32), device=self.device)  # (S, d)
        self.dim, self.chunk_rows = int(self.vectors.shape[1]), int(chunk_rows)

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = torch.as_tensor(np.asarray(queries, dtype=np.float32), device=self.device)  # (n, d)
        n, kk = q.shape[0], min(int(k), self.ntotal)
        best_s = torch.full((n, 0), float("-inf"), device=self.device)
        best_r = torch.zeros((n, 0), dtype=torch.long, device=self.device)
        for start in range(0, self.ntotal, self.chunk_rows):
            s = q @ self.vectors[start: start + self.chunk_rows].T  # (n, chunk)
            top_s, top_r = s.topk(min(kk, s.shape[1]), dim=1)
            cand_s = torch.cat([best_s, top_s], dim=1)  # (n, <= 2k)
            cand_r = torch.cat([best_r, top_r + start], dim=1)
            best_s, idx = cand_s.topk(min(kk, cand_s.shape[1]), dim=1)
            best_r = cand_r.gather(1, idx)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        rows = np.full((n, k), -1, dtype=np.int64)
        scores[:, :kk], rows[:, :kk] = best_s.cpu().numpy(), best_r.cpu().numpy()
        return scores, rows


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``(scores [n, k_i], rows [n, k_i])`` (global row ids, ``-1`` = none) into the top ``k``."""
    scores = np.concatenate([p[0] for p in parts], axis=1)  # (n, sum k_i)
    rows = np.concatenate([p[1] for p in parts], axis=1)
    scores = np.where(rows < 0, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_s, top_r = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
    top_r = np.where(np.isfinite(top_s), top_r, -1)
    if top_s.shape[1] < k:  # fewer rows than asked in all shards together
        pad = k - top_s.shape[1]
        top_s = np.pad(top_s, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_r = np.pad(top_r, ((0, 0), (0, pad)), constant_values=-1)
    return top_s.astype(np.float32), top_r.astype(np.int64)


class ShardedCpuIndex:
    """Exact search over contiguous row shards, one shard's index in memory at a time.

    For CPU-only machines whose RAM cannot hold one flat index over all segment vectors: each
    ``search`` builds a flat index per shard in turn, searches it, frees it, and merges the
    per-shard top-k (same ranking as one flat index, ties aside).
    """

    def __init__(self, vectors: np.ndarray, num_shards: int):
        self.vectors, self.dim = vectors, int(vectors.shape[1])
        n = len(vectors)
        self.bounds = [(n * i // num_shards, n * (i + 1) // num_shards) for i in range(num_shards)]
        logger.info("sharded CPU search: %d rows in %d shards", n, num_shards)

    @property
    def ntotal(self) -> int:
        return int(len(self.vectors))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for lo, hi in self.bounds:
            if hi <= lo:
                continue
            shard = FaissFlatIndex(self.vectors[lo:hi], None, show_progress=False)
            s, r = shard.search(queries, min(int(k), hi - lo))
            parts.append((s, np.where(r >= 0, r + lo, -1)))
            del shard
        return merge_topk(parts, int(k))


def build_index(vectors: np.ndarray, faiss_gpus: Sequence[int] | None = None, fp16: bool = False,
                backend: str = "faiss", torch_device: torch.device | str | None = None,
                show_progress: bool = True, search_shards: int = 1):
    """The search index for ``--faiss_gpus`` / ``--faiss_fp16``; ``backend="torch"`` is the exact
    pure-torch alternative on ``torch_device`` (e.g. a GPU without faiss-gpu)."""
    if backend == "faiss":
        if search_shards > 1 and not resolve_faiss_gpus(faiss_gpus):
            return ShardedCpuIndex(vectors, search_shards)
        return FaissFlatIndex(vectors, faiss_gpus, fp16, show_progress=show_progress)
    if backend == "torch":
        return TorchFlatIndex(vectors, torch_device or "cpu")
    raise ValueError(f"unknown search backend {backend!r}; choose faiss or torch")


def set_faiss_threads(n: int | None) -> None:
    """OpenMP threads of faiss-cpu search (ADORE's ``--faiss_omp_num_threads``); None keeps the default."""
    if n:
        _faiss().omp_set_num_threads(int(n))


def iter_search(index, queries: np.ndarray, k: int = SEGMENT_HITS, batch_size: int = SEARCH_BATCH,
                show_progress: bool = True, desc: str = "search") -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, scores [b, k], rows [b, k])`` for consecutive query batches."""
    for start in tqdm(range(0, len(queries), batch_size), desc=desc, unit="batch",
                      disable=not show_progress or None):
        scores, rows = index.search(queries[start: start + batch_size], k)
        yield start, scores, rows


def search(index, queries: np.ndarray, k: int = SEGMENT_HITS, batch_size: int = SEARCH_BATCH,
           show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Batched top-``k`` search of all ``queries``: scores float32 ``[n, k]``, rows int64 ``[n, k]``."""
    parts = list(iter_search(index, queries, k, batch_size, show_progress))
    if not parts:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def retrieve_documents(index, row_doc_ids: np.ndarray, queries: np.ndarray, query_offsets: Sequence[int],
                       k_docs: int, hits: int = SEGMENT_HITS, batch_size: int = SEARCH_BATCH,
                       show_progress: bool = True) -> Rankings:
    """SPEC §7.3: search ``hits`` segment rows per query, keep the first ``k_docs`` unique documents
    (101 for dev, 100 for TREC-DL), each scored by its best segment among the hits."""
    query_offsets = list(query_offsets)
    out: Rankings = {}
    for start, scores, rows in iter_search(index, queries, hits, batch_size, show_progress, "retrieve"):
        out.update(rank_documents(scores, rows, row_doc_ids, query_offsets[start: start + len(rows)], k_docs))
    return out


# --------------------------------------------------------------------------------------------
# Hard negatives (SPEC §6)
# --------------------------------------------------------------------------------------------


def select_hard_negatives(rows: np.ndarray, row_doc_ids: np.ndarray, relevant: Collection[int],
                          keep: int = HARDNEG_KEEP) -> list[int]:
    """Walk the hits in rank order, keep each document once, skip relevant ones, stop at ``keep``."""
    docs, _, _ = unique_docs(rows, row_doc_ids)
    relevant = set(int(d) for d in relevant)
    return [int(d) for d in docs if int(d) not in relevant][:keep]


def hard_negatives_for_queries(index, row_doc_ids: np.ndarray, queries: np.ndarray,
                               query_offsets: Sequence[int], rel: Mapping[int, Collection[int]],
                               hits: int = SEGMENT_HITS, keep: int = HARDNEG_KEEP,
                               batch_size: int = SEARCH_BATCH, show_progress: bool = True) -> dict[int, list[int]]:
    """Hard negatives of every query: ``{query offset: [doc offset, ...] best first}`` (SPEC §6 step 2)."""
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

    _atomic_write(Path(path), write)


def load_hard_negatives(path: str | Path) -> dict[int, list[int]]:
    """Read ``hard_negative.json`` into ``{query offset: [doc offset, ...]}``."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, "generate it with `python SeDR/inference.py ... --gen_hardneg` (SPEC §6)")
    try:
        raw = json.loads(path.read_text())
        return {int(q): [int(d) for d in docs] for q, docs in raw.items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as err:
        raise DataFormatError(path, None, f"not a hard-negative JSON object of int lists ({err})") from None


# --------------------------------------------------------------------------------------------
# ADORE targets (SPEC §8 step 4)
# --------------------------------------------------------------------------------------------


@dataclass
class AdoreTargets:
    """One query's ADORE training rows and its retrieval quality (for logging).

    ``positive_row`` is the best retrieved row of the first relevant document among the first
    ``metric_cut`` unique documents, else the best row (by ``q·E[row]``) of the first relevant
    document in qrels order; ``negative_rows`` are the best rows of the non-relevant documents.
    """

    positive_row: int
    negative_rows: np.ndarray  # int64 [<= metric_cut]
    positive_retrieved: bool
    rr_at_100: float
    recall_at_100: float  # 1 if any relevant document is in the first 100


def best_row_of_doc(doc: int, query_vec: np.ndarray, vectors: np.ndarray, first_row: np.ndarray) -> int:
    """The row of document ``doc`` with the largest ``q·E[row]`` among all its rows."""
    lo, hi = int(first_row[doc]), int(first_row[doc + 1])
    seg = np.asarray(vectors[lo:hi], dtype=np.float32)  # (s, d)
    return lo + int(np.argmax(seg @ np.asarray(query_vec, dtype=np.float32)))


def adore_targets(rows: np.ndarray, row_doc_ids: np.ndarray, relevant: Sequence[int], query_vec: np.ndarray,
                  vectors: np.ndarray, first_row: np.ndarray, metric_cut: int = ADORE_METRIC_CUT,
                  mrr_cutoff: int = 100) -> AdoreTargets:
    """SPEC §8 step 4 for one query.

    Args:
        rows: int ``[k]`` index hits, best first (``-1`` entries are ignored).
        row_doc_ids: int ``[S]`` document offset of each row.
        relevant: relevant documents in qrels order (the fallback uses ``relevant[0]``).
        query_vec: float ``[d]`` the (detached) query vector the hits were searched with.
        vectors: float32 ``[S, d]`` the frozen segment vectors; ``first_row`` int ``[N + 1]``.
    """
    if len(relevant) == 0:
        raise ValueError("ADORE needs at least one relevant document per query")
    docs, best_rows, _ = unique_docs(rows, row_doc_ids, k_docs=metric_cut)
    rel_set = set(int(d) for d in relevant)
    y = np.fromiter((int(d) in rel_set for d in docs), dtype=bool, count=len(docs))
    hit = np.flatnonzero(y)
    top = np.flatnonzero(y[:mrr_cutoff])
    rr = 1.0 / (top[0] + 1) if len(top) else 0.0
    if len(hit):
        pos = int(best_rows[hit[0]])
    else:
        pos = best_row_of_doc(int(relevant[0]), query_vec, vectors, first_row)
    return AdoreTargets(pos, best_rows[~y].astype(np.int64), bool(len(hit)), float(rr), float(len(top) > 0))


def adore_batch_targets(rows: np.ndarray, queries: np.ndarray, relevant: Sequence[Sequence[int]],
                        row_doc_ids: np.ndarray, vectors: np.ndarray, first_row: np.ndarray,
                        metric_cut: int = ADORE_METRIC_CUT) -> list[AdoreTargets]:
    """:func:`adore_targets` for a batch: ``rows [B, k]``, ``queries [B, d]``, one relevant list per query."""
    return [adore_targets(r, row_doc_ids, rel, q, vectors, first_row, metric_cut)
            for r, q, rel in zip(rows, queries, relevant)]


def adore_loss(query_emb: torch.Tensor, targets: Sequence[AdoreTargets], vectors: np.ndarray,
               nominal_batch_size: int, grad_accum: int = 1) -> torch.Tensor:
    """Sum over queries of CE(q · E[[pos] + negatives], 0), divided by ``nominal_batch_size · grad_accum``.

    The divisor uses the nominal batch size even for a short last batch (SPEC §8, §10 #37, KEEP).
    Scores are computed in fp32; only ``query_emb`` ``[B, d]`` carries gradients.
    """
    losses = []
    for q, t in zip(query_emb, targets):
        cand = np.concatenate([[t.positive_row], t.negative_rows]).astype(np.int64)
        emb = torch.as_tensor(np.asarray(vectors[cand], dtype=np.float32), device=q.device)  # (1 + n, d)
        logits = emb @ q.float()  # (1 + n,)
        losses.append(torch.nn.functional.cross_entropy(logits[None], logits.new_zeros(1, dtype=torch.long)))
    if not losses:
        return query_emb.sum() * 0.0
    return torch.stack(losses).sum() / (nominal_batch_size * grad_accum)
