"""One check of the GPU paths at the README's sizes: training precision, gradient checkpointing,
encoding throughput and exact torch search. Prints one table and writes JSON.

* Training (``SeDR``, Late-Cache 50, LAMB at 5e-5, a random roberta-base-shaped STAR checkpoint:
  hidden 768, 12 layers, 12 heads, FFN 3072, vocabulary 50265; M = 4 segments of 512 tokens; one
  micro-batch of at most ``--max_bsize`` positive segments plus one hard negative per query, rows
  grouped by width as the trainer collates them) in fp32, fp16 (GradScaler) and bf16: segments/s,
  peak memory, and the loss after the same N steps on the same batch against fp32's.
* Gradient checkpointing on vs off in fp16 at the same batch: time and peak-memory ratios.
* Encoding in bf16 (inference passes of 100 segments, MS MARCO-like lengths from
  ``bench/common.py``): SeDR vs STAR_MaxP on the same rows, padded rows vs rows grouped by width,
  and the time to index MS MARCO Document (3.2 M documents x the measured segments/doc) at SeDR's
  rate against the paper's 20.7 h.
* Search: the torch backend on the GPU against the same backend on the CPU (top 100 of 1 M random
  768-d unit vectors), queries/s at 100 and 1024 hits in fp32 and fp16, and the peak extra memory
  of one search call against the chunk's score block.

Needs torch and transformers only (no faiss, no ir_measures, no network: random weights, no
tokenizer). ``--tiny`` runs every step on small sizes, on the CPU if no GPU is visible, in seconds.

    bash bench/gpu_check.sh [--tiny] [--json PATH] [--device cuda:0]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import interleaved_min, machine, msmarco_like_documents, random_models

from SeDR.core.runtime import Precision
from SeDR.data.batches import TrainBatch
from SeDR.data.collation import collate_queries
from SeDR.data.sampling import cap_hard_negative_segments, document_batches, pack_by_segment_budget
from SeDR.data.segmentation import SegmentSpec, collate_documents, num_segments
from SeDR.retrieval import exact_search
from SeDR.retrieval.encoding import collate_pass
from SeDR.training.optimizers import build_optimizer

MSMARCO_DOCS = 3_200_000
PAPER_INDEX_HOURS = 20.7
SIZES = {  # README sizes, and a tiny stand-in for CI
    "full": dict(
        hidden=768,
        layers=12,
        heads=12,
        ffn=3072,
        vocab=50265,
        seg_len=512,
        max_seg_num=4,
        max_bsize=17,
        cache=50,
        steps=20,
        encode_docs=800,
        encode_bsize=100,
        reps=3,
        rows=1_000_000,
        dim=768,
        queries=1024,
        cpu_queries=128,
    ),
    "tiny": dict(
        hidden=32,
        layers=2,
        heads=4,
        ffn=37,
        vocab=1000,
        seg_len=64,
        max_seg_num=4,
        max_bsize=6,
        cache=5,
        steps=3,
        encode_docs=12,
        encode_bsize=8,
        reps=2,
        rows=3000,
        dim=16,
        queries=64,
        cpu_queries=16,
    ),
}
QUERY_LEN = 32
LR = 5e-5


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def precision_of(name: str, device: torch.device) -> Precision:
    """The trainer's precisions, built directly so that ``--tiny`` exercises them on a CPU too."""
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
    return Precision(device, dtype, torch.amp.GradScaler(device.type) if name == "fp16" else None)


def train_batch(spec: SegmentSpec, max_bsize: int, rng: np.random.Generator) -> TrainBatch:
    """One micro-batch as the sampler and collator build it: positives fill the segment budget in
    order, one hard negative per query, negatives capped to the same budget."""
    pos = msmarco_like_documents(4 * max_bsize, spec, rng)
    counts = num_segments(np.array([len(d) for d in pos]), spec)
    pos = [pos[i] for i in pack_by_segment_budget(counts, max_bsize)[0]]
    b = len(pos)
    neg = msmarco_like_documents(b, spec, rng)
    caps = cap_hard_negative_segments(num_segments(np.array([len(d) for d in neg]), spec), max_bsize)
    queries = [
        np.concatenate([[0], rng.integers(5, 1000, size=int(rng.integers(6, 20))), [2]]) for _ in range(b)
    ]
    return TrainBatch(
        queries=collate_queries(queries, range(b), QUERY_LEN),
        positives=collate_documents(pos, range(b), spec, row_groups=True),
        negatives=collate_documents(neg, range(b, 2 * b), spec, seg_caps=caps, row_groups=True),
        rel_pair_mask=1 - torch.eye(b),
        hard_pair_mask=torch.ones(b, b),
    )


