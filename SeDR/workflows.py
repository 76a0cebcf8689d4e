"""The library side of every script: parse the flags, build, run, report.

``SeDR/train.py``, ``SeDR/inference.py``, ``SeDR/adore_train.py`` and the SeDR-Longformer scripts
are one call each into this module, so the demo and the tests run exactly what a user runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist

from SeDR import args as flags
from SeDR import data, embeddings, hard_negatives, indexes
from SeDR.adore import AdoreRun, claim_save_dir
from SeDR.constants import EVAL_DOCS_KEPT, HARDNEG_LIST_LENGTH
from SeDR.data import SegmentSpec
from SeDR.encoding import corpus_segment_counts, encode_corpus, encode_queries
from SeDR.errors import MissingInputError, OutputError, SeDRInputError
from SeDR.evaluation import Evaluation, evaluate_rankings, format_results_table
from SeDR.modeling import build_model, get_model_class, load_model
from SeDR.modeling.checkpoint import model_fingerprint
from SeDR.modeling.longformer import MODEL_CLASS_NAME as LONGFORMER_CLASS
from SeDR.modeling.longformer import build_longformer, load_longformer
from SeDR.outputs import RunLock, backup_name, ensure_writable, fingerprint, move_to_backup
from SeDR.ranking import retrieve_documents
from SeDR.runtime import env_rank, resolve_device, resolve_precision, seed_everything, setup_logging
from SeDR.tokenizer_record import check_tokenizer_record
from SeDR.trainer import (
    LongformerTrainer,
    Trainer,
    claim_output_dir,
    load_train_data,
    run_checkpoint_name,
    warn_if_positives_in_hard_negatives,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- training


def _start_distributed(device: torch.device, world_size: int) -> None:
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)


def _stop_distributed(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


def _train(args, build, trainer_cls, spec_of) -> Trainer:
    rank, local_rank, world_size = env_rank()
    setup_logging(rank)
    if not Path(args.hardneg_path).is_file():
        raise MissingInputError(args.hardneg_path, "generate it with `python SeDR/inference.py ... --gen_hardneg`")
    # Recorded in training_args.json beside the flags, and fixed on --resume.
    args.preprocess_fingerprint = data.preprocess_fingerprint(args.preprocess_dir)
    args.hardneg_fingerprint = fingerprint([Path(args.hardneg_path)])
    args.world_size = world_size
    lock = claim_output_dir(args, lambda e: run_checkpoint_name(args, e)) if rank == 0 else None
    try:
        seed_everything(args.seed)  # before the model exists, as the original
        device = resolve_device(args.no_cuda, local_rank)
        _start_distributed(device, world_size)
        precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=True)
        model = build()
        train_data = load_train_data(args.preprocess_dir, args.hardneg_path, spec_of(model))
        warn_if_positives_in_hard_negatives(train_data)
        trainer = trainer_cls(args, model.to(device), train_data, device, precision, rank=rank,
                              world_size=world_size)
        if rank == 0:
            trainer.check_space()
        trainer.train()
        _stop_distributed(world_size)
    finally:
        if lock is not None:
            lock.release()
    return trainer


def run_training(argv=None) -> Trainer:
    """``SeDR/train.py``: returns the :class:`Trainer` (``.saved`` lists the checkpoints written)."""
    args = flags.build_train_parser().parse_args(argv)
    flags.validate_train_args(args)
    get_model_class(args.model_class)  # unknown names fail here, with the valid ones listed

    def build():
        model = build_model(args.model_class, args.init_path, max_seg_num=args.max_seg_num,
                            cache_size=args.cache_size, gradient_checkpointing=args.use_gradient_checkpointing)
        check_tokenizer_record(args.preprocess_dir, model, args.init_path)
        return model

    return _train(args, build, Trainer,
                  lambda m: SegmentSpec(args.max_seg_length, args.max_seg_num, extra_reserve=m.extra_content_reserve))


def run_longformer_training(argv=None) -> Trainer:
    """``SeDR_Longformer/train.py``: one ``max_doc_length`` row per document, so ``--max_bsize`` counts documents."""
    args = flags.build_longformer_train_parser().parse_args(argv)
    args.model_class = LONGFORMER_CLASS  # read by the Trainer's log and recorded in training_args.json
    flags.validate_train_args(args)

    def build():
        model = build_longformer(args.init_path, max_seg_num=args.max_seg_num, cache_size=args.cache_size,
                                 gradient_checkpointing=args.use_gradient_checkpointing)
        check_doc_length(model, args.max_doc_length, args.init_path)
        check_tokenizer_record(args.preprocess_dir, model, args.init_path)
        return model

    return _train(args, build, LongformerTrainer, lambda m: SegmentSpec(args.max_doc_length, 1))


def check_doc_length(model, max_doc_length: int, path) -> None:
    if max_doc_length > model.max_doc_length:
        raise SeDRInputError(f"--max_doc_length {max_doc_length} exceeds the position table of {path} "
                         f"({model.max_doc_length} tokens); convert with Star2Star_Longformer.py --max_doc_length")


# ------------------------------------------------------------------------------------------- inference


def default_output_dir(model_path: str, seg_length: int, max_seg_num: int) -> Path:
    """``./data/evaluate/{basename(model_path)}-inf{Lraw}-{M}``, the original's evaluation folder."""
    name = os.path.basename(os.path.normpath(model_path))
    return Path("./data/evaluate") / f"{name}-inf{seg_length}-{max_seg_num}"


