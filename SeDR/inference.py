"""Encode every segment, search, rank documents by their best segment, evaluate (SPEC §6-§7).

``python SeDR/inference.py --model_class SeDR --max_query_length 32 --max_seg_length 512
--max_seg_num 4 --model_path ./data/models/epoch-4-512-4-17-SeDR --faiss_gpus 0``

Writes into ``./data/evaluate/{basename(model_path)}-inf{max_seg_length}-{max_seg_num}``:
``passages.memmap`` + ``passages-id.memmap`` (reused when complete), run files with the
original ids, ``metrics.json``; prints a results table. ``--gen_hardneg`` also writes the hard
negatives of every training query (SPEC §6). Under ``torchrun`` (or with
``--num_shards/--shard_id``) each process encodes one contiguous document range.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from SeDR.args import build_inference_parser, validate_inference_args
from SeDR.constants import EVAL_DOCS_KEPT
from SeDR.errors import exit_on_input_error
from SeDR.tokenizer_record import check_tokenizer_record

logger = logging.getLogger(__name__)

def default_output_dir(model_path: str, max_seg_length: int, max_seg_num: int) -> Path:
    name = os.path.basename(os.path.normpath(model_path))
    return Path("./data/evaluate") / f"{name}-inf{max_seg_length}-{max_seg_num}"


def shard_range(num_docs: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """Contiguous, balanced document range of one shard."""
    return num_docs * shard_id // num_shards, num_docs * (shard_id + 1) // num_shards


def shard_prefix(shard_id: int, num_shards: int) -> str:
    return f"passages-shard{shard_id}-of{num_shards}"


def encode_documents(model, passages, spec, args, device, precision, out_dir: Path, info: dict,
                     shard_id: int = 0, num_shards: int = 1) -> bool:
    """Encode this process's documents; returns True when the full ``passages`` files are complete."""
    from SeDR import retrieval
    from SeDR.encoding import encode_corpus

    if retrieval.embeddings_complete(out_dir, expect_info=info):
        logger.info("reusing the complete segment embeddings in %s", out_dir)
        return True
    prefix = "passages" if num_shards == 1 else shard_prefix(shard_id, num_shards)
    start, end = shard_range(len(passages), shard_id, num_shards)
    if num_shards > 1 and retrieval.embeddings_complete(out_dir, prefix, expect_info=info):
        logger.info("shard %d/%d already encoded", shard_id, num_shards)
    else:
        t0 = time.time()
        dim = model.embedding_dim
        with retrieval.SegmentEmbeddingWriter(out_dir, dim, prefix, info=info) as writer:
            for vecs, doc_ids in encode_corpus(model, passages, spec, args.max_bsize, device, precision, start, end):
                writer.append(vecs, doc_ids)
        logger.info("encoded documents %d..%d into %s/%s in %.1fs", start, end - 1, out_dir, prefix, time.time() - t0)
    if num_shards == 1:
        return True
    prefixes = [shard_prefix(i, num_shards) for i in range(num_shards)]
    if all(retrieval.embeddings_complete(out_dir, p, expect_info=info) for p in prefixes):
        retrieval.concat_embedding_shards(out_dir, prefixes)
        for p in prefixes:
            for f in retrieval.embedding_paths(out_dir, p):
                f.unlink(missing_ok=True)
        logger.info("merged %d shards into %s/passages.memmap", num_shards, out_dir)
        return True
    return False


def backup_existing(path: Path) -> None:
    """Never overwrite earlier results silently: keep the old file beside the new one."""
    if path.exists():
        backup = path.with_name(path.name + time.strftime(".%Y%m%d-%H%M%S.bak"))
        shutil.copy2(path, backup)
        logger.warning("%s exists; the previous version is kept as %s", path, backup)