def train_run(base, batch: TrainBatch, name: str, steps: int, device, checkpointing: bool = False) -> dict:
    """``steps`` optimizer steps on the same batch from the same weights and seed."""
    model = copy.deepcopy(base).to(device)
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    precision = precision_of(name, device)
    opt = build_optimizer("lamb", model, lr=LR, weight_decay=0.01)
    cache, batch = model.new_cache(), batch.to(device)
    segs = batch.positives.num_segments + batch.negatives.num_segments
    torch.manual_seed(0)
    reset_peak(device)
    losses, times, skipped = [], [], 0
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with precision.autocast():
            loss = model(batch, cache=cache).loss
        precision.backward(loss)
        precision.clip_(model.parameters(), 1.0)
        skipped += not precision.step(opt)
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))  # synchronises
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times[1:] if len(times) > 1 else times))
    out = {
        "segments_per_step": int(segs),
        "step_s": step_s,
        "segments_per_s": segs / step_s,
        "peak_gib": peak_gib(device),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "skipped_steps": skipped,
    }
    del model, opt, cache
    reset_peak(device)
    return out


def train_section(sz: dict, device, steps: int) -> dict:
    spec = SegmentSpec(sz["seg_len"], sz["max_seg_num"])
    base = random_models(
        ["SeDR"],
        max_seg_num=sz["max_seg_num"],
        hidden=sz["hidden"],
        layers=sz["layers"],
        heads=sz["heads"],
        intermediate=sz["ffn"],
        vocab=sz["vocab"],
        cache_size=sz["cache"],
    )["SeDR"]
    for bsize in range(sz["max_bsize"], 0, -4):  # the README's 17, else the largest that fits
        batch = train_batch(spec, bsize, np.random.default_rng(0))
        try:
            runs = {p: train_run(base, batch, p, steps, device) for p in ("fp32", "fp16", "bf16")}
            runs["fp16 + checkpointing"] = train_run(base, batch, "fp16", steps, device, checkpointing=True)
            break
        except torch.OutOfMemoryError:
            reset_peak(device)
    ref = runs["fp32"]["last_loss"]
    for r in runs.values():
        r["loss_rel_diff_vs_fp32"] = abs(r["last_loss"] - ref) / abs(ref)
    off, on = runs["fp16"], runs["fp16 + checkpointing"]
    return {
        "max_bsize": bsize,
        "steps": steps,
        "queries": batch.num_queries,
        "runs": runs,
        "checkpointing_time_ratio": on["step_s"] / off["step_s"],
        "checkpointing_peak_ratio": None if off["peak_gib"] is None else on["peak_gib"] / off["peak_gib"],
    }