def shard_range(num_docs: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """Contiguous, balanced document range of one shard."""
    return num_docs * shard_id // num_shards, num_docs * (shard_id + 1) // num_shards


def shard_prefix(shard_id: int, num_shards: int) -> str:
    return f"passages-shard{shard_id}-of{num_shards}"


# Result files of an evaluation folder, moved aside (never overwritten) when the embeddings are re-made.
RESULT_GLOBS = ("metrics.json", "res.jsonl", "*.trec", "*.msmarco.tsv")
# What ties an evaluation folder to its owner; a different owner is another model's folder.
OWNER_KEYS = ("model_path", "model_class")


def claim_eval_dir(out_dir: Path, identity: dict, args, expected_rows) -> bool:
    """Settle an existing evaluation folder before encoding; True when its embeddings are reused.

    Our folder, same owner: reused when every identity field matches, else re-encoded (once that
    succeeds, the previous result files move to a dated ``results.bak-*`` subfolder). Another owner's folder is refused,
    or moved to a dated backup with ``--overwrite_output_dir``. A folder of the original code
    (embeddings without our record) is used only with ``--reuse_embeddings``, after checking it.
    """
    record = embeddings.read_record(out_dir)
    stored = (record or {}).get("info", {})
    results = [p for g in RESULT_GLOBS for p in out_dir.glob(g)]
    if record is None and embeddings.foreign_embeddings(out_dir):
        if args.reuse_embeddings:
            embeddings.check_rows_per_document(out_dir, model_dim=identity["dim"], expected_rows=expected_rows)
            logger.info("--reuse_embeddings: using the embeddings of %s (no record of ours; sizes and rows per "
                        "document checked against this model and corpus)", out_dir)
            return True
        raise OutputError(f"{out_dir} holds segment embeddings written by another program (no {out_dir.name}"
                          "/passages-meta.json); pass --reuse_embeddings to use them, or --output_dir")
    if record is None and results:
        stored = json.loads((out_dir / "metrics.json").read_text()).get("model", {}) if (
            out_dir / "metrics.json").exists() else {}
    other = {k: (stored.get(k), identity[k]) for k in OWNER_KEYS if stored and stored.get(k) != identity[k]}
    if other or (results and not stored):
        if args.reuse_embeddings or not args.overwrite_output_dir:
            raise OutputError(f"{out_dir} holds the results of another model ({other or 'unrecorded'}); pass "
                              "--output_dir for a new folder, or --overwrite_output_dir to move it to a dated backup")
        backup = backup_name(out_dir)
        out_dir.rename(backup)
        logger.warning("--overwrite_output_dir: moved the earlier results in %s to %s", out_dir, backup)
        return False
    if record is None:
        return False
    changes = embeddings.identity_changes(stored, identity)
    if embeddings.embeddings_complete(out_dir, expect_info=identity):
        logger.info("reusing the complete segment embeddings in %s", out_dir)
        return True
    why = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()) or "the encoding was not complete"
    if args.reuse_embeddings:
        raise OutputError(f"--reuse_embeddings: the embeddings in {out_dir} do not match this run ({why})")
    logger.info("re-encoding %s: %s", out_dir, why)
    return False


def set_aside_results(out_dir: Path) -> None:
    """Result files of earlier embeddings move to a dated ``results.bak-*`` subfolder before new ones are written."""
    backup = move_to_backup([p for g in RESULT_GLOBS for p in out_dir.glob(g)], out_dir / "results")
    if backup:
        logger.info("the previous result files of %s are kept in %s", out_dir, backup)


