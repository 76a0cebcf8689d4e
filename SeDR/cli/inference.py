"""``SeDR/inference.py`` and ``SeDR_Longformer/inference.py``: encode every segment into an evaluation
folder (claimed, reused or backed up), search, rank, evaluate, and ``--gen_hardneg``."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from SeDR.cli import flags
from SeDR.core.constants import EVAL_DOCS_KEPT, HARDNEG_LIST_LENGTH, SPLIT_FILES
from SeDR.core.errors import MissingInputError, OutputError, SeDRInputError
from SeDR.core.outputs import (
    BACKUP,
    REFUSE,
    Claim,
    claim,
    ensure_writable,
    fingerprint,
    keep_copy,
    move_to_backup,
)
from SeDR.core.runtime import (
    env_rank,
    loader_workers,
    resolve_device,
    resolve_precision,
    setup_logging,
    start_distributed,
    stop_distributed,
)
from SeDR.data import preprocess_folder
from SeDR.data.segmentation import SegmentSpec
from SeDR.data.tokenizer_record import check_tokenizer_record
from SeDR.modeling import load_model
from SeDR.modeling.longformer import check_doc_length, load_longformer
from SeDR.retrieval import embedding_files, exact_search, hard_negatives
from SeDR.retrieval.encoding import corpus_segment_counts, encode_corpus, encode_queries
from SeDR.retrieval.evaluation import (
    SPLIT_LABELS,
    Evaluation,
    Measures,
    default_measures,
    evaluate_rankings,
    format_results_table,
    parse_measures,
    ranking_depth,
)
from SeDR.retrieval.ranking import retrieve_documents

logger = logging.getLogger(__name__)


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


# Bytes per ranked document over the run files (a TREC line, an MS MARCO line, less the run tag); an
# estimate for the space check before encoding, which only has to be of the right size.
RESULT_LINE_BYTES = 96
HARDNEG_ID_BYTES = 9  # one document offset in hard_negative.json: up to 7 digits and ", "


def _another_owner(out_dir: Path, identity: dict) -> dict | None:
    """The owner fields in which ``out_dir``'s results differ from ``identity`` (empty: unrecorded), or None
    when the folder is free, ours, or the original code's (settled by :func:`claim_eval_dir`)."""
    record = embedding_files.read_record(out_dir)
    if record is None and embedding_files.foreign_embeddings(out_dir):
        return None
    results = [p for g in RESULT_GLOBS for p in out_dir.glob(g)]
    stored = (record or {}).get("info", {})
    if record is None and results and (out_dir / "metrics.json").exists():
        stored = json.loads((out_dir / "metrics.json").read_text()).get("model", {})
    other = embedding_files.identity_changes(stored, identity, embedding_files.OWNER_KEYS) if stored else {}
    return other if other or (results and not stored) else None


def claim_eval_dir(
    out_dir: Path, identity: dict, args, expected_rows, exclusive: bool = True
) -> tuple[Claim, bool]:
    """Lock and settle an existing evaluation folder before encoding; the claim, and True when its
    embeddings are reused.

    Our folder, same owner: reused when every identity field matches, else re-encoded (once that
    succeeds, the previous result files move to a dated ``results.bak-*`` subfolder). Another owner's folder
    is refused, or moved to a dated backup with ``--overwrite_output_dir``. A folder of the original code
    (embeddings without our record) is used only with ``--reuse_embeddings``, after checking it.
    ``exclusive=False``: job-array shards share the folder and take no lock.
    """
    held = claim(
        out_dir,
        lock_in=out_dir.parent,
        lock_name=out_dir.name,
        earlier=lambda: [out_dir] if _another_owner(out_dir, identity) is not None else [],
        when_taken=BACKUP if args.overwrite_output_dir and not args.reuse_embeddings else REFUSE,
        refusal=lambda _: (
            f"{out_dir} holds the results of another model "
            f"({_another_owner(out_dir, identity) or 'unrecorded'}); pass "
            "--output_dir for a new folder, or --overwrite_output_dir to move it to a dated backup"
        ),
        what="the evaluation folder",
        exclusive=exclusive,
    )
    try:
        return held, _settle_eval_dir(held, identity, args, expected_rows)
    except BaseException:
        held.release()
        raise


