"""Encoding cost of the Segment-Interaction Transformer: ``SeDR`` vs ``STAR_MaxP`` on the same segment rows.

Both models share one random RoBERTa (default hidden 256, 4 layers, 4 heads) and encode the same
MS MARCO-like documents (about 2.2 segments per document), packed into the same forward passes
as ``SeDR.encoding.encode_corpus`` builds them (``collate_pass``: row groups included), so only the
CLS broadcast and the segment-type embeddings differ. Repetitions are interleaved per pass
(min of ``--reps``) so that machine noise hits both alike; the script prints the wall-time ratio
SeDR / STAR_MaxP (target <= 1.05). ``bench/batching.py`` prints the same ratio next to the
batching figures; this script is the stand-alone version with its own sizes.

    python bench/encode.py                       # ~1-2 minutes on 2 CPU cores
    python bench/encode.py --docs 16 --reps 2    # quicker
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import interleaved_min, machine, msmarco_like_documents, random_models, set_threads

from SeDR.batching import document_batches
from SeDR.data import SegmentSpec, num_segments
from SeDR.encoding import collate_pass

OVERHEAD_TARGET = 1.05  # SeDR / STAR_MaxP wall time


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=64, help="documents encoded per repetition")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per model (interleaved)")
    p.add_argument("--max_seg_length", type=int, default=512, help="Lraw")
    p.add_argument("--max_seg_num", type=int, default=4, help="M")
    p.add_argument("--max_bsize", type=int, default=16, help="segments per forward pass")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    set_threads(args.threads)

    models = random_models(["SeDR", "STAR_MaxP"], max_seg_num=args.max_seg_num, hidden=args.hidden,
                           layers=args.layers, heads=args.heads, device=args.device)
    spec = SegmentSpec(args.max_seg_length, args.max_seg_num)
    docs = msmarco_like_documents(args.docs, spec, np.random.default_rng(0))
    counts = np.asarray(num_segments(np.array([len(d) for d in docs]), spec))
    batches = [collate_pass(models["SeDR"], [docs[i] for i in b], b, spec).to(args.device)
               for b in document_batches(counts, args.max_bsize)]
    n_seg = int(counts.sum())
    print(f"machine: {machine()}")
    print(f"{args.docs} documents, {n_seg} segments ({n_seg / args.docs:.2f}/doc), {len(batches)} passes, "
          f"T={spec.row_len}, hidden {args.hidden}, {args.layers} layers, {args.device}")

    def steps(model):
        model.eval()

        def step(b):
            def run():
                with torch.inference_mode():
                    return model.encode_segments(b)
            return run
        return [step(b) for b in batches]

    times = interleaved_min({name: steps(m) for name, m in models.items()}, args.reps, args.device)
    for name, t in times.items():
        print(f"{name:10s} {t:7.2f} s  {n_seg / t:8.1f} segments/s")
    ratio = times["SeDR"] / times["STAR_MaxP"]
    print(f"RATIO encoding time SeDR / STAR_MaxP = {ratio:.3f} (target <= {OVERHEAD_TARGET}: "
          f"{'met' if ratio <= OVERHEAD_TARGET else 'NOT met'})")
    return ratio


if __name__ == "__main__":
    main()
