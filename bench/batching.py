"""Encoding throughput: our batching (row groups) vs the original's fixed padding,
and ``SeDR`` vs ``STAR_MaxP``.

One run, one random RoBERTa shared by both classes, MS MARCO-like documents at (512, 4) (about
2.2 segments per document, 30% within one segment), packed in offset order into passes of at most
``--max_bsize`` segments. Schemes, timed interleaved (per pass, min of ``--reps``, one thread):

* ``SeDR fixed``: every row padded to T = 505 positions, as the original did;
* ``SeDR ours``: the batches of ``SeDR.retrieval.encoding.encode_corpus`` (``collate_pass`` with its
  defaults): the rows of a pass are bucketed by real width (``SeDR.data.row_groups.plan_row_groups``)
  and each layer runs bucket by bucket, each on its own columns plus the placeholders, with the CLS broadcast
  across buckets. Dropped columns are masked padding, so the embeddings are the same up to float
  summation order: checked with ``allclose(atol=1e-5)`` against fixed padding, and ``ours`` is
  checked to be what ``encode_corpus`` returns;
* ``STAR_MaxP ours``: the same batches through STAR_MaxP (no CLS broadcast, no segment types);
* ``SeDR compact`` (information, the previous scheme): one width per pass, the pass's longest row.

Printed: segments/s, real tokens/s and processed/real tokens (processed = rows x columns each
layer runs on; real = attended tokens) of each scheme; the ideal bound of any padding scheme,
processed tokens of fixed padding / real tokens; our speed-up over fixed padding and its share of
that bound (target: within 5%). ``--overheads 0,64,256`` also times ``ours`` with other values of
the per-group overhead constant (to choose ``SeDR.data.row_groups.ROW_GROUP_OVERHEAD``).

    python bench/batching.py                 # ~3-5 minutes on 2 loaded CPU cores
    python bench/batching.py --quick         # ~1 minute
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import dtype_arg, interleaved_min, machine, msmarco_like_documents, random_models, set_threads

from SeDR.core.runtime import Precision
from SeDR.data.row_groups import ROW_GROUP_OVERHEAD
from SeDR.data.sampling import document_batches
from SeDR.data.segmentation import SegmentSpec, num_segments
from SeDR.retrieval.encoding import collate_pass, encode_corpus

OVERHEAD_TARGET = 1.05  # SeDR / STAR_MaxP wall time
BOUND_TOLERANCE = 0.05  # speed-up over fixed padding within 5% of the ideal (processed/real token) bound


def processed_tokens(batches) -> int:
    """Rows x columns each layer runs on: ``n_g · (w_g + P)`` summed over the row groups of a pass."""
    total = 0
    for b in batches:
        g = b.row_groups
        if g is None:
            total += b.input_ids.numel()
        else:
            total += sum(n * (w + g.num_placeholders) for n, w in zip(g.sizes, g.widths))
    return total


def real_tokens(batches) -> int:
    return sum(int(b.attention_mask.sum()) for b in batches)


class InMemoryPassages:
    """The two things :func:`encode_corpus` reads of a ``TokenCache``: ``lengths`` and ``[i]``."""

    def __init__(self, docs: list[np.ndarray]):
        self.docs = docs
        self.lengths = np.array([len(d) for d in docs], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.docs[i]


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
    p.add_argument(
        "--overheads", default="", help="comma-separated extra per-group overheads (tokens) to time"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    docs_n = args.docs or (48 if args.quick else 64)
    reps = args.reps or (5 if args.quick else 7)
    hidden = args.hidden or (128 if args.quick else 256)
    layers = args.layers or (2 if args.quick else 4)

    models = random_models(
        ["SeDR", "STAR_MaxP"],
        max_seg_num=args.max_seg_num,
        hidden=hidden,
        layers=layers,
        heads=args.heads,
        device=args.device,
        dtype=dtype_arg(args.dtype),
    )
    for m in models.values():
        m.eval()
    sedr = models["SeDR"]
    spec = SegmentSpec(args.max_seg_length, args.max_seg_num)
    docs = msmarco_like_documents(docs_n, spec, np.random.default_rng(0))
    counts = np.asarray(num_segments(np.array([len(d) for d in docs]), spec))
    plan = list(document_batches(counts, args.max_bsize))

    def batches(**kw):
        return [collate_pass(sedr, [docs[i] for i in b], b, spec, **kw).to(args.device) for b in plan]

    fixed = batches(compact=False, row_groups=False)
    ours = batches()  # encode_corpus's defaults
    schemes_rows = {
        "SeDR fixed": ("SeDR", fixed),
        "SeDR ours": ("SeDR", ours),
        "STAR_MaxP ours": ("STAR_MaxP", ours),
        "SeDR compact": ("SeDR", batches(row_groups=False)),
    }
    for o in (int(x) for x in args.overheads.split(",") if x.strip()):
        schemes_rows[f"SeDR ours@{o}"] = ("SeDR", batches(group_overhead=o))

    def pass_fn(model, b):
        def run():
            with torch.inference_mode():
                return model.encode_segments(b)

        return run

    def encoder(model_name, rows):
        return [pass_fn(models[model_name], b) for b in rows]

    # Identical embeddings: fixed padding vs ours, same model, same rows in the same order; and ours
    # is what encode_corpus computes.
    e_fixed = torch.cat([f() for f in encoder("SeDR", fixed)]).float()
    e_ours = torch.cat([f() for f in encoder("SeDR", ours)]).float()
    precision = Precision(torch.device(args.device), None, None)  # the weights already have --dtype
    e_corpus = np.concatenate(
        [
            v
            for v, _ in encode_corpus(
                sedr,
                InMemoryPassages(docs),
                spec,
                args.max_bsize,
                torch.device(args.device),
                precision,
                show_progress=False,
            )
        ]
    )
    atol = 1e-5 if args.dtype == "fp32" else 2e-2
    identical = bool(torch.allclose(e_fixed, e_ours, atol=atol, rtol=0))
    max_diff = float((e_fixed - e_ours).abs().max())
    same_as_corpus = bool(np.array_equal(e_ours.cpu().numpy(), e_corpus))

    n_seg, real = int(counts.sum()), real_tokens(fixed)
    groups = [len(b.row_groups.sizes) if b.row_groups is not None else 1 for b in ours]
    print(f"machine: {machine()}")
    print(
        f"{docs_n} documents, {n_seg} segments ({n_seg / docs_n:.2f}/doc, "
        f"{np.mean(counts == 1):.0%} within one segment), {len(plan)} passes of <= {args.max_bsize} segments "
        f"({np.mean(groups):.1f} row groups per pass, overhead {ROW_GROUP_OVERHEAD} tokens/group), "
        f"(Lraw, M) = ({args.max_seg_length}, {args.max_seg_num}), T = {spec.row_len}, hidden {hidden}, "
        f"{layers} layers, {args.device} {args.dtype}, per pass: min of {reps} interleaved repetitions"
    )
    times = interleaved_min({n: encoder(*mr) for n, mr in schemes_rows.items()}, reps, args.device)
    for name, (_, rows) in schemes_rows.items():
        t, proc = times[name], processed_tokens(rows)
        print(
            f"  {name:15s} {t:7.2f} s  {n_seg / t:8.1f} segments/s  {real / t:9.0f} real tokens/s  "
            f"processed/real tokens {proc / real:.3f}"
        )

    t0 = time.perf_counter()
    batches()
    t_plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches(compact=False, row_groups=False)
    t_plan -= time.perf_counter() - t0
    overhead = times["SeDR ours"] / times["STAR_MaxP ours"]
    speedup = times["SeDR fixed"] / times["SeDR ours"]
    bound_ideal = processed_tokens(fixed) / real
    bound_ours = processed_tokens(fixed) / processed_tokens(ours)
    share = speedup / bound_ideal
    print(
        f"RATIO encoding time SeDR / STAR_MaxP (same rows)            = {overhead:.3f}  "
        f"(target <= {OVERHEAD_TARGET}: {'met' if overhead <= OVERHEAD_TARGET else 'NOT met'})"
    )
    print(f"RATIO processed / real tokens, fixed padding (ideal bound)  = {bound_ideal:.3f}")
    print(f"RATIO processed tokens fixed / ours (bound of our plan)     = {bound_ours:.3f}")
    print(
        f"RATIO speed-up ours over fixed padding                      = {speedup:.3f}  "
        f"= {share:.3f} of the ideal bound "
        f"({'within' if share >= 1 - BOUND_TOLERANCE else 'NOT within'} 5%), "
        f"{speedup / bound_ours:.3f} of our plan's"
    )
    s_compact = times["SeDR fixed"] / times["SeDR compact"]
    print(f"RATIO speed-up one width per pass (previous scheme) over fixed = {s_compact:.3f}")
    for name in (n for n in times if n.startswith("SeDR ours@")):
        s = times["SeDR fixed"] / times[name]
        print(
            f"RATIO speed-up {name} over fixed = {s:.3f} = {s / bound_ideal:.3f} of the ideal bound "
            f"(processed/real {processed_tokens(schemes_rows[name][1]) / real:.3f})"
        )
    print(
        f"collation + row-group planning over fixed padding's collation: "
        f"{1e3 * t_plan / len(plan):+.2f} ms/pass "
        f"({t_plan / times['SeDR ours']:+.1%} of our encoding time)"
    )
    print(
        f"embeddings ours vs fixed padding: allclose(atol={atol:g}) = {identical}, "
        f"max |diff| = {max_diff:.2e}; "
        f"ours == encode_corpus: {same_as_corpus}"
    )
    if not identical or not same_as_corpus:
        raise SystemExit("embeddings differ between fixed padding, our batching and encode_corpus")
    return {"overhead": overhead, "speedup": speedup, "bound_ideal": bound_ideal, "share_of_bound": share}


if __name__ == "__main__":
    main()