def _settle_eval_dir(held: Claim, identity: dict, args, expected_rows) -> bool:
    out_dir = held.output
    if held.backup is not None:
        logger.warning("--overwrite_output_dir: moved the earlier results in %s to %s", out_dir, held.backup)
        return False
    record = embedding_files.read_record(out_dir)
    if record is None and embedding_files.foreign_embeddings(out_dir):
        if args.reuse_embeddings:
            embedding_files.check_rows_per_document(
                out_dir, model_dim=identity["dim"], expected_rows=expected_rows
            )
            logger.info(
                "--reuse_embeddings: using the embeddings of %s (no record of ours; sizes and rows per "
                "document checked against this model and corpus)",
                out_dir,
            )
            return True
        raise OutputError(
            f"{out_dir} holds segment embeddings written by another program (no {out_dir.name}"
            "/passages-meta.json); pass --reuse_embeddings to use them, or --output_dir"
        )
    if record is None:
        return False
    changes = embedding_files.identity_changes(record.get("info", {}), identity)
    if embedding_files.embeddings_complete(out_dir, expect_info=identity):
        logger.info("reusing the complete segment embeddings in %s", out_dir)
        return True
    why = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()) or "the encoding was not complete"
    if args.reuse_embeddings:
        raise OutputError(f"--reuse_embeddings: the embeddings in {out_dir} do not match this run ({why})")
    logger.info("re-encoding %s: %s", out_dir, why)
    return False


def check_before_encoding(args, preprocess_dir: Path, run_tag: str, plan: EvaluationPlan) -> int:
    """What can fail after encoding, checked before it: the id maps the run files need and, with
    ``--gen_hardneg``, a writable ``--hardneg_path`` with room for the file (and the copy of an earlier
    one). Returns the bytes the result files will take (docs/errors.md#early-checks)."""
    splits = list(plan.measures)
    maps = ["pid2offset.pickle"] + [f"{s}-qid2offset.pickle" for s in splits] if splits else []
    for name in maps:
        if not (preprocess_dir / name).is_file():
            raise MissingInputError(
                preprocess_dir / name,
                "the run files need it to write original ids; the preprocess folder is incomplete: "
                + preprocess_folder.PREPROCESS_HINT,
            )
    results = sum(
        len(preprocess_folder.queries(preprocess_dir, s))
        * ranking_depth(s, measures)
        * (RESULT_LINE_BYTES + len(run_tag))
        for s, measures in plan.measures.items()
    )
    if getattr(args, "gen_hardneg", False):
        path = Path(args.hardneg_path)
        if path.is_dir():
            raise OutputError(f"--hardneg_path {path} is a folder; name the file to write")
        n_train = len(preprocess_folder.queries(preprocess_dir, flags.train_split(args)))
        earlier = path.stat().st_size if path.exists() else 0
        ensure_writable(
            path.parent, n_train * HARDNEG_LIST_LENGTH * HARDNEG_ID_BYTES + earlier, f"--hardneg_path {path}"
        )
    return results


def keep_earlier_copy(path: Path) -> None:
    """Never overwrite earlier results silently: an existing file is kept beside the new one."""
    kept = keep_copy(path)
    if kept is not None:
        logger.warning("%s exists; the previous version is kept as %s", path, kept)


def set_aside_results(out_dir: Path) -> None:
    """Result files of earlier embeddings move to a dated ``results.bak-*`` subfolder before
    new ones are written."""
    backup = move_to_backup([p for g in RESULT_GLOBS for p in out_dir.glob(g)], out_dir / "results")
    if backup:
        logger.info("the previous result files of %s are kept in %s", out_dir, backup)


