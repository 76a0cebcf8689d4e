"""Exact inner-product search: faiss ``IndexFlatIP`` vs the torch backend (chunked matmul + stable top-k).

Both indexes (``SeDR.retrieval.exact_search.FaissFlatIndex`` and ``TorchFlatIndex``, each returning the
canonical order: score descending, then row ascending) hold the same random unit vectors (``--dim``, 768 as
the released models) and answer the same queries (top ``--k`` rows; inference asks 1024 per query
in calls of 1024 queries, ADORE 1024 in calls of 32); queries/s is timed interleaved (min of
``--reps``) at each index size. The rows must agree: random floats have no exact ties, but rows
whose scores agree to float32 rounding (~1e-8 here) may swap, as the two matrix products round
differently. ``indexes.CPU_AUTO_BACKEND`` is the CPU choice of ``--search_backend auto``
(docs/search-backends.md#cpu-speed). Memory per million vectors is the stored bytes of each
representation (fp32 codes, an fp16 copy); fp16 is a GPU option.

    python bench/retrieval.py [--quick] [--sizes 10000 100000 1000000] [--k 1024] [--device cuda]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import interleaved_min, machine

from SeDR.retrieval.exact_search import CPU_AUTO_BACKEND, FaissFlatIndex, TorchFlatIndex


def unit_rows(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main(argv=None) -> dict[int, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--k", type=int, default=100, help="rows per query")
    p.add_argument(
        "--queries", type=int, default=None, help="queries per search call (default 256, quick 64)"
    )
    p.add_argument("--reps", type=int, default=None, help="default 5, quick 3")
    p.add_argument("--device", default="cpu", help="torch index device")
    args = p.parse_args(argv)
    n_q = args.queries or (64 if args.quick else 256)
    reps = args.reps or (3 if args.quick else 5)
    rng = np.random.default_rng(0)
    queries = unit_rows(n_q, args.dim, rng)
    print(f"machine: {machine()}")
    print(
        f"dim {args.dim}, {n_q} queries per call, top {args.k}, min of {reps} interleaved calls; "
        f"--search_backend auto on CPU: {CPU_AUTO_BACKEND}"
    )
    ratios = {}
    for n in args.sizes:
        vectors = unit_rows(n, args.dim, rng)
        fx = FaissFlatIndex(vectors, show_progress=False)
        tx = TorchFlatIndex(vectors, args.device)
        (fs, fr), (ts, tr) = fx.search(queries, args.k), tx.search(queries, args.k)
        diff = fr != tr  # only rows whose scores agree to float32 rounding may swap
        same = (
            "True"
            if not diff.any()
            else (
                f"{int(diff.sum())} positions differ, all scores within 1e-6: "
                f"{bool(np.all(np.abs(fs - ts)[diff] <= 1e-6))}"
            )
        )
        t = interleaved_min(
            {
                "faiss": lambda ix=fx: ix.search(queries, args.k),
                "torch": lambda ix=tx: ix.search(queries, args.k),
            },
            reps,
            args.device,
        )
        ratios[n] = t["torch"] / t["faiss"]
        print(
            f"  {n:>9,d} vectors: faiss {n_q / t['faiss']:9.1f} q/s   torch {n_q / t['torch']:9.1f} q/s   "
            f"RATIO faiss/torch queries/s = {ratios[n]:.3f}   same top-{args.k} rows: {same}"
        )
        del fx, tx, vectors
    fp32 = args.dim * 4 * 1_000_000 / 2**30
    fp16 = args.dim * torch.finfo(torch.float16).bits // 8 * 1_000_000 / 2**30
    print(
        f"memory per million vectors (dim {args.dim}): fp32 {fp32:.2f} GiB, fp16 {fp16:.2f} GiB "
        f"(RATIO fp16/fp32 = {fp16 / fp32:.2f}; flat indexes store the raw codes, nothing else)"
    )
    return ratios


if __name__ == "__main__":
    main()