def encode_section(sz: dict, device) -> dict:
    spec = SegmentSpec(sz["seg_len"], sz["max_seg_num"])
    models = random_models(
        ["SeDR", "STAR_MaxP"],
        max_seg_num=sz["max_seg_num"],
        hidden=sz["hidden"],
        layers=sz["layers"],
        heads=sz["heads"],
        intermediate=sz["ffn"],
        vocab=sz["vocab"],
        device=str(device),
    )
    docs = msmarco_like_documents(sz["encode_docs"], spec, np.random.default_rng(1))
    counts = np.asarray(num_segments(np.array([len(d) for d in docs]), spec))
    plan = list(document_batches(counts, sz["encode_bsize"]))
    sedr = models["SeDR"].eval()
    models["STAR_MaxP"].eval()
    grouped = [collate_pass(sedr, [docs[i] for i in b], b, spec).to(device) for b in plan]
    padded = [
        collate_pass(sedr, [docs[i] for i in b], b, spec, compact=False, row_groups=False).to(device)
        for b in plan
    ]
    precision = precision_of("bf16", device)

    def passes(model, rows):
        def one(b):
            def run():
                with torch.inference_mode(), precision.autocast():
                    return model.encode_segments(b)

            return run

        return [one(b) for b in rows]

    t = interleaved_min(
        {
            "SeDR grouped": passes(sedr, grouped),
            "STAR_MaxP grouped": passes(models["STAR_MaxP"], grouped),
            "SeDR padded": passes(sedr, padded),
        },
        sz["reps"],
        str(device),
    )
    n_seg = int(counts.sum())
    rate = n_seg / t["SeDR grouped"]
    seg_per_doc = n_seg / len(docs)
    hours = MSMARCO_DOCS * seg_per_doc / rate / 3600
    return {
        "segments": n_seg,
        "segments_per_doc": seg_per_doc,
        "passes": len(plan),
        "sedr_segments_per_s": rate,
        "star_maxp_segments_per_s": n_seg / t["STAR_MaxP grouped"],
        "sedr_over_star_maxp_time": t["SeDR grouped"] / t["STAR_MaxP grouped"],
        "padded_over_grouped_time": t["SeDR padded"] / t["SeDR grouped"],
        "msmarco_index_hours": hours,
        "paper_index_hours": PAPER_INDEX_HOURS,
        "msmarco_hours_over_paper": hours / PAPER_INDEX_HOURS,
    }


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1).numpy()


