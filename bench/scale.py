"""Search at scale: wall time, CPU time, peak heap and bytes read from the vector file, per stage and size.

Builds segment-vector folders in the project's own format (``passages.memmap``, ``passages-id.memmap``,
``passages-meta.json``: random unit vectors, documents of 1-4 rows in MS MARCO's mix) and runs the search
stages of ``SeDR/inference.py`` on them, each in a fresh process: ``retrieve`` (dev-style ranking: 1,024
segment hits per query, 101 documents) with the torch backend, with faiss and with faiss over
``--search_shards 3``, at growing row counts and query counts; ``hardneg`` (``--gen_hardneg``'s streamed
hard negatives, 1,024 hits, 300 kept) at growing training-query counts over 1,536 rows of 32-d, the
query vectors made per block as the encoder would (no file). For every stage it prints wall and CPU
time, the process's peak anonymous memory (RssAnon sampled every 2 ms, and its rise over the stage's
start), and the bytes read from storage (``/proc/self/io``) with the vector file dropped from the page
cache before the stage and each block dropped again once the scan leaves it
(``SearchSettings.after_block``), so a second pass would read the file again, as on a machine whose RAM
cannot hold it. Then the fitted growth exponents
(slope of log metric over log size), the checks of docs/scale.md#acceptance, and the extrapolation to
MS MARCO Document (docs/scale.md#ms-marco).

    python bench/scale.py --quick          # < 3 minutes: 100 k and 1 M rows (768-d), 10 k and 300 k queries
    python bench/scale.py                  # adds 3 M rows and 100 k queries
    python bench/scale.py --json scale.json

Times are CPU times of this machine's cores (shared with other jobs: compare sizes within one run).
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
MIX = (0.30, 0.35, 0.15, 0.20)  # documents with 1, 2, 3, 4 rows (bench/common.py's MS MARCO mix)
MIB = 1 << 20
# MS MARCO Document: 3.21 M documents; rows at FirstP (M = 1), at (512, 4) and with 4 rows per document.
MSMARCO_ROWS = {
    "3.21 M (FirstP, M=1)": 3_213_835,
    "7.5 M (SeDR, 512x4)": 7_500_000,
    "12.9 M (4 per doc)": 12_855_340,
}
MSMARCO_QUERIES = {"dev": 5_193, "TREC-DL 2019 + 2020": 200 + 200, "hard negatives": 367_013}
MACHINES_GB = (24, 64, 128)


# ------------------------------------------------------------------------------------------ measuring


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("read_bytes")).split()[1])


class PeakAnon:
    """The largest RssAnon seen while the block runs (sampled every 2 ms by a thread)."""

    def __enter__(self):
        self.start = self.peak = status_bytes("RssAnon")
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, status_bytes("RssAnon"))
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, status_bytes("RssAnon"))


def page_dropper(vectors: np.memmap, path: Path):
    """``after_block``: unmap the block's pages and drop them from the page cache (whole pages only)."""
    fd = os.open(path, os.O_RDONLY)
    row_bytes, page = vectors.shape[1] * vectors.itemsize, mmap.PAGESIZE

    def drop(lo: int, hi: int) -> None:
        a, b = -(-lo * row_bytes // page) * page, hi * row_bytes // page * page
        if b > a:
            vectors._mmap.madvise(mmap.MADV_DONTNEED, a, b - a)
            os.posix_fadvise(fd, a, b - a, os.POSIX_FADV_DONTNEED)

    return drop


def drop_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    """Random directions (uniform in a cube, normalised: half the time of Gaussian draws; no ties)."""
    x = np.random.default_rng(seed).random((n, dim), dtype=np.float32)
    x -= 0.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


# ------------------------------------------------------------------------------------------ the stages


def child(args) -> dict:
    """One stage in this process; returns its measurements."""
    from SeDR.retrieval import embedding_files, exact_search, hard_negatives, ranking

    emb = embedding_files.load_segment_embeddings(args.folder)
    vec_path = Path(args.folder) / "passages.memmap"
    settings = exact_search.SearchSettings(
        block_rows=args.block_rows,
        query_block=args.query_block,
        threads=args.threads,
        after_block=page_dropper(emb.vectors, vec_path),
    )
    queries = unit_rows(args.queries, emb.dim, 1) if args.stage == "retrieve" else None
    drop_file(vec_path)
    drop_file(Path(args.folder) / "passages-id.memmap")
    r0, c0, t0 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with PeakAnon() as peak:
        index = exact_search.build_index(
            emb.vectors,
            None,
            backend=args.backend,
            show_progress=False,
            search_shards=args.shards,
            settings=settings,
        )
        if args.stage == "retrieve":
            ranking.retrieve_documents(
                index, emb.doc_ids, queries, range(args.queries), 101, show_progress=False
            )
        else:
            rel = OneRelevant(int(emb.doc_ids[-1]) + 1)
            out = Path(args.folder) / f"hn-{args.queries}.json"
            hard_negatives.generate_hard_negatives(
                index,
                emb.doc_ids,
                lambda a, b: unit_rows(b - a, emb.dim, 1000 + a),
                args.queries,
                rel,
                out,
                show_progress=False,
            )
            out.unlink()
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime),
        "peak_anon": peak.peak,
        "rise_anon": peak.peak - peak.start,
        "read": read_bytes() - r0,
        "file": vec_path.stat().st_size,
        "rows": emb.num_rows,
        "dim": emb.dim,
    }


