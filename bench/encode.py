"""Encoding cost of the Segment-Interaction Transformer: ``SeDR`` vs ``STAR_MaxP`` on the same segment rows.

Both models share one random RoBERTa (default hidden 256, 4 layers, 4 heads) and encode the same
synthetic documents, packed into the same forward passes, so only the CLS broadcast and the
segment-type embeddings differ. Repetitions are interleaved (SeDR, STAR, SeDR, ...) so that
machine noise hits both alike; the script prints the wall-time ratio SeDR / STAR_MaxP
(target <= 1.05). Document lengths follow an MS MARCO-like mix (about 2.2 segments per document).

    python bench/encode.py                       # ~1-2 minutes on 2 CPU cores
    python bench/encode.py --docs 16 --reps 2    # quicker
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from SeDR import synthetic
from SeDR.data import SegmentSpec, collate_documents, document_batches, num_segments
from SeDR.modeling import build_model

# Share of documents with 1, 2, 3, 4 segments at (512, 4): mean ≈ 2.15, near MS MARCO's ≈ 2.2.
SEGMENT_MIX = (0.45, 0.20, 0.10, 0.25)


def synthetic_documents(n: int, spec: SegmentSpec, vocab: int, rng: np.random.Generator) -> list[np.ndarray]:
    L, g = spec.content_len, spec.ignore_len
    docs = []
    for s in rng.choice(np.arange(1, spec.max_seg_num + 1), size=n, p=SEGMENT_MIX[: spec.max_seg_num]):
        length = int((s - 1) * L + rng.integers(g if s > 1 else 20, L + 1))
        docs.append(rng.integers(5, vocab, size=length))
    return docs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=64, help="documents encoded per repetition")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per model (interleaved)")
    p.add_argument("--max_seg_length", type=int, default=512, help="Lraw")
    p.add_argument("--max_seg_num", type=int, default=4, help="M")
    p.add_argument("--max_bsize", type=int, default=16, help="segments per forward pass")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    vocab = 1000
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.make_star_checkpoint(tmp, vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                                       num_attention_heads=args.heads, intermediate_size=4 * args.hidden)
        sedr = build_model("SeDR", tmp, max_seg_num=args.max_seg_num).eval()
        star = build_model("STAR_MaxP", tmp, max_seg_num=args.max_seg_num).eval()
    star.load_state_dict(sedr.state_dict())

    spec = SegmentSpec(args.max_seg_length, args.max_seg_num)
    docs = synthetic_documents(args.docs, spec, vocab, np.random.default_rng(0))
    counts = np.asarray(num_segments(np.array([len(d) for d in docs]), spec))
    batches = [collate_documents([docs[i] for i in b], b, spec)
               for b in document_batches(counts, args.max_bsize)]
    n_seg = int(counts.sum())
    print(f"{args.docs} documents, {n_seg} segments ({n_seg / args.docs:.2f}/doc), {len(batches)} passes, "
          f"T={spec.row_len}, hidden {args.hidden}, {args.layers} layers, {torch.get_num_threads()} threads")

    def run(model) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                model.encode_segments(b)
        return time.perf_counter() - t0

    run(sedr)  # warm-up (allocator, kernels)
    run(star)
    times = {"SeDR": [], "STAR_MaxP": []}
    for rep in range(args.reps):
        order = [("SeDR", sedr), ("STAR_MaxP", star)] if rep % 2 == 0 else [("STAR_MaxP", star), ("SeDR", sedr)]
        for name, model in order:
            times[name].append(run(model))
    for name, ts in times.items():
        print(f"{name:10s} total {sum(ts):7.2f} s   per repetition {', '.join(f'{t:.2f}' for t in ts)}")
    ratio = sum(times["SeDR"]) / sum(times["STAR_MaxP"])
    print(f"wall-time ratio SeDR / STAR_MaxP = {ratio:.3f} (target <= 1.05)")
    return ratio


if __name__ == "__main__":
    main()
