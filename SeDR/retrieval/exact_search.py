"""Exact inner-product search over segment vectors: faiss flat IP (CPU or GPU), a chunked torch
matmul + top-k (CPU or any CUDA GPU, several GPUs sharded), row shards, top-k merges.

Every index returns the same canonical order: score descending, then row id ascending, the lowest
tied row ids kept at the cut of the top ``k`` (faiss on its own lists tied rows by descending id
and keeps whichever tied rows its heap saw first). Details and figures: docs/search-backends.md.

On the CPU a search call reads the vectors once, whatever the number of queries: the rows are
scanned in blocks (the outer loop), every query of the call is scored against a block before the
next one is touched, and a running top-k per query is merged across blocks. Memory is set by
:class:`SearchSettings` (docs/scale.md#memory), never by the number of rows.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from SeDR.core.constants import SEARCH_BACKENDS, SEARCH_BLOCK_ROWS, SEARCH_QUERY_BLOCK, SEGMENT_HITS
from SeDR.core.progress import progress

logger = logging.getLogger(__name__)

# `auto` on the CPU: bench/retrieval.py measured faiss-cpu at 0.16-0.60x the queries/s of torch here.
CPU_AUTO_BACKEND = "torch"
# GPU temporary memory of the original's faiss resources.
SINGLE_GPU_TEMP_MEMORY = 512 * 1024 * 1024
SHARDED_GPU_TEMP_MEMORY = 200 * 1024 * 1024
FAISS_GPU_MAX_K = 2048  # faiss-gpu's largest k
# Queries per kernel call (one matmul or one faiss search): the batch the search always used, so scores
# round as before. Rows per index `add` on the way to a GPU (staging memory only).
SEARCH_BATCH = 1024
ADD_BATCH_ROWS = 1 << 18
# Torch backend: rows per chunk are chosen so one chunk's score block (queries x rows) has this size.
TORCH_SCORE_BYTES = 256 * 1024 * 1024
BLOCK_ROWS, QUERY_BLOCK = SEARCH_BLOCK_ROWS, SEARCH_QUERY_BLOCK
TOPK_ENTRY_BYTES = 12  # float32 score + int64 row


@dataclass(frozen=True)
class SearchSettings:
    """How a search spends memory and cores (docs/scale.md#memory); results never depend on it.

    ``block_rows``: rows per block of the scan (on the CPU the page-cache working set; on a GPU the
    vectors are resident and scanned as one block). ``query_block``: queries searched in one pass over
    the rows; their running top-k (``query_block x k x 12`` bytes) is the main heap cost.
    ``threads``: CPU threads of torch and faiss during a search; 0 keeps the process's own (torch's default
    is every physical core, faiss's every logical one; torchrun sets one per rank).
    ``after_block``: called with ``(first row, end row)`` of the vector array once a block is done
    (bench/scale.py drops it from the page cache to count what a second pass would read).
    """

    block_rows: int = BLOCK_ROWS
    query_block: int = QUERY_BLOCK
    threads: int = 0
    after_block: Callable[[int, int], None] | None = None

    def __post_init__(self):
        if self.block_rows < 1 or self.query_block < 1 or self.threads < 0:
            raise ValueError(f"block_rows and query_block must be >= 1, threads >= 0: {self}")

    def cpu_threads(self) -> int:
        """The torch threads a search runs with."""
        return self.threads or torch.get_num_threads()

    def memory_plan(self, dim: int, k: int = SEGMENT_HITS, backend: str = "torch") -> str:
        """One line: what a search with these settings holds, printed before a search starts."""
        mib = 1 << 20
        state = self.query_block * (k + 1) * TOPK_ENTRY_BYTES / mib
        block = self.block_rows * dim * 4 / mib
        kernel = (
            TORCH_SCORE_BYTES / mib if backend == "torch" else SEARCH_BATCH * 4 * k * TOPK_ENTRY_BYTES / mib
        )
        return (
            f"search memory: running top-{k} of up to {self.query_block:,d} queries per pass "
            f"{state:,.0f} MiB, kernel scratch about {2.25 * kernel:,.0f} MiB, vector blocks of "
            f"{self.block_rows:,d} rows ({block:,.0f} MiB, read in place once per pass); "
            f"{self.cpu_threads()} CPU threads"
        )


@contextlib.contextmanager
def cpu_threads(n: int, faiss_too: bool = False) -> Iterator[None]:
    """``n`` torch (and faiss OpenMP) threads inside the block, the previous counts restored after; 0 changes
    nothing (a matrix product of a few queries rounds differently with another thread count)."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    faiss = _faiss() if faiss_too else None
    omp_before = faiss.omp_get_max_threads() if faiss is not None else None
    torch.set_num_threads(n)
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if faiss is not None:
            faiss.omp_set_num_threads(omp_before)


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


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def canonical_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort ``[n, m]`` hits by score descending, then row ascending (``-1`` rows last), keep ``k``."""
    scores = np.where(rows < 0, -np.inf, scores)
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=-1)[:, :k]
    top_s, top_r = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
    return _pad(top_s, np.where(np.isfinite(top_s), top_r, -1), k)


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


def _blocks(n: int, block_rows: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + block_rows, n)) for lo in range(0, n, block_rows)]


def _batches(n: int) -> list[tuple[int, int]]:
    return [(a, min(a + SEARCH_BATCH, n)) for a in range(0, n, SEARCH_BATCH)]


def _faiss_canonical(search, q: np.ndarray, k: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical top ``k`` from a raw faiss ``search(q, wide)`` over ``limit`` rows at most.

    One hit more than asked shows whether the cut splits a group of tied scores; only those queries
    are searched again, wider (never beyond ``limit``, which also caps faiss-gpu's k), until the whole
    group is in view.
    """
    wide = min(k + 1, limit)
    s, r = search(q, wide)
    out_s, out_r = canonical_topk(s, r.astype(np.int64, copy=False), k)
    todo = np.arange(len(q))
    while wide > k and wide < limit:
        todo = todo[(s[:, -1] == s[:, k - 1]) & (r[:, -1] >= 0)]  # the tie at the cut may go on
        if not len(todo):
            break
        wide = min(4 * wide, limit)
        s, r = search(q[todo], wide)
        out_s[todo], out_r[todo] = canonical_topk(s, r.astype(np.int64, copy=False), k)
    return out_s, out_r


class FaissFlatIndex:
    """Exact inner product by faiss over segment rows, on CPU or GPU(s).

    CPU: no index copy; faiss scans the vector array (a memmap is read in place) block by block, each
    block with faiss's own brute-force kernel (the one ``IndexFlatIP.search`` runs), and the blocks' top-k
    are merged. GPU: an ``IndexFlatIP`` on the device(s), its resources kept alive with it; ``fp16``
    stores the GPU vectors in float16 (faiss-gpu still returns float32 scores). Every faiss call asks
    at most :attr:`max_k` rows (faiss-gpu's limit).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        gpu_ids: Sequence[int] | None = None,
        fp16: bool = False,
        add_batch_rows: int = ADD_BATCH_ROWS,
        show_progress: bool = True,
        settings: SearchSettings | None = None,
        row_offset: int = 0,
    ):
        faiss = _faiss()
        self.dim = int(vectors.shape[1])
        self.gpu_ids = resolve_faiss_gpus(gpu_ids)
        self.settings, self.row_offset = settings or SearchSettings(), int(row_offset)
        self.resources: list = []
        self.vectors, self.index, self.max_k = vectors, None, None
        if not self.gpu_ids:
            if fp16:
                logger.info("--faiss_fp16 has no effect on a CPU index")
            logger.info(
                "faiss flat inner-product search: %d rows of dimension %d on CPU", self.ntotal, self.dim
            )
            return
        # GPU: one float32 host copy at its final size (added in one call when the rows are float32 already,
        # so the index never grows by doubling), cloned to the device(s), then freed.
        cpu_index = faiss.IndexFlatIP(self.dim)
        if vectors.dtype == np.float32 and vectors.flags.c_contiguous:
            cpu_index.add(np.asarray(vectors))
        else:
            for i in progress(
                range(0, len(vectors), add_batch_rows),
                desc="build index",
                unit="chunk",
                enabled=show_progress,
            ):
                cpu_index.add(np.ascontiguousarray(vectors[i : i + add_batch_rows], dtype=np.float32))
        if len(self.gpu_ids) == 1:
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
        cpu_index.reset()
        self.vectors, self.max_k = None, FAISS_GPU_MAX_K
        logger.info(
            "faiss flat inner-product index: %d rows of dimension %d on GPU %s",
            self.ntotal,
            self.dim,
            self.gpu_ids,
        )

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) if self.index is not None else int(len(self.vectors))

    def search(self, queries: np.ndarray, k: int, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query in canonical order: scores float32 ``[n, k]``, rows int64 ``[n, k]``
        (``-1`` / ``-inf`` where fewer rows exist). ``progress(rows)`` is told of every scanned block."""
        q, k = np.ascontiguousarray(queries, dtype=np.float32), int(k)
        if self.max_k is not None and k > self.max_k:
            raise ValueError(
                f"faiss-gpu returns at most {self.max_k} rows per query, {k} asked; ask fewer or search "
                "with --search_backend torch"
            )
        out_s, out_r = _empty(len(q), k)
        kk = min(k, self.ntotal)
        if kk <= 0 or len(q) == 0:
            return out_s, out_r
        if self.index is not None:  # resident on the GPU(s): one search per batch
            limit = min(self.ntotal, self.max_k)
            for a, b in _batches(len(q)):
                s, r = _faiss_canonical(self.index.search, q[a:b], kk, limit)
                out_s[a:b, :kk], out_r[a:b, :kk] = s, r
            if progress:
                progress(self.ntotal)
            return out_s, out_r
        faiss = _faiss()
        with cpu_threads(self.settings.threads, faiss_too=True):
            for lo, hi in _blocks(self.ntotal, self.settings.block_rows):
                block = np.ascontiguousarray(
                    self.vectors[lo:hi], dtype=np.float32
                )  # a view of a float32 memmap

                def raw(x, wide, block=block):
                    return faiss.knn(x, block, wide, metric=faiss.METRIC_INNER_PRODUCT)

                for a, b in _batches(len(q)):
                    s, r = _faiss_canonical(raw, q[a:b], kk, hi - lo)
                    part = (s, np.where(r >= 0, r + lo, -1))
                    out_s[a:b, :kk], out_r[a:b, :kk] = merge_topk(
                        [(out_s[a:b, :kk], out_r[a:b, :kk]), part], kk
                    )
                del block
                if self.settings.after_block:
                    self.settings.after_block(self.row_offset + lo, self.row_offset + hi)
                if progress:
                    progress(hi - lo)
        return out_s, out_r


def _rows_on(
    vectors: np.ndarray, device: torch.device, dtype: torch.dtype, center: np.ndarray | None = None
) -> torch.Tensor:
    """``vectors`` (minus ``center``) as a tensor: a view of a float32 array (or memmap) on CPU, else
    copied in blocks."""
    with warnings.catch_warnings():  # read-only memmaps: torch warns, but the index never writes
        warnings.simplefilter("ignore", UserWarning)
        if device.type == "cpu" and dtype == torch.float32 and center is None:
            return torch.from_numpy(np.asarray(vectors, dtype=np.float32))
        out = torch.empty(tuple(vectors.shape), dtype=dtype, device=device)
        for i in range(0, len(vectors), ADD_BATCH_ROWS):  # bounded staging memory on both sides
            block = np.asarray(vectors[i : i + ADD_BATCH_ROWS], dtype=np.float32)
            out[i : i + ADD_BATCH_ROWS].copy_(torch.from_numpy(block if center is None else block - center))
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
    # Values come sorted descending; only rows with equal neighbours need their columns put in order.
    tied = (val[:, 1:] == val[:, :-1]).any(1).nonzero().squeeze(1) if val.shape[1] > 1 else short[:0]
    if len(tied):
        c, order = col[tied].sort(dim=1)
        v, order = val[tied].gather(1, order).sort(dim=1, descending=True, stable=True)
        val[tied], col[tied] = v, c.gather(1, order)
    return val, col


class TorchFlatIndex:
    """Exact inner-product top-k in torch on one device (CPU or a CUDA GPU; GPU search without faiss-gpu).

    Rows are scanned in blocks of :attr:`SearchSettings.block_rows` (the outer loop; one block, the whole
    index, on a GPU where the vectors are resident), and within a block in chunks of ``chunk_rows``
    (default: a score block of :data:`TORCH_SCORE_BYTES` per batch of queries), so the extra memory
    of a search is bounded by the chunk and the running top-k, not the index. On CPU a float32 array
    or memmap is used in place, without a copy. ``fp16`` stores GPU vectors in float16 (half the
    memory); ``storage`` picks the stored dtype on any device. Scores are float32 products of the
    float32 queries with the stored vectors, whatever is stored. Half-precision storage keeps each row
    minus a float32 center (the mean of the first rows) and adds ``query . center`` back: the model's
    vectors share a large common direction, and only what differs between rows is rounded
    (docs/search-backends.md#fp16-storage).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        device: torch.device | str = "cpu",
        fp16: bool = False,
        chunk_rows: int | None = None,
        settings: SearchSettings | None = None,
        storage: torch.dtype | None = None,
        row_offset: int = 0,
    ):
        self.device = torch.device(device)
        if fp16 and self.device.type != "cuda" and storage is None:
            logger.info("--faiss_fp16 has no effect on a CPU index")
        self.dtype = storage or (torch.float16 if fp16 and self.device.type == "cuda" else torch.float32)
        center = None
        if self.dtype != torch.float32 and len(vectors):
            center = np.asarray(vectors[:ADD_BATCH_ROWS], dtype=np.float64).mean(0).astype(np.float32)
        self.center = None if center is None else torch.from_numpy(center).to(self.device)  # (d,) or None
        self.vectors = _rows_on(vectors, self.device, self.dtype, center)  # (S, d)
        self.dim, self.chunk_rows = int(self.vectors.shape[1]), chunk_rows
        self.settings, self.row_offset, self.max_k = settings or SearchSettings(), int(row_offset), None
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
        size = self.chunk_rows or TORCH_SCORE_BYTES // (max(n_queries, 1) * 4)  # float32 scores
        return int(min(max(size, 1), 1 << 24))  # column ids must stay exact in float32 (stable_topk)

    def _threads(self):
        if self.device.type != "cpu":
            return contextlib.nullcontext()
        return cpu_threads(self.settings.threads)

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query in canonical order, as :meth:`FaissFlatIndex.search`."""
        k, n = int(k), len(queries)
        out_s, out_r = _empty(n, k)
        kk = min(k, self.ntotal)
        if kk == 0 or n == 0:
            return out_s, out_r
        q = torch.as_tensor(np.asarray(queries, dtype=np.float32)).to(self.device)  # (n, d) float32
        batches = _batches(n)
        on_cpu = self.device.type == "cpu"
        if on_cpu:  # the running top-k lives in the output arrays
            state = [
                (torch.from_numpy(out_s[a:b, :kk]), torch.from_numpy(out_r[a:b, :kk])) for a, b in batches
            ]
        else:
            state = [
                (
                    torch.full((b - a, kk), float("-inf"), device=self.device),
                    torch.full((b - a, kk), -1, dtype=torch.long, device=self.device),
                )
                for a, b in batches
            ]
        block_rows = self.settings.block_rows if on_cpu else self.ntotal  # resident on a GPU: one block
        with self._threads():
            for lo, hi in _blocks(self.ntotal, block_rows):
                for (a, b), (best_s, best_r) in zip(batches, state):
                    step = self.rows_per_chunk(b - a)
                    shift = None if self.center is None else (q[a:b] @ self.center)[:, None]  # (n, 1)
                    start = lo
                    while start < hi:  # the chunk grid starts at row 0 whatever the blocks
                        end = min(hi, (start // step + 1) * step)
                        scores = q[a:b] @ self.vectors[start:end].float().T  # (n, c) float32
                        if shift is not None:
                            scores += shift
                        s, r = stable_topk(scores, min(kk, end - start))  # (n, <= k)
                        r += start
                        if start == 0:  # the first chunk: nothing to merge with
                            best_s[:, : s.shape[1]], best_r[:, : s.shape[1]] = s, r
                        else:  # earlier rows are in the running top-k: a stable sort keeps them first on ties
                            s, order = torch.cat([best_s, s], 1).sort(dim=1, descending=True, stable=True)
                            r = torch.cat([best_r, r], 1).gather(1, order[:, :kk])
                            best_s.copy_(s[:, :kk])
                            best_r.copy_(r)
                        start = end
                if self.settings.after_block:
                    self.settings.after_block(self.row_offset + lo, self.row_offset + hi)
                if progress:
                    progress(hi - lo)
        if not on_cpu:
            for (a, b), (best_s, best_r) in zip(batches, state):
                out_s[a:b, :kk], out_r[a:b, :kk] = best_s.cpu().numpy(), best_r.cpu().numpy()
        return out_s, out_r


def _merge_shards(results, bounds, n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [(s, np.where(r >= 0, r + lo, -1)) for (s, r), (lo, _) in zip(results, bounds)]
    if not parts:
        return _pad(np.zeros((n_queries, 0)), np.zeros((n_queries, 0), dtype=np.int64), k)
    return merge_topk(parts, k)


class ShardedCpuIndex:
    """Exact search over contiguous row shards searched in turn, their top-k merged as they come.

    Each shard's index is made once, by ``make_shard(rows, row_offset)`` (faiss by default; both
    backends use a memmap in place on the CPU), and every search call scans each shard once: the
    same canonical result as one flat index, with the same kernel calls as a flat index of that shard.
    """

    def __init__(
        self, vectors: np.ndarray, num_shards: int, make_shard=None, settings: SearchSettings | None = None
    ):
        self.dim, self.n, self.max_k = int(vectors.shape[1]), int(len(vectors)), None
        settings = settings or SearchSettings()
        make_shard = make_shard or (
            lambda v, offset: FaissFlatIndex(
                v, None, show_progress=False, settings=settings, row_offset=offset
            )
        )
        self.bounds = [b for b in _bounds(len(vectors), num_shards) if b[1] > b[0]]
        self.shards = [make_shard(vectors[lo:hi], lo) for lo, hi in self.bounds]
        logger.info("sharded CPU search: %d rows in %d shards", len(vectors), num_shards)

    @property
    def ntotal(self) -> int:
        return self.n

    def search(self, queries: np.ndarray, k: int, progress=None) -> tuple[np.ndarray, np.ndarray]:
        k = int(k)
        best = _pad(np.zeros((len(queries), 0)), np.zeros((len(queries), 0), dtype=np.int64), k)
        for (lo, hi), shard in zip(self.bounds, self.shards):
            s, r = shard.search(queries, min(k, hi - lo), progress)
            best = merge_topk([best, (s, np.where(r >= 0, r + lo, -1))], k)
        return best


class TorchShardedIndex:
    """The torch index over several GPUs: contiguous row shards, searched in parallel, merged."""

    def __init__(
        self,
        vectors: np.ndarray,
        devices: Sequence[torch.device | str],
        fp16: bool = False,
        chunk_rows: int | None = None,
        settings: SearchSettings | None = None,
    ):
        self.bounds = _bounds(len(vectors), len(devices))
        self.shards = [
            TorchFlatIndex(vectors[lo:hi], d, fp16, chunk_rows, settings, row_offset=lo)
            for (lo, hi), d in zip(self.bounds, devices)
        ]
        self.dim, self.max_k = int(vectors.shape[1]), None

    @property
    def ntotal(self) -> int:
        return sum(s.ntotal for s in self.shards)

    def search(self, queries: np.ndarray, k: int, progress=None) -> tuple[np.ndarray, np.ndarray]:
        with ThreadPoolExecutor(len(self.shards)) as pool:  # torch kernels release the GIL: GPUs overlap
            results = list(
                pool.map(lambda s: s.search(queries, min(int(k), s.ntotal), progress), self.shards)
            )
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
    settings: SearchSettings | None = None,
):
    """The search index for ``--search_backend``, ``--faiss_gpus``, ``--faiss_fp16`` and ``--search_shards``
    (CPU only), made once per run; ``faiss_threads`` sets faiss-cpu's OpenMP threads (ADORE's
    ``--faiss_omp_num_threads``)."""
    settings = settings or SearchSettings()
    backend, ids = resolve_search_backend(backend, faiss_gpus)
    if backend == "faiss":
        if faiss_threads:
            _faiss().omp_set_num_threads(int(faiss_threads))
        if search_shards > 1 and not resolve_faiss_gpus(ids):
            index = ShardedCpuIndex(vectors, search_shards, settings=settings)
        else:
            index = FaissFlatIndex(vectors, ids, fp16, show_progress=show_progress, settings=settings)
    elif len(ids) > 1:
        index = TorchShardedIndex(vectors, [f"cuda:{i}" for i in ids], fp16, chunk_rows, settings)
    elif ids:
        index = TorchFlatIndex(vectors, f"cuda:{ids[0]}", fp16, chunk_rows, settings)
    elif search_shards > 1:
        index = ShardedCpuIndex(
            vectors,
            search_shards,
            lambda v, offset: TorchFlatIndex(v, chunk_rows=chunk_rows, settings=settings, row_offset=offset),
        )
    else:
        index = TorchFlatIndex(vectors, "cpu", fp16, chunk_rows, settings)
    index.settings = settings
    logger.info(settings.memory_plan(int(vectors.shape[1]), SEGMENT_HITS, backend))
    return index


def iter_search(
    index,
    queries: np.ndarray,
    k: int = SEGMENT_HITS,
    batch_size: int | None = None,
    show_progress: bool = True,
    desc: str = "search",
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, scores [b, k], rows [b, k])`` for consecutive blocks of ``batch_size`` queries
    (default: the index's query block), each searched in one pass over the rows."""
    settings = getattr(index, "settings", None) or SearchSettings()
    batch_size = int(batch_size or settings.query_block)
    n = len(queries)
    passes = -(-n // batch_size)
    with progress(
        total=passes * index.ntotal,
        desc=f"{desc} ({n:,d} queries, {passes} pass{'es' if passes > 1 else ''})",
        unit="row",
        unit_scale=True,
        enabled=show_progress,
    ) as bar:
        for start in range(0, n, batch_size):
            scores, rows = index.search(queries[start : start + batch_size], k, bar.update)
            yield start, scores, rows


def search(
    index,
    queries: np.ndarray,
    k: int = SEGMENT_HITS,
    batch_size: int | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched top-``k`` search of all ``queries``: scores float32 ``[n, k]``, rows int64 ``[n, k]``."""
    parts = list(iter_search(index, queries, k, batch_size, show_progress))
    if not parts:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