def encode_documents(model, passages, spec, args, device, precision, out_dir: Path, info: dict,
                     shard_id: int = 0, num_shards: int = 1, merge: bool = True) -> bool:
    """Encode this process's documents; returns True when the full ``passages`` files are complete.

    With shards, ``merge`` joins them once all are complete (job arrays: whichever shard finishes last).
    """
    if num_shards > 1 and embeddings.embeddings_complete(out_dir, expect_info=info):
        return True  # merged already
    prefix = "passages" if num_shards == 1 else shard_prefix(shard_id, num_shards)
    start, end = shard_range(len(passages), shard_id, num_shards)
    if num_shards > 1 and embeddings.embeddings_complete(out_dir, prefix, expect_info=info):
        logger.info("shard %d/%d already encoded", shard_id, num_shards)
    else:
        t0 = time.time()
        with embeddings.SegmentEmbeddingWriter(out_dir, model.embedding_dim, prefix, info=info) as writer:
            for vecs, doc_ids in encode_corpus(model, passages, spec, args.max_bsize, device, precision, start, end):
                writer.append(vecs, doc_ids)
        logger.info("encoded documents %d..%d into %s/%s in %.1fs", start, end - 1, out_dir, prefix, time.time() - t0)
    return num_shards == 1 or (merge and merge_shards(out_dir, num_shards, info))


def merge_shards(out_dir: Path, num_shards: int, info: dict) -> bool:
    """Join the shards into ``passages.memmap`` if every one is complete; True when joined."""
    prefixes = [shard_prefix(i, num_shards) for i in range(num_shards)]
    if not all(embeddings.embeddings_complete(out_dir, p, expect_info=info) for p in prefixes):
        return False
    embeddings.concat_embedding_shards(out_dir, prefixes)
    for p in prefixes:
        for f in embeddings.embedding_paths(out_dir, p):
            f.unlink(missing_ok=True)
    logger.info("merged %d shards into %s/passages.memmap", num_shards, out_dir)
    return True


def backup_existing(path: Path) -> None:
    """Never overwrite earlier results silently: keep the old file beside the new one."""
    if path.exists():
        backup = backup_name(path)  # unique: two runs within one second keep both
        shutil.copy2(path, backup)
        logger.warning("%s exists; the previous version is kept as %s", path, backup)


def search_and_evaluate(model, out_dir: Path, preprocess_dir: Path, args, device, precision,
                        identity: dict | None = None) -> Evaluation:
    """Index the vectors in ``out_dir``, rank every split's queries, evaluate; with ``--gen_hardneg``
    also write the hard negatives of every training query. ``identity`` goes into ``metrics.json``."""
    emb = (embeddings.load_segment_embeddings(out_dir) if not embeddings.foreign_embeddings(out_dir)
           else embeddings.load_segment_embeddings(out_dir, legacy_dim=model.embedding_dim))
    index = indexes.build_index(emb.vectors, args.faiss_gpus, fp16=args.faiss_fp16, backend=args.search_backend,
                                search_shards=args.search_shards)
    rankings = {}
    for split, k_docs in EVAL_DOCS_KEPT.items():
        if not (preprocess_dir / f"{split}-query_meta").exists():
            logger.warning("no %s queries in %s; skipping that evaluation", split, preprocess_dir)
            continue
        qcache = data.queries(preprocess_dir, split)
        qvecs = encode_queries(model, qcache, args.max_query_length, args.eval_batch_size, device, precision)
        rankings[split] = retrieve_documents(index, emb.doc_ids, qvecs, range(len(qcache)), k_docs)
    evaluation = evaluate_rankings(rankings, preprocess_dir, out_dir, run_tag=out_dir.name, model_record=identity)
    print(format_results_table(evaluation.metrics))

    if getattr(args, "gen_hardneg", False):
        train_q = data.queries(preprocess_dir, "train")
        rel = data.load_rel(preprocess_dir / "train-qrel.tsv")
        qvecs = encode_queries(model, train_q, args.max_query_length, args.eval_batch_size, device, precision)
        hard = hard_negatives.hard_negatives_for_queries(index, emb.doc_ids, qvecs, range(len(train_q)), rel)
        short = sum(1 for v in hard.values() if len(v) < HARDNEG_LIST_LENGTH)
        path = Path(args.hardneg_path)
        backup_existing(path)
        hard_negatives.write_hard_negatives(path, hard)
        logger.info("wrote hard negatives of %d training queries to %s (%d with fewer than %d)",
                    len(hard), path, short, HARDNEG_LIST_LENGTH)
    return evaluation


