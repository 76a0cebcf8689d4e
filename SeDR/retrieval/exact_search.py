"""Exact inner-product search over segment vectors: faiss flat IP (CPU or GPU), a chunked torch
matmul + top-k (CPU or any CUDA GPU, several GPUs sharded), per-shard CPU search, top-k merges.

Every index returns the same canonical order: score descending, then row id ascending, the lowest
tied row ids kept at the cut of the top ``k`` (faiss on its own lists tied rows by descending id
and keeps whichever tied rows its heap saw first). Details and figures: docs/search-backends.md.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from SeDR.core.constants import SEARCH_BACKENDS, SEGMENT_HITS
from SeDR.core.progress import progress

logger = logging.getLogger(__name__)

# `auto` on the CPU: bench/retrieval.py measured faiss-cpu at 0.16-0.60x the queries/s of torch here.
CPU_AUTO_BACKEND = "torch"
# GPU temporary memory of the original's faiss resources.
SINGLE_GPU_TEMP_MEMORY = 512 * 1024 * 1024
SHARDED_GPU_TEMP_MEMORY = 200 * 1024 * 1024
FAISS_GPU_MAX_K = 2048  # faiss-gpu's largest k
# Queries per search call and rows per index `add` (memory only, results do not depend on them).
SEARCH_BATCH = 1024
ADD_BATCH_ROWS = 1 << 18
# Torch backend: rows per chunk are chosen so one chunk's score block (queries x rows) has this size.
TORCH_SCORE_BYTES = 256 * 1024 * 1024


def _faiss():
    import faiss  # imported on first use: heavy, optional on GPU machines, and its GPU build is optional

    return faiss


def faiss_gpu_available() -> bool:
    """faiss is installed, was built with GPU support and sees at least one GPU."""
    try:
        faiss = _faiss()
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _check_ids(ids: list[int], n: int, flag: str, who: str) -> list[int]:
    wrong = [i for i in ids if not 0 <= i < n]
    if wrong or len(set(ids)) != len(ids):
        raise ValueError(f"{flag} {ids}: {who} sees GPUs 0..{n - 1}; give distinct ids in that range")
    return ids


def resolve_faiss_gpus(gpu_ids: Sequence[int] | None) -> list[int]:
    """The GPU ids to place the faiss index on; ``[]`` means CPU.

    Asking for GPUs without faiss GPU support or without a visible GPU logs one warning and
    returns ``[]`` (``--faiss_gpus 0`` on a CPU machine must work). An id beyond the visible GPUs
    is a user error.
    """
    ids = [int(i) for i in (gpu_ids or [])]
    if not ids:
        return []
    if not faiss_gpu_available():
        logger.warning(
            "--faiss_gpus %s requested but faiss has no GPU support or sees no GPU; searching "
            "on CPU with faiss-cpu (exact, same results, slower). For GPU search replace "
            "faiss-cpu by faiss-gpu, or use --search_backend torch.",
            " ".join(map(str, ids)),
        )
        return []
    return _check_ids(ids, _faiss().get_num_gpus(), "--faiss_gpus", "faiss")


def resolve_search_backend(backend: str, gpu_ids: Sequence[int] | None) -> tuple[str, list[int]]:
    """``(faiss | torch, GPU ids)`` for ``--search_backend`` and ``--faiss_gpus``; ``[]`` means CPU.

    ``auto``: faiss when it can search on the GPUs asked for, else torch on them; on the CPU the
    faster backend here (:data:`CPU_AUTO_BACKEND`). GPUs asked for but not visible: one warning, CPU.
    """
    if backend not in SEARCH_BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}; choose one of {', '.join(SEARCH_BACKENDS)}")
    ids = [int(i) for i in (gpu_ids or [])]
    if backend == "faiss":
        return "faiss", ids  # FaissFlatIndex resolves (and warns about) the ids itself
    if backend == "auto" and ids and faiss_gpu_available():
        return "faiss", ids
    if ids and not torch.cuda.is_available():
        logger.warning(
            "GPU search on %s requested but torch sees no CUDA GPU; searching on CPU (exact, same "
            "results, slower)",
            " ".join(map(str, ids)),
        )
        ids = []
    if ids:
        return "torch", _check_ids(ids, torch.cuda.device_count(), "--faiss_gpus", "torch")
    return ("torch" if backend == "torch" else CPU_AUTO_BACKEND), []


def _pad(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``[n, m<=k]`` results to ``k`` columns with score ``-inf`` and row ``-1``."""
    pad = k - scores.shape[1]
    if pad > 0:
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
    return scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)


