"""Encoding cost of the Segment-Interaction Transformer: ``SeDR`` vs ``STAR_MaxP`` on the same segment rows.

For each backbone family of ``--backbones`` (default RoBERTa and ModernBERT), both models share
one random encoder of that family (default hidden 256, 4 layers, 4 heads; ModernBERT with its
own 128-token sliding window, layers full/sliding/sliding/full) and encode the same MS MARCO-like
documents (about 2.2 segments per document), packed into the same forward passes as
``SeDR.retrieval.encoding.encode_corpus`` builds them (``collate_pass``: row groups included), so only the
CLS broadcast and the segment-type embeddings differ. Repetitions are interleaved per pass
(min of ``--reps``) so that machine noise hits both alike; the script prints the wall-time ratio
SeDR / STAR_MaxP per family (targets: RoBERTa <= 1.05, other families <= 1.10).
``bench/batching.py`` prints the RoBERTa ratio next to the batching figures.

    python bench/encode.py                       # ~2-4 minutes on 2 CPU cores
    python bench/encode.py --docs 16 --reps 2    # quicker
    python bench/encode.py --backbones deberta-v2 mpnet
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
from common import VOCAB, interleaved_min, machine, msmarco_like_documents, random_models, set_threads

from SeDR.data.sampling import document_batches
from SeDR.data.segmentation import SegmentSpec, num_segments
from SeDR.modeling import build_model
from SeDR.retrieval.encoding import collate_pass
from SeDR.testing import families

OVERHEAD_TARGETS = {"roberta": 1.05}  # SeDR / STAR_MaxP wall time; other families:
OTHER_TARGET = 1.10
CLASSES = ["SeDR", "STAR_MaxP"]


def family_models(family: str, args) -> dict[str, torch.nn.Module]:
    """SeDR and STAR_MaxP sharing one random encoder of ``family`` (RoBERTa: the STAR layout)."""
    size = {"hidden": args.hidden, "layers": args.layers, "heads": args.heads}
    if family == "roberta":
        return random_models(CLASSES, max_seg_num=args.max_seg_num, device=args.device, **size)
    with tempfile.TemporaryDirectory() as tmp:
        families.make_backbone_folder(
            tmp,
            family,
            vocab_size=VOCAB,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            intermediate_size=4 * args.hidden,
            **({"local_attention": 128} if family == "modernbert" else {}),
        )
        models = {c: build_model(c, tmp, max_seg_num=args.max_seg_num) for c in CLASSES}
    models["STAR_MaxP"].load_state_dict(models["SeDR"].state_dict())
    return {c: m.to(args.device) for c, m in models.items()}


def main(argv=None) -> dict[str, float]:
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
    p.add_argument(
        "--backbones",
        nargs="+",
        default=["roberta", "modernbert"],
        choices=families.BACKBONE_FAMILIES,
        help="encoder families to time, each with its own ratio",
    )
    args = p.parse_args(argv)
    set_threads(args.threads)

    spec = SegmentSpec(args.max_seg_length, args.max_seg_num)
    docs = msmarco_like_documents(args.docs, spec, np.random.default_rng(0))
    counts = np.asarray(num_segments(np.array([len(d) for d in docs]), spec))
    n_seg = int(counts.sum())
    print(f"machine: {machine()}")
    print(
        f"{args.docs} documents, {n_seg} segments ({n_seg / args.docs:.2f}/doc), T={spec.row_len}, "
        f"hidden {args.hidden}, {args.layers} layers, {args.device}"
    )
    ratios = {}
    for family in args.backbones:
        models = family_models(family, args)
        batches = [
            collate_pass(models["SeDR"], [docs[i] for i in b], b, spec).to(args.device)
            for b in document_batches(counts, args.max_bsize)
        ]

        def steps(model, batches=batches):
            model.eval()

            def step(b):
                def run():
                    with torch.inference_mode():
                        return model.encode_segments(b)

                return run

            return [step(b) for b in batches]

        times = interleaved_min({name: steps(m) for name, m in models.items()}, args.reps, args.device)
        for name, t in times.items():
            print(f"{family:11s} {name:10s} {t:7.2f} s  {n_seg / t:8.1f} segments/s ({len(batches)} passes)")
        ratios[family] = times["SeDR"] / times["STAR_MaxP"]
    for family, ratio in ratios.items():
        target = OVERHEAD_TARGETS.get(family, OTHER_TARGET)
        print(
            f"RATIO encoding time SeDR / STAR_MaxP on {family} = {ratio:.3f} (target <= {target}: "
            f"{'met' if ratio <= target else 'NOT met'})"
        )
    return ratios


if __name__ == "__main__":
    main()