def encode_documents(
    model,
    passages,
    spec,
    args,
    device,
    precision,
    out_dir: Path,
    info: dict,
    shard_id: int = 0,
    num_shards: int = 1,
    merge: bool = True,
) -> bool:
    """Encode this process's documents; returns True when the full ``passages`` files are complete.

    With shards, ``merge`` joins them once all are complete (job arrays: whichever shard finishes last).
    """
    if num_shards > 1 and embedding_files.embeddings_complete(out_dir, expect_info=info):
        return True  # merged already
    prefix = "passages" if num_shards == 1 else shard_prefix(shard_id, num_shards)
    start, end = shard_range(len(passages), shard_id, num_shards)
    if num_shards > 1 and embedding_files.embeddings_complete(out_dir, prefix, expect_info=info):
        logger.info("shard %d/%d already encoded", shard_id, num_shards)
    else:
        t0 = time.time()
        with embedding_files.SegmentEmbeddingWriter(
            out_dir, model.embedding_dim, prefix, info=info
        ) as writer:
            for vecs, doc_ids in encode_corpus(
                model,
                passages,
                spec,
                args.max_bsize,
                device,
                precision,
                start,
                end,
                num_workers=loader_workers(args.num_workers, device),
            ):
                writer.append(vecs, doc_ids)
        logger.info(
            "encoded documents %d..%d into %s/%s in %.1fs", start, end - 1, out_dir, prefix, time.time() - t0
        )
    return num_shards == 1 or (merge and merge_shards(out_dir, num_shards, info))


def merge_shards(out_dir: Path, num_shards: int, info: dict) -> bool:
    """Join the shards into ``passages.memmap`` if every one is complete; True when joined."""
    prefixes = [shard_prefix(i, num_shards) for i in range(num_shards)]
    if not all(embedding_files.embeddings_complete(out_dir, p, expect_info=info) for p in prefixes):
        return False
    embedding_files.concat_embedding_shards(out_dir, prefixes)
    for p in prefixes:
        for f in embedding_files.embedding_paths(out_dir, p):
            f.unlink(missing_ok=True)
    logger.info("merged %d shards into %s/passages.memmap", num_shards, out_dir)
    return True


class EvaluationPlan(NamedTuple):
    measures: dict[str, Measures]  # split -> measures, in the order evaluated
    labels: dict[str, str]  # split -> name in the log and table
    judged_only: bool  # condensed rankings (docs/own-collection.md#metrics)


def evaluation_plan(preprocess_dir: Path, args) -> EvaluationPlan:
    """The splits to evaluate and their measures (docs/own-collection.md#metrics), settled before encoding.

    Default splits: MS MARCO's dev, test, 2020test, those present (a warning for each one missing), or
    every split of a collection except ``--train_split``. Named splits must exist.
    """
    collection = preprocess_folder.recorded_splits(preprocess_dir)
    asked = getattr(args, "eval_splits", None)
    if asked is not None:
        present = collection or [s for s in SPLIT_FILES if (preprocess_dir / f"{s}-query_meta").exists()]
        missing = [s for s in asked if s not in present]
        if missing:
            raise SeDRInputError(
                f"--eval_splits: {', '.join(missing)} not in {preprocess_dir} "
                f"(its splits: {', '.join(present)})"
            )
        splits = list(asked)
    elif collection is not None:
        splits = [s for s in collection if s != flags.train_split(args)]
    else:
        splits = []
        for split in EVAL_DOCS_KEPT:
            if (preprocess_dir / f"{split}-query_meta").exists():
                splits.append(split)
            else:
                logger.warning("no %s queries in %s; skipping that evaluation", split, preprocess_dir)
    if not splits:
        logger.warning(
            "no split of %s to evaluate (only --train_split's); pass --eval_splits", preprocess_dir
        )
    names = getattr(args, "metrics", None)
    asked_measures = parse_measures(names) if names else None
    measures = {split: asked_measures or default_measures(split) for split in splits}
    labels = dict(SPLIT_LABELS) if collection is None else {}
    return EvaluationPlan(measures, labels, bool(getattr(args, "judged_only", False)))


def search_settings(args) -> exact_search.SearchSettings:
    """The search's memory and threads from ``--search_block_rows``, ``--search_query_block``,
    ``--search_threads`` (docs/scale.md#memory)."""
    return exact_search.SearchSettings(
        block_rows=getattr(args, "search_block_rows", exact_search.BLOCK_ROWS),
        query_block=getattr(args, "search_query_block", exact_search.QUERY_BLOCK),
        threads=getattr(args, "search_threads", 0),
    )


