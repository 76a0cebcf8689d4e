"""Encoding throughput: ``SeDR`` vs ``STAR_MaxP``, and our batching vs the original's fixed padding.

One run, one random RoBERTa shared by both classes, MS MARCO-like documents at (512, 4) (about
2.2 segments per document, 30% within one segment), packed in offset order into passes of at most
``--max_bsize`` segments (SPEC §7.2). Schemes, timed interleaved (per pass, min of ``--reps``, one thread):

* ``SeDR fixed``: every row padded to T = 505 positions, as the original did;
* ``SeDR ours``: ``collate_documents(compact=True)``: the all-padding columns between the pass's
  longest content and the placeholder slots are dropped (masked positions, so the embeddings are
  the same up to float summation order: checked with ``allclose(atol=1e-5)``);
* ``STAR_MaxP ours``: the same rows through STAR_MaxP (no CLS broadcast, no segment types);
* ``SeDR split`` (information: a possible refinement, not what ``SeDR.encoding`` does): each pass
  of ``ours`` is run as sub-passes, its multi-segment documents together and its one-segment
  documents by length in groups of ``--split_rows``, each compacted; the same documents per pass
  (offset order kept), only rows of one document interact, so the embeddings are again the same.

Printed: segments/s and real tokens/s of each, the ratios, and two bounds on the batching gain:
processed tokens (rows x row width) of fixed over ours, which bounds what our offset-order
batching can gain, and processed over real (attended) tokens, the ideal for any padding scheme.

    python bench/batching.py                 # ~3-5 minutes on 2 loaded CPU cores
    python bench/batching.py --quick         # ~1 minute
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import dtype_arg, interleaved_min, machine, msmarco_like_documents, random_models, set_threads

from SeDR.data import SegmentSpec, collate_documents, document_batches, num_segments

OVERHEAD_TARGET = 1.05  # SeDR / STAR_MaxP wall time (issue 7)
BOUND_TOLERANCE = 0.05  # measured batching speed-up within 5% of the processed-token bound


def processed_tokens(batches) -> int:
    return sum(b.input_ids.numel() for b in batches)


def real_tokens(batches) -> int:
    return sum(int(b.attention_mask.sum()) for b in batches)


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller model and corpus (run_all --quick)")
    p.add_argument("--docs", type=int, default=None, help="documents per repetition (default 64, quick 48)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per scheme (default 7, quick 5)")
    p.add_argument("--max_seg_length", type=int, default=512)
    p.add_argument("--max_seg_num", type=int, default=4)
    p.add_argument("--max_bsize", type=int, default=16, help="segments per forward pass")
    p.add_argument("--hidden", type=int, default=None, help="default 256, quick 128")
    p.add_argument("--layers", type=int, default=None, help="default 4, quick 2")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--split_rows", type=int, default=4, help="rows per one-segment sub-pass of 'SeDR split'")
    p.add_argument("--no_split", action="store_true", help="skip the 'SeDR split' information scheme")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    docs_n = args.docs or (48 if args.quick else 64)
    reps = args.reps or (5 if args.quick else 7)
    hidden = args.hidden or (128 if args.quick else 256)
    layers = args.layers or (2 if args.quick else 4)

    models = random_models(["SeDR", "STAR_MaxP"], max_seg_num=args.max_seg_num, hidden=hidden, layers=layers,
                           heads=args.heads, device=args.device, dtype=dtype_arg(args.dtype))
    for m in models.values():
        m.eval()
    spec = SegmentSpec(args.max_seg_length, args.max_seg_num)
    docs = msmarco_like_documents(docs_n, spec, np.random.default_rng(0))
    counts = np.asarray(num_segments(np.array([len(d) for d in docs]), spec))
    plan = list(document_batches(counts, args.max_bsize))

    def batches(compact: bool, groups):
        return [collate_documents([docs[i] for i in b], b, spec, compact=compact).to(args.device) for b in groups]

    fixed, ours = batches(False, plan), batches(True, plan)
    schemes_rows = {"SeDR fixed": ("SeDR", fixed), "SeDR ours": ("SeDR", ours), "STAR_MaxP ours": ("STAR_MaxP", ours)}
    if not args.no_split:
        split = []
        for b in plan:
            multi = [i for i in b if counts[i] > 1]
            single = sorted((i for i in b if counts[i] == 1), key=lambda i: len(docs[i]))
            split += ([multi] if multi else []) + [single[k: k + args.split_rows]
                                                    for k in range(0, len(single), args.split_rows)]
        schemes_rows["SeDR split"] = ("SeDR", batches(True, split))

    def pass_fn(model, b):
        def run():
            with torch.inference_mode():
                return model.encode_segments(b)
        return run

    def encoder(model_name, rows):
        return [pass_fn(models[model_name], b) for b in rows]

    # Identical embeddings: fixed padding vs ours, same model, same rows in the same order.
    e_fixed = torch.cat([f() for f in encoder("SeDR", fixed)]).float()
    e_ours = torch.cat([f() for f in encoder("SeDR", ours)]).float()
    atol = 1e-5 if args.dtype == "fp32" else 2e-2
    identical = bool(torch.allclose(e_fixed, e_ours, atol=atol, rtol=0))
    max_diff = float((e_fixed - e_ours).abs().max())
    if "SeDR split" in schemes_rows:  # same vectors per document, in the sub-passes' document order
        rows = schemes_rows["SeDR split"][1]
        e_split = torch.cat([f() for f in encoder("SeDR", rows)]).float()
        order = torch.cat([b.doc_offsets for b in rows]).cpu().numpy()
        start = np.concatenate([[0], np.cumsum(counts)])
        perm = np.concatenate([np.arange(start[d], start[d + 1]) for d in order])
        e_split = e_split[np.argsort(perm)]
        identical &= bool(torch.allclose(e_fixed, e_split, atol=atol, rtol=0))
        max_diff = max(max_diff, float((e_fixed - e_split).abs().max()))

    n_seg, real = int(counts.sum()), real_tokens(fixed)
    print(f"machine: {machine()}")
    print(f"{docs_n} documents, {n_seg} segments ({n_seg / docs_n:.2f}/doc, "
          f"{np.mean(counts == 1):.0%} within one segment), {len(plan)} passes of <= {args.max_bsize} segments, "
          f"(Lraw, M) = ({args.max_seg_length}, {args.max_seg_num}), T = {spec.row_len}, hidden {hidden}, "
          f"{layers} layers, {args.device} {args.dtype}, per pass: min of {reps} interleaved repetitions")
    times = interleaved_min({n: encoder(*mr) for n, mr in schemes_rows.items()}, reps, args.device)
    for name, (_, rows) in schemes_rows.items():
        t, proc = times[name], processed_tokens(rows)
        print(f"  {name:15s} {t:7.2f} s  {n_seg / t:8.1f} segments/s  {real / t:9.0f} real tokens/s  "
              f"processed/real tokens {proc / real:.3f}")

    overhead = times["SeDR ours"] / times["STAR_MaxP ours"]
    speedup = times["SeDR fixed"] / times["SeDR ours"]
    bound_ours = processed_tokens(fixed) / processed_tokens(ours)
    bound_ideal = processed_tokens(fixed) / real
    print(f"RATIO encoding time SeDR / STAR_MaxP (same rows)            = {overhead:.3f}  "
          f"(target <= {OVERHEAD_TARGET}: {'met' if overhead <= OVERHEAD_TARGET else 'NOT met'})")
    print(f"RATIO processed tokens fixed / ours (bound of our batching)  = {bound_ours:.3f}")
    print(f"RATIO processed / real tokens, fixed padding (ideal bound)  = {bound_ideal:.3f}")
    print(f"RATIO speed-up ours over fixed padding                      = {speedup:.3f}  "
          f"= {speedup / bound_ours:.3f} of our bound "
          f"({'within' if abs(speedup / bound_ours - 1) <= BOUND_TOLERANCE else 'NOT within'} 5%), "
          f"{speedup / bound_ideal:.3f} of the ideal bound")
    # Best any dense (rows x width) batching can do while a document's rows share one forward pass:
    # every document at its own longest piece (a multi-segment document always has a full one).
    L, P = spec.content_len, spec.num_placeholders
    per_doc = sum(int(s) * (min(len(d), L) + 2 + P) for d, s in zip(docs, counts))
    print(f"RATIO processed tokens fixed / per-document width (dense limit) = {processed_tokens(fixed) / per_doc:.3f}")
    if "SeDR split" in times:
        s_split = times["SeDR fixed"] / times["SeDR split"]
        b_split = processed_tokens(fixed) / processed_tokens(schemes_rows["SeDR split"][1])
        print(f"RATIO speed-up split sub-passes (information) over fixed       = {s_split:.3f}  "
              f"= {s_split / b_split:.3f} of its processed-token bound {b_split:.3f}")
    print(f"embeddings ours (and split) vs fixed padding: allclose(atol={atol:g}) = {identical}, max |diff| = {max_diff:.2e}")
    if not identical:
        raise SystemExit("embeddings differ between fixed padding and our batching")
    return {"overhead": overhead, "speedup": speedup, "bound_ours": bound_ours, "bound_ideal": bound_ideal}


if __name__ == "__main__":
    main()