def search_and_evaluate(model, out_dir: Path, preprocess_dir: Path, args, device, precision):
    """Index the vectors in ``out_dir``, rank every split's queries, evaluate (SPEC §7.3-§7.4); hard negatives (§6).

    ``args`` needs ``faiss_gpus``, ``faiss_fp16``, ``max_query_length``, ``eval_batch_size`` and, for
    ``--gen_hardneg``, ``gen_hardneg``/``hardneg_path`` (absent = no hard negatives). Shared with
    ``SeDR_Longformer/inference.py``.
    """
    from SeDR import data, retrieval
    from SeDR.encoding import encode_queries
    from SeDR.evaluation import evaluate_rankings, format_results_table

    emb = retrieval.load_segment_embeddings(out_dir)
    index = retrieval.build_index(emb.vectors, args.faiss_gpus, fp16=args.faiss_fp16,
                                  search_shards=getattr(args, "search_shards", 1))
    rankings = {}
    for split, k_docs in EVAL_DOCS_KEPT.items():
        if not (preprocess_dir / f"{split}-query_meta").exists():
            logger.warning("no %s queries in %s; skipping that evaluation", split, preprocess_dir)
            continue
        qcache = data.queries(preprocess_dir, split)
        qvecs = encode_queries(model, qcache, args.max_query_length, args.eval_batch_size, device, precision)
        rankings[split] = retrieval.retrieve_documents(index, emb.doc_ids, qvecs, range(len(qcache)), k_docs)
    evaluation = evaluate_rankings(rankings, preprocess_dir, out_dir, run_tag=out_dir.name)
    print(format_results_table(evaluation.metrics))

    if getattr(args, "gen_hardneg", False):
        train_q = data.queries(preprocess_dir, "train")
        rel = data.load_rel(preprocess_dir / "train-qrel.tsv")
        qvecs = encode_queries(model, train_q, args.max_query_length, args.eval_batch_size, device, precision)
        hard = retrieval.hard_negatives_for_queries(index, emb.doc_ids, qvecs, range(len(train_q)), rel)
        short = sum(1 for v in hard.values() if len(v) < 300)
        path = Path(args.hardneg_path)
        backup_existing(path)
        retrieval.write_hard_negatives(path, hard)
        logger.info("wrote hard negatives of %d training queries to %s (%d with fewer than 300)",
                    len(hard), path, short)
    return evaluation


@exit_on_input_error
def main(argv=None):
    args = build_inference_parser().parse_args(argv)
    validate_inference_args(args)
    from SeDR.runtime import env_rank, resolve_device, resolve_precision, setup_logging

    rank, local_rank, world_size = env_rank()
    setup_logging(rank)
    from SeDR import data
    from SeDR.data import SegmentSpec
    from SeDR.modeling import load_model

    device = resolve_device(args.no_cuda, local_rank)
    precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=False)
    model = load_model(args.model_path, model_class=args.model_class, max_seg_num=args.max_seg_num)
    check_tokenizer_record(args.preprocess_dir, model, args.model_path)
    model.to(device).eval()
    spec = SegmentSpec(args.max_seg_length, args.max_seg_num, extra_reserve=model.extra_content_reserve)
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.model_path, args.max_seg_length,
                                                                                args.max_seg_num)
    preprocess_dir = Path(args.preprocess_dir)
    passages = data.passages(preprocess_dir)
    info = {"model_path": str(Path(args.model_path).resolve()), "model_class": model.model_class_name,
            "max_seg_length": args.max_seg_length, "max_seg_num": args.max_seg_num, "num_docs": len(passages)}
    logger.info("model %s (%s), %d documents, L=%d M=%d -> %s", args.model_path, model.model_class_name,
                len(passages), spec.content_len, spec.max_seg_num, out_dir)

    shard_id, num_shards = (rank, world_size) if world_size > 1 else (args.shard_id, args.num_shards)
    complete = encode_documents(model, passages, spec, args, device, precision, out_dir, info, shard_id, num_shards)
    if world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        dist.barrier()
        if rank == 0 and not complete:
            complete = encode_documents(model, passages, spec, args, device, precision, out_dir, info,
                                        shard_id, num_shards)
        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return None
    if not complete:
        logger.info("shard %d of %d done; run the other shards, then any shard again to merge and evaluate",
                    shard_id, num_shards)
        return None

    return search_and_evaluate(model, out_dir, preprocess_dir, args, device, precision)


if __name__ == "__main__":
    main()