def _inference(args, model, spec, seg_length: int, device, precision, shard_id=0, num_shards=1, rank=0,
               world_size=1) -> Evaluation | None:
    """Encode (this process's shard), then search and evaluate: the body of both inference scripts."""
    check_tokenizer_record(args.preprocess_dir, model, args.model_path)  # also guards --gen_hardneg
    model.to(device).eval()
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.model_path, seg_length,
                                                                                args.max_seg_num)
    preprocess_dir = Path(args.preprocess_dir)
    passages = data.passages(preprocess_dir)
    identity = {"model_path": str(Path(args.model_path).resolve()), "model_class": model.model_class_name,
                "model_fingerprint": model_fingerprint(args.model_path), "seg_length": seg_length,
                "max_seg_num": args.max_seg_num, "content_len": spec.content_len, "dim": model.embedding_dim,
                "preprocess_fingerprint": data.preprocess_fingerprint(preprocess_dir), "num_docs": len(passages)}
    logger.info("model %s (%s), %d documents, L=%d M=%d -> %s", args.model_path, model.model_class_name,
                len(passages), spec.content_len, args.max_seg_num, out_dir)
    rows = model.rows_per_document(torch.as_tensor(corpus_segment_counts(passages, spec))).numpy()
    _start_distributed(device, world_size)
    owner = rank == 0 and (world_size > 1 or num_shards == 1)  # job-array shards share the folder
    # The lock sits beside the folder, which --overwrite_output_dir may move to a backup.
    lock = RunLock(ensure_writable(out_dir).parent, out_dir.name).acquire() if owner else None
    try:
        reuse = [claim_eval_dir(out_dir, identity, args, rows) if rank == 0 else False]
        if world_size > 1:
            dist.broadcast_object_list(reuse)  # the other ranks wait until rank 0 has settled the folder
        if not reuse[0]:
            ensure_writable(out_dir, int(rows.sum()) * (model.embedding_dim + 1) * 4, "the segment embeddings")
        complete = reuse[0] or encode_documents(model, passages, spec, args, device, precision, out_dir, identity,
                                                shard_id, num_shards, merge=world_size == 1)
        if world_size > 1:
            dist.barrier()  # every rank's shard is written; rank 0 joins them
            complete = complete or (rank == 0 and merge_shards(out_dir, num_shards, identity))
            _stop_distributed(world_size)
            if rank != 0:
                return None
        if not complete:
            logger.info("shard %d of %d done; run the other shards, then any shard again to merge and evaluate",
                        shard_id, num_shards)
            return None
        if not reuse[0]:
            set_aside_results(out_dir)
        return search_and_evaluate(model, out_dir, preprocess_dir, args, device, precision, identity)
    finally:
        if lock is not None:
            lock.release()


def run_inference(argv=None) -> Evaluation | None:
    """``SeDR/inference.py``: encode (sharded under torchrun or ``--num_shards``), search, evaluate.

    Returns ``None`` on ranks other than 0 and for a shard that leaves others to encode.
    """
    args = flags.build_inference_parser().parse_args(argv)
    flags.validate_inference_args(args)
    rank, local_rank, world_size = env_rank()
    setup_logging(rank)
    device = resolve_device(args.no_cuda, local_rank)
    precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=False)
    model = load_model(args.model_path, model_class=args.model_class, max_seg_num=args.max_seg_num)
    spec = SegmentSpec(args.max_seg_length, args.max_seg_num, extra_reserve=model.extra_content_reserve)
    shard_id, num_shards = (rank, world_size) if world_size > 1 else (args.shard_id, args.num_shards)
    return _inference(args, model, spec, args.max_seg_length, device, precision, shard_id, num_shards, rank,
                      world_size)


def run_longformer_inference(argv=None) -> Evaluation:
    """``SeDR_Longformer/inference.py``: each document one row, ``max_seg_num`` index rows (zeros outside it)."""
    args = flags.build_longformer_inference_parser().parse_args(argv)
    flags.validate_inference_args(args)
    setup_logging()
    device = resolve_device(args.no_cuda)
    precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=False)
    model = load_longformer(args.model_path, max_seg_num=args.max_seg_num)
    check_doc_length(model, args.max_doc_length, args.model_path)
    return _inference(args, model, SegmentSpec(args.max_doc_length, 1), args.max_doc_length, device, precision)


# ------------------------------------------------------------------------------------------- ADORE


def run_adore(argv=None) -> list[Path]:
    """``SeDR/adore_train.py``: returns the checkpoints saved (improvements only)."""
    args = flags.build_adore_parser().parse_args(argv)
    flags.validate_adore_args(args)
    setup_logging()
    with claim_save_dir(args, Path(args.init_path).resolve().name):
        seed_everything(args.seed)
        device = resolve_device(args.no_cuda, args.model_gpu_index)
        precision = resolve_precision(device, training=True)
        model = load_model(args.init_path)  # the checkpoint's own class
        check_tokenizer_record(args.preprocess_dir, model, args.init_path)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        ensure_writable(args.model_save_dir, 5 * weights, "a checkpoint and the resumable state")
        model.to(device)
        return AdoreRun(args, model, device, precision).run()