def search_and_evaluate(
    model,
    out_dir: Path,
    preprocess_dir: Path,
    args,
    device,
    precision,
    identity: dict | None = None,
    plan: EvaluationPlan | None = None,
) -> Evaluation:
    """Index the vectors in ``out_dir``, rank every split's queries, evaluate; with ``--gen_hardneg``
    also write the hard negatives of every training query. ``identity`` goes into ``metrics.json``."""
    emb = (
        embedding_files.load_segment_embeddings(out_dir)
        if not embedding_files.foreign_embeddings(out_dir)
        else embedding_files.load_segment_embeddings(out_dir, legacy_dim=model.embedding_dim)
    )
    settings = search_settings(args)
    exact = getattr(args, "doc_topk_exact", False)
    index = exact_search.build_index(
        emb.vectors,
        args.faiss_gpus,
        fp16=args.faiss_fp16,
        backend=args.search_backend,
        search_shards=args.search_shards,
        settings=settings,
    )
    plan = plan or evaluation_plan(preprocess_dir, args)
    rankings = {}
    for split, measures in plan.measures.items():
        qcache = preprocess_folder.queries(preprocess_dir, split)
        qvecs = encode_queries(model, qcache, args.max_query_length, args.eval_batch_size, device, precision)
        depth = ranking_depth(split, measures)
        rankings[split] = retrieve_documents(
            index, emb.doc_ids, qvecs, range(len(qcache)), depth, exact=exact
        )
        del qvecs
    evaluation = evaluate_rankings(
        rankings,
        preprocess_dir,
        out_dir,
        run_tag=out_dir.name,
        model_record=identity,
        measures=plan.measures,
        judged_only=plan.judged_only,
        labels=plan.labels,
    )
    print(format_results_table(evaluation.metrics, plan.labels))

    if getattr(args, "gen_hardneg", False):
        split = flags.train_split(args)
        train_q = preprocess_folder.queries(preprocess_dir, split)
        rel = preprocess_folder.load_rel(preprocess_dir / f"{split}-qrel.tsv")
        path = Path(args.hardneg_path)
        bs = args.eval_batch_size
        block = max(bs, settings.query_block // bs * bs)  # whole encoding batches: the same query vectors

        def encode(a: int, b: int):
            return encode_queries(
                model, train_q, args.max_query_length, bs, device, precision, offsets=range(a, b)
            )

        summary = hard_negatives.generate_hard_negatives(
            index,
            emb.doc_ids,
            encode,
            len(train_q),
            rel,
            path,
            identity={
                "model": identity,
                "embeddings": {"rows": emb.num_rows, "info": emb.info},
                "train_qrels": fingerprint([preprocess_dir / f"{split}-qrel.tsv"]),
                "max_query_length": args.max_query_length,
                "eval_batch_size": bs,
                "precision": precision.name,
                "search": [args.search_backend, args.faiss_gpus, args.faiss_fp16, args.search_shards],
                "threads": settings.cpu_threads(),  # a few queries' scores round by the thread count
                "exact": exact,
            },
            block_size=block,
            exact=exact,
            before_write=keep_earlier_copy,
        )
        logger.info(
            "wrote hard negatives of %d training queries to %s (%d with fewer than %d)",
            summary.queries,
            path,
            summary.short,
            HARDNEG_LIST_LENGTH,
        )
    return evaluation


def _inference(
    args, model, spec, seg_length: int, device, precision, shard_id=0, num_shards=1, rank=0, world_size=1
) -> Evaluation | None:
    """Encode (this process's shard), then search and evaluate: the body of both inference scripts."""
    check_tokenizer_record(args.preprocess_dir, model, args.model_path)  # also guards --gen_hardneg
    plan = evaluation_plan(Path(args.preprocess_dir), args)  # bad --eval_splits, --metrics: refused now
    model.to(device).eval()
    out_dir = (
        Path(args.output_dir)
        if args.output_dir
        else default_output_dir(args.model_path, seg_length, args.max_seg_num)
    )
    preprocess_dir = Path(args.preprocess_dir)
    passages = preprocess_folder.passages(preprocess_dir)
    identity = embedding_files.embedding_identity(
        model,
        args.model_path,
        seg_length,
        args.max_seg_num,
        spec.content_len,
        preprocess_fingerprint=preprocess_folder.preprocess_fingerprint(preprocess_dir),
        num_docs=len(passages),
    )
    if precision.tf32:  # recorded when in effect only: earlier folders keep matching fp32 runs
        identity["tf32"] = True
    logger.info(
        "model %s (%s), %d documents, L=%d M=%d -> %s",
        args.model_path,
        model.model_class_name,
        len(passages),
        spec.content_len,
        args.max_seg_num,
        out_dir,
    )
    rows = model.rows_per_document(torch.as_tensor(corpus_segment_counts(passages, spec))).numpy()
    result_bytes = check_before_encoding(args, preprocess_dir, out_dir.name, plan)
    start_distributed(device, world_size, args.ddp_timeout)
    held = None
    try:
        reuse = [False]
        if rank == 0:  # job-array shards share the folder: only a single process or torchrun locks it
            held, reuse[0] = claim_eval_dir(
                out_dir, identity, args, rows, exclusive=world_size > 1 or num_shards == 1
            )
        if world_size > 1:
            dist.broadcast_object_list(reuse)  # the other ranks wait until rank 0 has settled the folder
        embedding_bytes = 0 if reuse[0] else int(rows.sum()) * (model.embedding_dim + 1) * 4
        ensure_writable(
            out_dir,
            embedding_bytes + result_bytes,
            "the result files" if reuse[0] else "the segment embeddings and the result files",
        )
        complete = reuse[0] or encode_documents(
            model,
            passages,
            spec,
            args,
            device,
            precision,
            out_dir,
            identity,
            shard_id,
            num_shards,
            merge=world_size == 1,
        )
        if world_size > 1:
            dist.barrier()  # every rank's shard is written; rank 0 joins them
            complete = complete or (rank == 0 and merge_shards(out_dir, num_shards, identity))
            stop_distributed(world_size)
            if rank != 0:
                return None
        if not complete:
            logger.info(
                "shard %d of %d done; run the other shards, then any shard again to merge and evaluate",
                shard_id,
                num_shards,
            )
            return None
        if not reuse[0]:
            set_aside_results(out_dir)
        return search_and_evaluate(model, out_dir, preprocess_dir, args, device, precision, identity, plan)
    finally:
        if held is not None:
            held.release()


def run_inference(argv=None) -> Evaluation | None:
    """``SeDR/inference.py``: encode (sharded under torchrun or ``--num_shards``), search, evaluate.

    Returns ``None`` on ranks other than 0 and for a shard that leaves others to encode.
    """
    args = flags.build_inference_parser().parse_args(argv)
    flags.validate_inference_args(args)
    rank, local_rank, world_size = env_rank(args.local_rank)
    setup_logging(rank)
    device = resolve_device(args.no_cuda, local_rank)
    precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=False, tf32=args.tf32)
    model = load_model(args.model_path, model_class=args.model_class, max_seg_num=args.max_seg_num)
    spec = SegmentSpec(args.max_seg_length, args.max_seg_num, extra_reserve=model.extra_content_reserve)
    shard_id, num_shards = (rank, world_size) if world_size > 1 else (args.shard_id, args.num_shards)
    return _inference(
        args, model, spec, args.max_seg_length, device, precision, shard_id, num_shards, rank, world_size
    )


def run_longformer_inference(argv=None) -> Evaluation:
    """``SeDR_Longformer/inference.py``: each document one row,
    ``max_seg_num`` index rows (zeros outside it)."""
    args = flags.build_longformer_inference_parser().parse_args(argv)
    flags.validate_inference_args(args)
    setup_logging()
    device = resolve_device(args.no_cuda)
    precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=False, tf32=args.tf32)
    model = load_longformer(args.model_path, max_seg_num=args.max_seg_num)
    check_doc_length(model, args.max_doc_length, args.model_path)
    return _inference(
        args, model, SegmentSpec(args.max_doc_length, 1), args.max_doc_length, device, precision
    )