class OneRelevant:
    """Training qrels of one relevant document per query, without a dict per query (the pipeline's
    ``load_rel`` dict is an input of the stage, about 150 bytes per training query)."""

    def __init__(self, n_docs: int):
        self.n_docs = n_docs

    def get(self, q: int, default=()):
        return (q % self.n_docs,)


def make_folder(folder: Path, rows: int, dim: int) -> Path:
    """A complete segment-embedding folder of ``rows`` random unit vectors (documents of 1-4 rows)."""
    from SeDR.retrieval.embedding_files import SegmentEmbeddingWriter, embeddings_complete

    if embeddings_complete(folder):
        return folder
    rng = np.random.default_rng(rows)
    counts = rng.choice(np.arange(1, 5), size=rows, p=MIX)  # more documents than needed; cut at `rows`
    doc_ids = np.repeat(np.arange(rows), counts)[:rows].astype(np.int32)
    with SegmentEmbeddingWriter(folder, dim, info={"bench": "scale"}) as w:
        for lo in range(0, rows, 1 << 16):
            hi = min(lo + (1 << 16), rows)
            w.append(unit_rows(hi - lo, dim, lo), doc_ids[lo:hi])
    return folder


def run_stage(stage: str, folder: Path, queries: int, backend="torch", shards=1, **kw) -> dict:
    cmd = [sys.executable, str(HERE), "--child", stage, "--folder", str(folder), "--queries", str(queries)]
    cmd += ["--backend", backend, "--shards", str(shards)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    # glibc's default mmap threshold grows as large blocks are freed, after which it keeps freed score
    # blocks on its heap: a fixed threshold returns them, so RssAnon follows the live heap.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out.update(stage=stage, backend=backend + (f", {shards} shards" if shards > 1 else ""), queries=queries)
    return out


def exponent(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(xs) > 1 else float("nan")


# ------------------------------------------------------------------------------------------ report


def row_line(r: dict) -> str:
    passes = r["read"] / r["file"]
    return (
        f"| {r['stage']} | {r['backend']} | {r['rows']:,d} | {r['queries']:,d} | {r['wall_s']:.1f} "
        f"| {r['cpu_s']:.1f} | {r['peak_anon'] / MIB:,.0f} | {r['rise_anon'] / MIB:,.0f} "
        f"| {r['read'] / MIB:,.0f} | {passes:.3f} |"
    )


def report(results: list[dict], settings: dict) -> dict:
    print(
        "\n| stage | backend | rows | queries | wall s | CPU s | peak anon MiB | rise MiB | read MiB "
        "| read / file |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in results:
        print(row_line(r))
    checks, exps = {}, {}
    print("\ngrowth exponents (slope of log metric over log size):")
    for (stage, backend), group in _groups(results).items():
        key = "rows" if stage == "retrieve" else "queries"
        group = [g for g in group if g["queries"] == group[0]["queries"]] if key == "rows" else group
        xs = [g[key] for g in group]
        if len(set(xs)) < 2:
            continue
        e = {
            m: exponent(xs, [max(g[m], 1e-9) for g in group])
            for m in ("wall_s", "cpu_s", "peak_anon", "read")
        }
        exps[f"{stage} {backend} over {key}"] = e
        print(
            f"  {stage:8s} {backend:18s} over {key:7s}: wall {e['wall_s']:.2f}, CPU {e['cpu_s']:.2f}, "
            f"peak heap {e['peak_anon']:.3f}, bytes read {e['read']:.2f}"
        )
        peaks = [g["peak_anon"] for g in group]
        checks[
            f"peak heap of {stage} ({backend}) flat over {key} {min(xs):,d}..{max(xs):,d} (within 10%)"
        ] = (
            max(peaks) / min(peaks) <= 1.10,
            f"max/min {max(peaks) / min(peaks):.3f}",
        )
    one_pass = [
        r
        for r in results
        if r["stage"] == "retrieve"
        and r["queries"] <= settings["query_block"]
        and "query block" not in r["backend"]
    ]
    worst = max(abs(r["read"] / r["file"] - 1) for r in one_pass)
    checks["vector bytes read per search call = one pass over the file (within 5%), any query count"] = (
        worst <= 0.05,
        f"worst {1 + worst:.3f} passes over {len(one_pass)} calls",
    )
    faiss = [r for r in results if r["stage"] == "retrieve" and r["backend"].startswith("faiss")]
    if faiss:
        ratio = max(r["peak_anon"] / r["file"] for r in faiss if r["rows"] == max(f["rows"] for f in faiss))
        checks["faiss peak heap <= 1.05 x the index size (largest size)"] = (ratio <= 1.05, f"{ratio:.3f} x")
    print("\nchecks (docs/scale.md#acceptance):")
    for name, (ok, detail) in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return {"exponents": exps, "checks": {k: [bool(a), b] for k, (a, b) in checks.items()}}


def _groups(results):
    out: dict = {}
    for r in results:
        out.setdefault((r["stage"], r["backend"]), []).append(r)
    return out


def extrapolate(results: list[dict], settings: dict) -> dict:
    """MS MARCO Document at default flags: CPU hours per core, bytes read, what fits
    (docs/scale.md#ms-marco)."""
    big = {}  # per backend the run with the most queries per call: reading the file costs CPU time too
    for r in results:
        if r["stage"] == "retrieve" and r["backend"] in ("torch", "faiss") and r["dim"] == 768:
            best = big.get(r["backend"])
            if best is None or (r["queries"], r["rows"]) > (best["queries"], best["rows"]):
                big[r["backend"]] = r
    hn = max((r for r in results if r["stage"] == "hardneg"), key=lambda r: r["queries"], default=None)
    ns = {b: r["cpu_s"] / (r["rows"] * r["queries"]) * 1e9 for b, r in big.items()}
    per_query_hn = None
    if hn is not None and "torch" in ns:  # hard negatives beyond the search: selection, block files, JSON
        per_query_hn = max(
            hn["cpu_s"] / hn["queries"] - ns["torch"] * hn["rows"] * hn["dim"] / 768 / 1e9, 0.0
        )
    print(
        "\nMS MARCO Document (768-d, default flags), extrapolated from the measured CPU time per query x row:"
    )
    for b, v in ns.items():
        print(
            f"  {b}: {v:.2f} ns per query x row (CPU time, from {big[b]['rows']:,d} rows x "
            f"{big[b]['queries']} queries)"
        )
    if per_query_hn is not None:
        print(f"  hard negatives besides the search: at most {per_query_hn * 1e6:.0f} us CPU per query")
    q_block = settings["query_block"]
    lines = [
        "| rows | file GiB | stage | queries | passes | CPU h per core (torch) | CPU h per core (faiss) "
        "| read GiB: 24 GB | 64 GB | 128 GB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    heap_gib = (q_block * 1025 * 12 + 2.25 * 256 * MIB + q_block * 768 * 4 + q_block * 300 * 4) / 2**30
    for label, rows in MSMARCO_ROWS.items():
        file_gib = rows * 768 * 4 / 2**30
        for stage, n in MSMARCO_QUERIES.items():
            passes = math.ceil(n / q_block) * (2 if stage.startswith("TREC") else 1)
            hours = {b: n * rows * v / 1e9 / 3600 for b, v in ns.items()}
            if stage == "hard negatives" and per_query_hn is not None:
                hours = {b: h + n * per_query_hn / 3600 for b, h in hours.items()}
            reads = []
            for gb in MACHINES_GB:  # the file stays in the page cache when RAM - heap - 4 GB holds it
                cached = gb - heap_gib - 4 >= file_gib
                reads.append(file_gib * (1 if cached else passes))
            lines.append(
                f"| {label} | {file_gib:.1f} | {stage} | {n:,d} | {passes} "
                f"| {hours.get('torch', float('nan')):.1f} | {hours.get('faiss', float('nan')):.1f} | "
                + " | ".join(f"{x:.0f}" for x in reads)
                + " |"
            )
    print("\n" + "\n".join(lines))
    print(
        f"\nheap of a search at default flags (query block {q_block:,d}): about {heap_gib:.1f} GiB besides "
        f"the model (running top-1,024 {q_block * 1025 * 12 / 2**30:.2f} GiB, score blocks "
        f"{2.25 * 256 / 1024:.2f} GiB, "
        "one block of query vectors and of hard-negative lists): every machine size fits; the vector file "
        "stays in the page cache where the row says it is read once"
    )
    return {
        "ns_per_query_row": ns,
        "hardneg_us_per_query": per_query_hn and per_query_hn * 1e6,
        "table": lines,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 k and 1 M rows, 10 k and 300 k training queries")
    p.add_argument("--dir", default=None, help="where the vector folders go (default: a temporary folder)")
    p.add_argument("--json", default=None, help="write every measurement here")
    p.add_argument("--block_rows", type=int, default=1 << 16, help="--search_block_rows of every stage")
    p.add_argument("--query_block", type=int, default=4096, help="--search_query_block of every stage")
    p.add_argument("--threads", type=int, default=0, help="--search_threads of every stage")
    # the child side
    p.add_argument("--child", choices=["retrieve", "hardneg"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--queries", type=int, help=argparse.SUPPRESS)
    p.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    p.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.stage = args.child
        print(json.dumps(child(args)))
        return 0
    t_all = time.perf_counter()
    root = Path(args.dir or tempfile.mkdtemp(prefix="sedr-scale-"))
    sizes = [100_000, 1_000_000] if args.quick else [100_000, 1_000_000, 3_000_000]
    query_counts = [8, 64, 512] if args.quick else [8, 64, 512, 2048]
    train_counts = [10_000, 300_000] if args.quick else [10_000, 100_000, 300_000]
    common = {"block_rows": args.block_rows, "query_block": args.query_block, "threads": args.threads}
    print(
        f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"folders in {root}; --search_block_rows {args.block_rows} --search_query_block {args.query_block}"
    )
    results = []
    for rows in sizes:
        folder = make_folder(root / f"v{rows}", rows, 768)
        for backend, shards in (("torch", 1), ("faiss", 1), ("faiss", 3)):
            if args.quick and shards > 1 and rows > sizes[0]:
                continue  # --quick: shards at the first size only
            results.append(run_stage("retrieve", folder, 64, backend, shards, **common))
            print(row_line(results[-1]), flush=True)
    first = root / f"v{sizes[0]}"
    for n in query_counts:
        if n != 64:
            results.append(run_stage("retrieve", first, n, "torch", **common))
            print(row_line(results[-1]), flush=True)
    results.append(run_stage("retrieve", first, query_counts[-1], "faiss", **common))
    print(row_line(results[-1]), flush=True)
    # More queries than the query block: one pass each block (the old loop searched 1,024 queries a call).
    results.append(run_stage("retrieve", first, 4 * 128, "torch", **{**common, "query_block": 128}))
    results[-1]["backend"] = "torch, query block 128"
    print(row_line(results[-1]), flush=True)
    small = make_folder(root / "hn1536x32", 1536, 32)  # hard negatives: the cost per query, not per row
    for n in train_counts:
        results.append(run_stage("hardneg", small, n, "torch", **common))
        print(row_line(results[-1]), flush=True)
    summary = report(results, common)
    summary.update(extrapolate(results, {**common, "query_block": 1 << 16}))
    print(f"\nscale.py wall time {time.perf_counter() - t_all:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": common, "results": results, **summary}, indent=1))
    return 0 if all(ok for ok, _ in summary["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
