"""Exact inner-product search over segment vectors: faiss flat IP on CPU or GPU(s), a torch backend,
and per-shard CPU search with a top-k merge.

With ``faiss-gpu`` and a visible GPU the faiss index lives on one GPU or is sharded over several;
otherwise one warning is logged and search runs on faiss-cpu (same results: the index is exact).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from SeDR.constants import SEGMENT_HITS

logger = logging.getLogger(__name__)

# GPU temporary memory of the original's faiss resources.
SINGLE_GPU_TEMP_MEMORY = 512 * 1024 * 1024
SHARDED_GPU_TEMP_MEMORY = 200 * 1024 * 1024
# Queries per search call and rows per index `add` (memory only, results do not depend on them).
SEARCH_BATCH = 1024
ADD_BATCH_ROWS = 1 << 18


def _faiss():
    import faiss  # imported on first use: heavy, and its GPU build is optional

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