def canonical_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort ``[n, m]`` hits by score descending, then row ascending (``-1`` rows last), keep ``k``."""
    scores = np.where(rows < 0, -np.inf, scores)
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=-1)[:, :k]
    top_s, top_r = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
    return _pad(top_s, np.where(np.isfinite(top_s), top_r, -1), k)


class FaissFlatIndex:
    """Exact inner-product index over segment rows (``IndexFlatIP``, float32) on CPU or GPU(s).

    Keeps the GPU resources alive as long as the index. ``fp16`` stores GPU vectors in float16
    (half the memory, approximate scores); it is ignored on CPU.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        gpu_ids: Sequence[int] | None = None,
        fp16: bool = False,
        add_batch_rows: int = ADD_BATCH_ROWS,
        show_progress: bool = True,
    ):
        faiss = _faiss()
        self.dim = int(vectors.shape[1])
        self.gpu_ids = resolve_faiss_gpus(gpu_ids)
        self.resources: list = []
        cpu_index = faiss.IndexFlatIP(self.dim)
        for i in progress(
            range(0, len(vectors), add_batch_rows), desc="build index", unit="chunk", enabled=show_progress
        ):
            cpu_index.add(np.ascontiguousarray(vectors[i : i + add_batch_rows], dtype=np.float32))
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
        logger.info(
            "faiss flat inner-product index: %d rows of dimension %d on %s", self.ntotal, self.dim, where
        )

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _raw(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.index.search(q, int(k))
        return scores, rows.astype(np.int64, copy=False)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query in canonical order: scores float32 ``[n, k]``, rows int64 ``[n, k]``
        (``-1`` / ``-inf`` where fewer rows exist).

        One hit more than asked shows whether the cut splits a group of tied scores; only those
        queries are searched again, wider, until the whole group is in view.
        """
        q, k = np.ascontiguousarray(queries, dtype=np.float32), int(k)
        limit = min(self.ntotal, FAISS_GPU_MAX_K if self.gpu_ids else self.ntotal)
        wide = min(k + 1, self.ntotal)
        if min(wide, k, len(q)) <= 0:
            return _pad(np.zeros((len(q), 0)), np.zeros((len(q), 0), dtype=np.int64), k)
        s, r = self._raw(q, wide)
        out_s, out_r = canonical_topk(s, r, k)
        todo = np.arange(len(q))
        while wide > k and wide < limit:
            todo = todo[(s[:, -1] == s[:, k - 1]) & (r[:, -1] >= 0)]  # the tie at the cut may go on
            if not len(todo):
                break
            wide = min(4 * wide, limit)
            s, r = self._raw(q[todo], wide)
            out_s[todo], out_r[todo] = canonical_topk(s, r, k)
        return out_s, out_r


def _rows_on(vectors: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``vectors`` as a tensor: a view of a float32 array (or memmap) on CPU, else copied in blocks."""
    with warnings.catch_warnings():  # read-only memmaps: torch warns, but the index never writes
        warnings.simplefilter("ignore", UserWarning)
        if device.type == "cpu" and dtype == torch.float32:
            return torch.from_numpy(np.asarray(vectors, dtype=np.float32))
        out = torch.empty(tuple(vectors.shape), dtype=dtype, device=device)
        for i in range(0, len(vectors), ADD_BATCH_ROWS):  # bounded staging memory on both sides
            out[i : i + ADD_BATCH_ROWS].copy_(
                torch.from_numpy(np.asarray(vectors[i : i + ADD_BATCH_ROWS], dtype=np.float32))
            )
        return out


def stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of each row of ``scores`` ``[n, c]``, ordered by value descending then column ascending,
    with the lowest tied columns at the cut (``torch.topk`` alone picks and orders ties arbitrarily).

    One value more than asked shows which rows have a tie across the cut; only those are redone.
    """
    val, col = scores.topk(min(k + 1, scores.shape[1]), dim=1)  # (n, k + 1), values sorted descending
    short = (val[:, k] == val[:, k - 1]).nonzero().squeeze(1) if val.shape[1] > k else val.new_zeros(0).long()
    val, col = val[:, :k], col[:, :k]
    cut = val[:, -1:]
    pos = torch.arange(scores.shape[1], device=scores.device, dtype=torch.float32)
    slices = short.split(max(1, len(scores) * scores.element_size() // 4)) if len(short) else ()
    for part in slices:  # rows with a tie at the cut; each slice's float32 keys fit in one score block
        n_cut = (val[part] == cut[part]).sum(1)  # trailing slots that hold the cut value
        key = torch.where(scores[part] == cut[part], -pos, float("-inf"))  # lowest tied column first
        first = key.topk(int(n_cut.max()), dim=1).indices
        j = torch.arange(first.shape[1], device=scores.device)
        fill = j < n_cut[:, None]
        slot = k - n_cut[:, None] + j
        col[part[:, None].expand_as(slot)[fill], slot[fill]] = first[fill]
    col, order = col.sort(dim=1)
    val, order = val.gather(1, order).sort(dim=1, descending=True, stable=True)
    return val, col.gather(1, order)


class TorchFlatIndex:
    """Exact inner-product top-k in torch on one device (CPU or a CUDA GPU; GPU search without faiss-gpu).

    Rows are scanned in chunks of ``chunk_rows`` (default: a score block of :data:`TORCH_SCORE_BYTES`),
    so the extra memory of a search is bounded by the chunk, not the index. ``fp16`` stores and
    multiplies GPU vectors in float16 (half the memory, approximate scores); ignored on CPU. On CPU
    a float32 array or memmap is used in place, without a copy.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        device: torch.device | str = "cpu",
        fp16: bool = False,
        chunk_rows: int | None = None,
    ):
        self.device = torch.device(device)
        if fp16 and self.device.type != "cuda":
            logger.info("--faiss_fp16 has no effect on a CPU index")
        self.dtype = torch.float16 if fp16 and self.device.type == "cuda" else torch.float32
        self.vectors = _rows_on(vectors, self.device, self.dtype)  # (S, d)
        self.dim, self.chunk_rows = int(self.vectors.shape[1]), chunk_rows
        logger.info(
            "torch flat inner-product index: %d rows of dimension %d on %s (%s)",
            self.ntotal,
            self.dim,
            self.device,
            str(self.dtype).removeprefix("torch."),
        )

    @property
    def ntotal(self) -> int:
        return int(self.vectors.shape[0])

    def rows_per_chunk(self, n_queries: int) -> int:
        size = self.chunk_rows or TORCH_SCORE_BYTES // (max(n_queries, 1) * self.vectors.element_size())
        return int(min(max(size, 1), 1 << 24))  # column ids must stay exact in float32 (stable_topk)

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query in canonical order, as :meth:`FaissFlatIndex.search`."""
        k = int(k)
        q = torch.as_tensor(np.asarray(queries, dtype=np.float32)).to(self.device, self.dtype)  # (n, d)
        kk, step = min(k, self.ntotal), self.rows_per_chunk(len(q))
        if kk == 0 or len(q) == 0:
            return _pad(np.zeros((len(q), 0)), np.zeros((len(q), 0), dtype=np.int64), k)
        best_s = best_r = None
        for start in range(0, self.ntotal, step):
            chunk = self.vectors[start : start + step]
            s, r = stable_topk(q @ chunk.T, min(kk, len(chunk)))  # (n, <= k) of this chunk's scores (n, c)
            r += start
            if (
                best_s is not None
            ):  # earlier chunks hold lower rows: a stable sort keeps them first among ties
                s, order = torch.cat([best_s, s], 1).sort(dim=1, descending=True, stable=True)
                s, r = s[:, :kk], torch.cat([best_r, r], 1).gather(1, order[:, :kk])
            best_s, best_r = s, r
        return _pad(best_s.float().cpu().numpy(), best_r.cpu().numpy(), k)


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard canonical ``(scores [n, k_i], rows [n, k_i])`` (global row ids, ``-1`` = none) of
    consecutive row ranges into the canonical top ``k`` (a stable sort keeps earlier shards first)."""
    scores = np.concatenate([p[0] for p in parts], axis=1)  # (n, sum k_i)
    rows = np.concatenate([p[1] for p in parts], axis=1)
    scores = np.where(rows < 0, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_s, top_r = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
    return _pad(top_s, np.where(np.isfinite(top_s), top_r, -1), k)


def _bounds(n: int, parts: int) -> list[tuple[int, int]]:
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def _merge_shards(results, bounds, n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [(s, np.where(r >= 0, r + lo, -1)) for (s, r), (lo, _) in zip(results, bounds)]
    if not parts:
        return _pad(np.zeros((n_queries, 0)), np.zeros((n_queries, 0), dtype=np.int64), k)
    return merge_topk(parts, k)


class ShardedCpuIndex:
    """Exact search over contiguous row shards, one shard's index in memory at a time.

    For CPU-only machines whose RAM cannot hold one flat index over all segment vectors: each
    ``search`` builds a flat index per shard in turn (``make_shard``, faiss by default), searches
    it, frees it, and merges the per-shard top-k (the same canonical result as one flat index).
    """

    def __init__(self, vectors: np.ndarray, num_shards: int, make_shard=None):
        self.vectors, self.dim = vectors, int(vectors.shape[1])
        self.make_shard = make_shard or (lambda v: FaissFlatIndex(v, None, show_progress=False))
        self.bounds = [b for b in _bounds(len(vectors), num_shards) if b[1] > b[0]]
        logger.info("sharded CPU search: %d rows in %d shards", len(vectors), num_shards)

    @property
    def ntotal(self) -> int:
        return int(len(self.vectors))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        results = []
        for lo, hi in self.bounds:
            shard = self.make_shard(self.vectors[lo:hi])
            results.append(shard.search(queries, min(int(k), hi - lo)))
            del shard
        return _merge_shards(results, self.bounds, len(queries), int(k))


class TorchShardedIndex:
    """The torch index over several GPUs: contiguous row shards, searched in parallel, merged."""

    def __init__(
        self,
        vectors: np.ndarray,
        devices: Sequence[torch.device | str],
        fp16: bool = False,
        chunk_rows: int | None = None,
    ):
        self.bounds = _bounds(len(vectors), len(devices))
        self.shards = [
            TorchFlatIndex(vectors[lo:hi], d, fp16, chunk_rows) for (lo, hi), d in zip(self.bounds, devices)
        ]
        self.dim = int(vectors.shape[1])

    @property
    def ntotal(self) -> int:
        return sum(s.ntotal for s in self.shards)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with ThreadPoolExecutor(len(self.shards)) as pool:  # torch kernels release the GIL: GPUs overlap
            results = list(pool.map(lambda s: s.search(queries, min(int(k), s.ntotal)), self.shards))
        return _merge_shards(results, self.bounds, len(queries), int(k))


def build_index(
    vectors: np.ndarray,
    faiss_gpus: Sequence[int] | None = None,
    fp16: bool = False,
    backend: str = "auto",
    show_progress: bool = True,
    search_shards: int = 1,
    faiss_threads: int | None = None,
    chunk_rows: int | None = None,
):
    """The search index for ``--search_backend``, ``--faiss_gpus``, ``--faiss_fp16`` and ``--search_shards``
    (CPU only); ``faiss_threads`` sets faiss-cpu's OpenMP threads (ADORE's ``--faiss_omp_num_threads``)."""
    backend, ids = resolve_search_backend(backend, faiss_gpus)
    if backend == "faiss":
        if faiss_threads:
            _faiss().omp_set_num_threads(int(faiss_threads))
        if search_shards > 1 and not resolve_faiss_gpus(ids):
            return ShardedCpuIndex(vectors, search_shards)
        return FaissFlatIndex(vectors, ids, fp16, show_progress=show_progress)
    if len(ids) > 1:
        return TorchShardedIndex(vectors, [f"cuda:{i}" for i in ids], fp16, chunk_rows)
    if ids:
        return TorchFlatIndex(vectors, f"cuda:{ids[0]}", fp16, chunk_rows)
    if search_shards > 1:
        return ShardedCpuIndex(vectors, search_shards, lambda v: TorchFlatIndex(v, chunk_rows=chunk_rows))
    return TorchFlatIndex(vectors, "cpu", fp16, chunk_rows)


def iter_search(
    index,
    queries: np.ndarray,
    k: int = SEGMENT_HITS,
    batch_size: int = SEARCH_BATCH,
    show_progress: bool = True,
    desc: str = "search",
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, scores [b, k], rows [b, k])`` for consecutive query batches."""
    for start in progress(range(0, len(queries), batch_size), desc=desc, unit="batch", enabled=show_progress):
        scores, rows = index.search(queries[start : start + batch_size], k)
        yield start, scores, rows


def search(
    index,
    queries: np.ndarray,
    k: int = SEGMENT_HITS,
    batch_size: int = SEARCH_BATCH,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched top-``k`` search of all ``queries``: scores float32 ``[n, k]``, rows int64 ``[n, k]``."""
    parts = list(iter_search(index, queries, k, batch_size, show_progress))
    if not parts:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