def search_section(sz: dict, device) -> dict:
    vectors = unit_rows(sz["rows"], sz["dim"], 2)
    queries = unit_rows(sz["queries"], sz["dim"], 3)
    cpu_q = queries[: sz["cpu_queries"]]
    cpu_s, cpu_r = exact_search.TorchFlatIndex(vectors, "cpu").search(cpu_q, 100)
    out = {"rows": sz["rows"], "dim": sz["dim"], "queries_per_call": len(queries), "device": str(device)}
    for fp16 in (False, True):
        tag = "fp16" if fp16 else "fp32"
        index = exact_search.TorchFlatIndex(vectors, device, fp16=fp16)
        s, r = index.search(cpu_q, 100)
        if not fp16:
            diff = r != cpu_r  # a mismatch is only acceptable between scores equal up to rounding
            out["top100_rows_equal_cpu"] = bool(not diff.any())
            out["top100_mismatches"] = int(diff.sum())
            out["top100_mismatches_all_near_ties"] = bool(np.all(np.abs(s - cpu_s)[diff] <= 1e-5))
            out["top100_max_score_diff"] = float(np.abs(s - cpu_s).max())
        else:
            out["fp16_top100_overlap_with_fp32"] = float(
                np.mean([len(set(a) & set(b)) / 100 for a, b in zip(r, cpu_r)])
            )
        reset_peak(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        for k in (100, 1024):
            t = interleaved_min(
                {"search": lambda k=k, ix=index: ix.search(queries, k)}, sz["reps"], str(device)
            )["search"]
            out[f"{tag}_queries_per_s_top{k}"] = len(queries) / t
        if device.type == "cuda":
            extra = (torch.cuda.max_memory_allocated(device) - base) / 2**30
            out[f"{tag}_search_peak_extra_gib"] = extra
            block = len(queries) * index.rows_per_chunk(len(queries)) * index.vectors.element_size() / 2**30
            out[f"{tag}_search_peak_over_score_block"] = extra / block
        else:
            out[f"{tag}_search_peak_extra_gib"] = out[f"{tag}_search_peak_over_score_block"] = None
        del index
    return out


def fmt(v, spec: str = ".3f", unit: str = "") -> str:
    return "n/a on CPU" if v is None else format(v, spec) + unit


def table(res: dict) -> list[tuple[str, str]]:
    tr, en, se = res["train"], res["encode"], res["search"]
    rows = []
    for name, r in tr["runs"].items():
        rows.append(
            (
                f"train {name}",
                f"{r['segments_per_s']:.1f} segments/s, peak memory {fmt(r['peak_gib'], '.2f', ' GiB')}, "
                f"loss after {tr['steps']} steps {r['last_loss']:.5f} "
                f"(rel. diff vs fp32 {r['loss_rel_diff_vs_fp32']:.2e}), skipped {r['skipped_steps']}",
            )
        )
    rows.append(
        (
            "gradient checkpointing on/off",
            f"time {tr['checkpointing_time_ratio']:.3f}x, "
            f"peak memory {fmt(tr['checkpointing_peak_ratio'], '.3f', 'x')} "
            f"(fp16, {tr['max_bsize']} segments)",
        )
    )
    rows.append(
        (
            "encode bf16 SeDR / STAR_MaxP",
            f"time {en['sedr_over_star_maxp_time']:.3f}x "
            f"({en['sedr_segments_per_s']:.1f} vs {en['star_maxp_segments_per_s']:.1f} segments/s)",
        )
    )
    rows.append(("encode padded / row-grouped", f"time {en['padded_over_grouped_time']:.3f}x"))
    rows.append(
        (
            "index MS MARCO Document",
            f"{en['msmarco_index_hours']:.2f} h at {en['segments_per_doc']:.2f} segments/doc "
            f"(paper {PAPER_INDEX_HOURS} h: {en['msmarco_hours_over_paper']:.3f}x)",
        )
    )
    rows.append(
        (
            "search top-100 equals CPU",
            f"{se['top100_rows_equal_cpu']} ({se['top100_mismatches']} mismatches, "
            f"all near ties: {se['top100_mismatches_all_near_ties']}, "
            f"max score diff {se['top100_max_score_diff']:.1e})",
        )
    )
    for tag in ("fp32", "fp16"):
        extra, block = se[f"{tag}_search_peak_extra_gib"], se[f"{tag}_search_peak_over_score_block"]
        mem = "n/a on CPU" if extra is None else f"{extra:.2f} GiB = {block:.2f}x the score block"
        rows.append(
            (
                f"search {tag} queries/s",
                f"top 100: {se[f'{tag}_queries_per_s_top100']:.0f}, top 1024: "
                f"{se[f'{tag}_queries_per_s_top1024']:.0f} ({se['rows']:,} x {se['dim']}); "
                f"peak extra memory {mem}",
            )
        )
    rows.append(("search fp16 top-100 overlap", f"{se['fp16_top100_overlap_with_fp32']:.4f} of fp32's rows"))
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="small sizes, seconds, CPU if no GPU (CI)")
    p.add_argument("--device", default=None, help="default cuda:0 if visible, else cpu")
    p.add_argument(
        "--steps", type=int, default=None, help="training steps per precision (default 20, tiny 3)"
    )
    p.add_argument("--json", default="gpu_check.json", help="where the results go")
    args = p.parse_args(argv)
    sz = SIZES["tiny" if args.tiny else "full"]
    device = torch.device(args.device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    t_all = time.perf_counter()
    res = {
        "machine": machine(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "tiny": args.tiny,
        "device": str(device),
        "seconds": {},
    }
    for name, run in (
        ("train", lambda: train_section(sz, device, args.steps or sz["steps"])),
        ("encode", lambda: encode_section(sz, device)),
        ("search", lambda: search_section(sz, device)),
    ):
        t0 = time.perf_counter()
        res[name] = run()
        res["seconds"][name] = time.perf_counter() - t0
        print(f"[{name} done in {res['seconds'][name]:.0f} s]", flush=True)
    res["seconds"]["total"] = time.perf_counter() - t_all
    res["imported"] = {m: m in sys.modules for m in ("faiss", "ir_measures")}  # the GPU image has neither
    print(
        f"GPU check: {res['gpu'] + ', torch ' + res['torch'] if res['gpu'] else res['machine']}, "
        f"{res['date']}{' (--tiny)' if args.tiny else ''}, {res['seconds']['total']:.0f} s"
    )
    rows = table(res)
    w = max(len(a) for a, _ in rows)
    print("\n".join(f"| {a:<{w}} | {b} |" for a, b in rows))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.json}")
    return res


if __name__ == "__main__":
    main()
