"""One check of the GPU paths at the README's sizes, with figures that line up with the paper's Table 2
(training 15.8 h, indexing 20.7 h, 2.7 ms/query, a 21.5 GB index). Prints one table per section and
the Table 2 line-up, and writes the JSON after every section (a crash keeps what was measured).

* Training (``SeDR``, Late-Cache 50, LAMB at 5e-5, a random roberta-base-shaped STAR checkpoint:
  hidden 768, 12 layers, 12 heads, FFN 3072, vocabulary 50265; M = 4 segments of 512 tokens; one
  micro-batch of at most ``--max_bsize`` positive segments plus one hard negative per query, rows
  grouped by width as the trainer collates them) in fp32, TF32, fp16 (GradScaler), bf16 and fp16
  with gradient checkpointing: ``--steps`` optimizer steps *taken* on the same batch from the same
  weights and seed. fp16 starts its GradScaler at ``--fp16_init_scale`` so that its steps are taken;
  the steps it skipped are counted apart and the loss is compared with fp32's after the same number
  of taken steps. Each step is timed in two parts (forward + backward + clip; optimizer step), which
  gives the hours of one MS MARCO epoch at the README's accumulation of 4: 367,013 queries packed as
  the sampler packs MS MARCO-like positives into micro-batches of 17 segments.
* Encoding (inference passes of 100 segments, MS MARCO-like lengths from ``bench/common.py``): SeDR
  in fp32, TF32 and bf16; STAR_MaxP vs SeDR and padded vs row-grouped rows in bf16; the hours to
  index MS MARCO Document (3.2 M documents x the measured segments per document) in each precision.
* Search (the torch backend): the top 100 on the GPU against the CPU; the top-100 overlap of
  ``--faiss_fp16`` with fp32 on random unit vectors and on LayerNorm-ed vectors that share a direction
  (as a trained model's do); the latency in ms/query with 1, 32 and 1,024 queries per call at MS
  MARCO's segment count (3.2 M documents x the measured segments per document), fp32 and fp16; the
  index size.

Needs torch, transformers and numpy only (no faiss, no ir_measures, no tensorboard, no network:
random weights, no tokenizer). ``--tiny`` runs every step on small sizes, on the CPU if no GPU is
visible, in seconds. Time on one H100/H200 and how it was estimated: docs/performance.md#gpu-check.

    bash bench/gpu_check.sh [--tiny] [--json PATH] [--device cuda:0]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import MSMARCO_SEGMENT_MIX, interleaved_min, machine, msmarco_like_documents, random_models

from SeDR.core.constants import SEGMENT_HITS
from SeDR.core.runtime import Precision
from SeDR.data.batches import TrainBatch
from SeDR.data.collation import collate_queries
from SeDR.data.sampling import cap_hard_negative_segments, document_batches, pack_by_segment_budget
from SeDR.data.segmentation import SegmentSpec, collate_documents, num_segments
from SeDR.retrieval import exact_search
from SeDR.retrieval.encoding import collate_pass
from SeDR.training.optimizers import build_optimizer

MSMARCO_DOCS = 3_200_000
MSMARCO_TRAIN_QUERIES = 367_013
README_ACCUMULATION = 4
README_EPOCHS = 4  # the checkpoint the README evaluates (epoch-4-512-4-17-SeDR)
PAPER = {"train_hours": 15.8, "index_hours": 20.7, "ms_per_query": 2.7, "index_gb": 21.5}  # Table 2
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
        overlap_rows=1_000_000,
        dim=768,
        queries=1024,
        cpu_queries=128,
        msmarco_docs=MSMARCO_DOCS,
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
        overlap_rows=3000,
        dim=16,
        queries=64,
        cpu_queries=16,
        msmarco_docs=4000,
    ),
}
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
QUERY_LEN = 32
LR = 5e-5
LATENCY_CALLS = (1, 32, 1024)  # queries per search call


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def tf32_matmuls(on: bool):
    """TF32 for fp32 matmuls and convolutions while inside (what ``--tf32`` sets for a whole run)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def tf32_in_effect(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def precision_of(name: str, device: torch.device, init_scale: float) -> Precision:
    """The trainer's precisions, built directly so that ``--tiny`` exercises them on a CPU too."""
    dtype = {"fp32": None, "tf32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
    scaler = torch.amp.GradScaler(device.type, init_scale=init_scale) if name == "fp16" else None
    return Precision(device, dtype, scaler, tf32=name == "tf32" and tf32_in_effect(device))


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


def micro_batches_per_epoch(max_bsize: int, max_seg_num: int, draws: int = 200_000) -> float:
    """MS MARCO's training queries over the mean queries per micro-batch when positives with the
    MS MARCO-like segment mix are packed into ``max_bsize`` segments (the sampler's packing)."""
    rng = np.random.default_rng(0)
    p = np.asarray(MSMARCO_SEGMENT_MIX[:max_seg_num], dtype=float)
    counts = rng.choice(np.arange(1, max_seg_num + 1), size=draws, p=p / p.sum())
    per_batch = draws / len(pack_by_segment_budget(counts, max_bsize))
    return MSMARCO_TRAIN_QUERIES / per_batch


def train_run(base, batch: TrainBatch, name: str, steps: int, device, init_scale: float, ckpt=False) -> dict:
    """``steps`` optimizer steps taken on the same batch from the same weights and seed."""
    model = copy.deepcopy(base).to(device)
    if ckpt:
        model.gradient_checkpointing_enable()
    model.train()
    precision = precision_of(name, device, init_scale)
    opt = build_optimizer("lamb", model, lr=LR, weight_decay=0.01)
    cache, batch = model.new_cache(), batch.to(device)
    segs = batch.positives.num_segments + batch.negatives.num_segments
    torch.manual_seed(0)
    reset_peak(device)
    losses, fb_times, opt_times, skipped = [], [], [], 0
    with tf32_matmuls(name == "tf32"):
        while len(losses) < steps and skipped < steps + 16:
            sync(device)
            t0 = time.perf_counter()
            with precision.autocast():
                loss = model(batch, cache=cache).loss
            precision.backward(loss)
            precision.clip_(model.parameters(), 1.0)
            sync(device)
            t1 = time.perf_counter()
            taken = precision.step(opt)
            opt.zero_grad(set_to_none=True)
            sync(device)
            t2 = time.perf_counter()
            if not taken:
                skipped += 1
                continue
            losses.append(float(loss.detach()))
            fb_times.append(t1 - t0)
            opt_times.append(t2 - t1)
    if not losses:
        raise RuntimeError(f"train {name}: the GradScaler skipped all {skipped} steps")
    warm = slice(1, None) if len(losses) > 1 else slice(None)
    fb, op = float(np.median(fb_times[warm])), float(np.median(opt_times[warm]))
    out = {
        "segments_per_step": int(segs),
        "forward_backward_s": fb,
        "optimizer_step_s": op,
        "step_s": fb + op,
        "segments_per_s": segs / (fb + op),
        "peak_gib": peak_gib(device),
        "steps_taken": len(losses),
        "skipped_steps": skipped,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "tf32": precision.tf32,
    }
    del model, opt, cache
    reset_peak(device)
    return out


def train_section(sz: dict, device, steps: int, init_scale: float) -> dict:
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
            runs = {p: train_run(base, batch, p, steps, device, init_scale) for p in PRECISIONS}
            runs["fp16 + checkpointing"] = train_run(
                base, batch, "fp16", steps, device, init_scale, ckpt=True
            )
            break
        except torch.OutOfMemoryError:
            reset_peak(device)
    ref = runs["fp32"]
    micro = micro_batches_per_epoch(sz["max_bsize"], sz["max_seg_num"])
    for r in runs.values():
        # After the same number of taken steps (a skipped step changes no weight).
        r["loss_rel_diff_vs_fp32"] = abs(r["last_loss"] - ref["last_loss"]) / abs(ref["last_loss"])
        r["comparable_to_fp32"] = r["steps_taken"] == ref["steps_taken"]
        per_micro = r["forward_backward_s"] + r["optimizer_step_s"] / README_ACCUMULATION
        r["msmarco_epoch_hours"] = micro * per_micro / 3600
    off, on = runs["fp16"], runs["fp16 + checkpointing"]
    return {
        "max_bsize": bsize,
        "steps": steps,
        "fp16_init_scale": init_scale,
        "queries": batch.num_queries,
        "msmarco_micro_batches_per_epoch": micro,
        "accumulation": README_ACCUMULATION,
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

    def passes(model, rows, precision: str):
        dtype = torch.bfloat16 if precision == "bf16" else None
        prec = Precision(device, dtype, None)

        def one(b):
            def run():
                with torch.inference_mode(), prec.autocast(), tf32_matmuls(precision == "tf32"):
                    return model.encode_segments(b)

            return run

        return [one(b) for b in rows]

    t = interleaved_min(
        {
            "SeDR fp32": passes(sedr, grouped, "fp32"),
            "SeDR tf32": passes(sedr, grouped, "tf32"),
            "SeDR bf16": passes(sedr, grouped, "bf16"),
            "STAR_MaxP bf16": passes(models["STAR_MaxP"], grouped, "bf16"),
            "SeDR bf16 padded": passes(sedr, padded, "bf16"),
        },
        sz["reps"],
        str(device),
    )
    n_seg = int(counts.sum())
    seg_per_doc = n_seg / len(docs)
    out = {
        "segments": n_seg,
        "segments_per_doc": seg_per_doc,
        "passes": len(plan),
        "tf32_in_effect": tf32_in_effect(device),
        "sedr_over_star_maxp_time": t["SeDR bf16"] / t["STAR_MaxP bf16"],
        "padded_over_grouped_time": t["SeDR bf16 padded"] / t["SeDR bf16"],
        "star_maxp_bf16_segments_per_s": n_seg / t["STAR_MaxP bf16"],
        "paper_index_hours": PAPER["index_hours"],
    }
    for p in ("fp32", "tf32", "bf16"):
        rate = n_seg / t[f"SeDR {p}"]
        out[f"sedr_{p}_segments_per_s"] = rate
        out[f"msmarco_index_hours_{p}"] = MSMARCO_DOCS * seg_per_doc / rate / 3600
    return out


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1).numpy()


def layernormed_rows(n: int, dim: int, seed: int, shared: torch.Tensor, device) -> np.ndarray:
    """Rows as a trained model's output ``LayerNorm`` gives them: ``layer_norm(z + s)`` with ``z``
    random and ``s`` a direction every row shares (cosine between two rows about 0.8), drawn in
    blocks on ``device`` (fast on a GPU) into a float32 array."""
    g = torch.Generator(device=device).manual_seed(seed)
    s = shared.to(device)
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, 1 << 18):
        z = torch.randn(min(1 << 18, n - i), dim, generator=g, device=device)
        out[i : i + len(z)] = torch.nn.functional.layer_norm(z + s, (dim,)).cpu().numpy()
    return out


def top100_agreement(fp16_index, ref_rows: np.ndarray, queries: np.ndarray) -> dict:
    s, r = fp16_index.search(queries, 100)
    overlap = float(np.mean([len(set(a) & set(b)) / 100 for a, b in zip(r, ref_rows)]))
    distinct = float(np.mean([len(np.unique(row)) for row in s]))
    return {"overlap": overlap, "distinct_scores": distinct, "score_dtype": str(s.dtype)}


def search_section(sz: dict, device, segments_per_doc: float) -> dict:
    out = {"device": str(device), "dim": sz["dim"], "rows": sz["rows"], "queries_per_call": sz["queries"]}
    # Canonical top 100: GPU vs CPU on random unit vectors.
    vectors, queries = unit_rows(sz["rows"], sz["dim"], 2), unit_rows(sz["queries"], sz["dim"], 3)
    cpu_q = queries[: sz["cpu_queries"]]
    cpu_s, cpu_r = exact_search.TorchFlatIndex(vectors, "cpu").search(cpu_q, 100)
    s, r = exact_search.TorchFlatIndex(vectors, device).search(cpu_q, 100)
    diff = r != cpu_r  # a mismatch is only acceptable between scores equal up to rounding
    out["top100_rows_equal_cpu"] = bool(not diff.any())
    out["top100_mismatches"] = int(diff.sum())
    out["top100_mismatches_all_near_ties"] = bool(np.all(np.abs(s - cpu_s)[diff] <= 1e-5))
    out["top100_max_score_diff"] = float(np.abs(s - cpu_s).max())
    # fp16 storage against fp32 on random unit vectors and on LayerNorm-ed vectors with a shared direction.
    g = torch.Generator().manual_seed(4)
    shared = torch.randn(sz["dim"], generator=g) * 2.0
    ln_rows = layernormed_rows(sz["overlap_rows"], sz["dim"], 5, shared, device)
    ln_q = layernormed_rows(sz["cpu_queries"], sz["dim"], 6, shared, device)
    for tag, rows, q, ref in (("random", vectors, cpu_q, cpu_r), ("layernorm", ln_rows, ln_q, None)):
        if ref is None:
            ref = exact_search.TorchFlatIndex(rows, device).search(q, 100)[1]
        index = exact_search.TorchFlatIndex(rows, device, fp16=True)
        for k, v in top100_agreement(index, ref, q).items():
            out[f"fp16_{tag}_{k}"] = v
        del index
    del vectors, ln_rows
    # Latency at MS MARCO's segment count, and the index size.
    n = int(round(sz["msmarco_docs"] * segments_per_doc))
    out["msmarco_rows"] = n
    out["index_gb"] = n * (sz["dim"] + 1) * 4 / 1e9  # vectors + int32 document ids, as passages.memmap
    out["index_gib"] = n * (sz["dim"] + 1) * 4 / 2**30
    rows = layernormed_rows(n, sz["dim"], 7, shared, device)
    queries = layernormed_rows(max(LATENCY_CALLS), sz["dim"], 8, shared, device)
    for fp16 in (False, True):
        tag = "fp16" if fp16 else "fp32"
        reset_peak(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        index = exact_search.TorchFlatIndex(rows, device, fp16=fp16)
        for per_call in LATENCY_CALLS:
            q = queries[:per_call]
            t = interleaved_min(
                {"search": lambda ix=index, q=q: ix.search(q, SEGMENT_HITS)}, sz["reps"], str(device)
            )
            out[f"{tag}_ms_per_query_{per_call}"] = t["search"] / per_call * 1e3
        if device.type == "cuda":
            extra = (torch.cuda.max_memory_allocated(device) - base) / 2**30
            out[f"{tag}_search_peak_gib"] = extra
        else:
            out[f"{tag}_search_peak_gib"] = None
        del index
    return out


def fmt(v, spec: str = ".3f", unit: str = "") -> str:
    return "n/a on CPU" if v is None else format(v, spec) + unit


def table(res: dict) -> list[tuple[str, str]]:
    rows = []
    tr, en, se = res.get("train"), res.get("encode"), res.get("search")
    if tr:
        for name, r in tr["runs"].items():
            rows.append(
                (
                    f"train {name}",
                    f"{r['segments_per_s']:.1f} segments/s, peak memory {fmt(r['peak_gib'], '.2f', ' GiB')}, "
                    f"{r['steps_taken']} steps taken, skipped {r['skipped_steps']}; loss after them "
                    f"{r['last_loss']:.5f} (rel. diff vs fp32 {r['loss_rel_diff_vs_fp32']:.2e}); "
                    f"MS MARCO epoch {r['msmarco_epoch_hours']:.2f} h",
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
    if en:
        rows.append(
            (
                "encode SeDR fp32 / TF32 / bf16",
                f"{en['sedr_fp32_segments_per_s']:.1f} / {en['sedr_tf32_segments_per_s']:.1f} / "
                f"{en['sedr_bf16_segments_per_s']:.1f} segments/s"
                + ("" if en["tf32_in_effect"] else " (TF32 = fp32 here: no TF32 tensor cores)"),
            )
        )
        rows.append(("encode bf16 SeDR / STAR_MaxP", f"time {en['sedr_over_star_maxp_time']:.3f}x"))
        rows.append(("encode padded / row-grouped", f"time {en['padded_over_grouped_time']:.3f}x"))
        rows.append(
            (
                "index MS MARCO Document",
                f"fp32 {en['msmarco_index_hours_fp32']:.2f} h, TF32 {en['msmarco_index_hours_tf32']:.2f} h, "
                f"bf16 {en['msmarco_index_hours_bf16']:.2f} h at {en['segments_per_doc']:.2f} segments/doc "
                f"(paper {PAPER['index_hours']} h)",
            )
        )
    if se:
        rows.append(
            (
                "search top-100 equals CPU",
                f"{se['top100_rows_equal_cpu']} ({se['top100_mismatches']} mismatches, "
                f"all near ties: {se['top100_mismatches_all_near_ties']}, "
                f"max score diff {se['top100_max_score_diff']:.1e})",
            )
        )
        rows.append(
            (
                "search fp16 top-100 overlap",
                f"random unit vectors {se['fp16_random_overlap']:.4f}, LayerNorm-ed with a shared direction "
                f"{se['fp16_layernorm_overlap']:.4f} ({se['fp16_layernorm_distinct_scores']:.0f} distinct "
                f"scores in a top 100, returned as {se['fp16_layernorm_score_dtype']})",
            )
        )
        for tag in ("fp32", "fp16"):
            rows.append(
                (
                    f"search {tag} ms/query",
                    " / ".join(f"{se[f'{tag}_ms_per_query_{c}']:.3f}" for c in LATENCY_CALLS)
                    + f" with {' / '.join(map(str, LATENCY_CALLS))} queries per call, top {SEGMENT_HITS} of "
                    f"{se['msmarco_rows']:,} rows; peak {fmt(se[f'{tag}_search_peak_gib'], '.2f', ' GiB')}",
                )
            )
        rows.append(("index size", f"{se['index_gb']:.3g} GB = {se['index_gib']:.3g} GiB (paper 21.5 GB)"))
    return rows


def table2(res: dict) -> list[str]:
    """The paper's Table 2 columns: training hours, indexing hours, ms/query, index GB."""
    tr, en, se = res["train"]["runs"], res["encode"], res["search"]

    def row(name, train, index, ms, gb):
        return f"| {name} | {train} | {index} | {ms} | {gb} |"

    lines = [
        "| SeDR on MS MARCO Document | training (h, 4 epochs; 1 epoch) | indexing (h) | ms/query "
        "| index (GB) |",
        "|---|---:|---:|---:|---:|",
        row(
            "paper, Table 2",
            PAPER["train_hours"],
            PAPER["index_hours"],
            PAPER["ms_per_query"],
            PAPER["index_gb"],
        ),
    ]
    for name, train, enc, search in (
        ("this device, fp32 (the paper's precision)", "fp32", "fp32", "fp32"),
        ("this device, README flags (--fp16 training)", "fp16", "fp32", "fp32"),
        ("this device, TF32", "tf32", "tf32", "fp32"),
        ("this device, bf16 / fp16 search", "bf16", "bf16", "fp16"),
    ):
        h = tr[train]["msmarco_epoch_hours"]
        ms = se[f"{search}_ms_per_query_1"]
        lines.append(
            row(
                name,
                f"{README_EPOCHS * h:.1f}; {h:.2f}",
                f"{en[f'msmarco_index_hours_{enc}']:.1f}",
                f"{ms:.2f} (1/call), {se[f'{search}_ms_per_query_1024']:.3f} (1,024/call)",
                f"{se['index_gb'] / (2 if search == 'fp16' else 1):.3g}",
            )
        )
    return lines


def write_json(path: Path, res: dict) -> None:
    """Written after every section and renamed into place, so a crash keeps the sections done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="small sizes, seconds, CPU if no GPU (CI)")
    p.add_argument("--device", default=None, help="default cuda:0 if visible, else cpu")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps taken per precision (20, tiny 3)")
    p.add_argument(
        "--fp16_init_scale",
        type=float,
        default=2.0**10,
        help="fp16's starting GradScaler scale (the trainer's is 2^16 and backs off in its first steps)",
    )
    p.add_argument("--json", default="gpu_check.json", help="where the results go")
    args = p.parse_args(argv)
    sz = SIZES["tiny" if args.tiny else "full"]
    device = torch.device(args.device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    t_all = time.perf_counter()
    out = Path(args.json)
    res = {
        "machine": machine(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "tiny": args.tiny,
        "device": str(device),
        "seconds": {},
        "sections_done": [],
    }
    print(
        f"GPU check: {res['gpu'] or res['machine']}, torch {res['torch']}{' (--tiny)' if args.tiny else ''}"
    )
    for name, run in (
        ("train", lambda: train_section(sz, device, args.steps or sz["steps"], args.fp16_init_scale)),
        ("encode", lambda: encode_section(sz, device)),
        ("search", lambda: search_section(sz, device, res["encode"]["segments_per_doc"])),
    ):
        t0 = time.perf_counter()
        res[name] = run()
        res["seconds"][name] = time.perf_counter() - t0
        res["sections_done"].append(name)
        res["seconds"]["total"] = time.perf_counter() - t_all
        write_json(out, res)
        rows = table({name: res[name]})
        w = max(len(a) for a, _ in rows)
        print(f"[{name} done in {res['seconds'][name]:.0f} s, {out} written]")
        print("\n".join(f"| {a:<{w}} | {b} |" for a, b in rows), flush=True)
    res["imported"] = {m: m in sys.modules for m in ("faiss", "ir_measures", "tensorboard")}
    res["table2"] = table2(res)
    write_json(out, res)
    print(f"\nPaper's Table 2 against this device ({res['seconds']['total']:.0f} s in all):")
    print("\n".join(res["table2"]))
    return res


if __name__ == "__main__":
    main()
