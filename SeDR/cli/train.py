"""``SeDR/train.py`` and ``SeDR_Longformer/train.py``: build the model class, claim the run folder,
train (single process or under torchrun)."""

from __future__ import annotations

import logging
from pathlib import Path

from SeDR.cli import flags
from SeDR.core.errors import check_model_folder
from SeDR.core.outputs import fingerprint
from SeDR.core.runtime import (
    env_rank,
    resolve_device,
    resolve_precision,
    seed_everything,
    setup_logging,
    start_distributed,
    stop_distributed,
)
from SeDR.data import preprocess_folder
from SeDR.data.segmentation import SegmentSpec
from SeDR.data.tokenizer_record import check_tokenizer_record
from SeDR.modeling import build_model, get_model_class
from SeDR.modeling.longformer import MODEL_CLASS_NAME as LONGFORMER_CLASS
from SeDR.modeling.longformer import build_longformer, check_doc_length
from SeDR.retrieval.hard_negatives import require_hard_negative_file
from SeDR.training.loop import (
    LongformerTrainer,
    Trainer,
    claim_output_dir,
    load_train_data,
    run_checkpoint_name,
    warn_if_positives_in_hard_negatives,
)
from SeDR.training.optimizers import total_training_steps

logger = logging.getLogger(__name__)


def warn_if_max_seg_num_unused(trainer: Trainer) -> None:
    """``M`` above every document's segment count changes nothing but the schedule horizon, which counts
    ``M`` (docs/training.md#schedule-horizon): say so, with the horizon it implies."""
    a = trainer.args
    longest = int(trainer.data.seg_counts.max(initial=0))
    if trainer.schedule_seg_num() != a.max_seg_num or not 0 < longest < a.max_seg_num:
        return
    fitting = total_training_steps(
        len(trainer.data.query_offsets),
        a.num_train_epochs,
        longest,
        a.max_bsize,
        a.gradient_accumulation_steps,
    )
    logger.warning(
        "--max_seg_num %d is above the %d segments of the longest document in %s (at --max_seg_length "
        "%d); no document fills the extra slots, but the learning-rate schedule counts them: %d "
        "optimizer steps instead of %d with --max_seg_num %d",
        a.max_seg_num,
        longest,
        a.preprocess_dir,
        a.max_seg_length,
        trainer.total_steps,
        fitting,
        longest,
    )


def _train(args, build, trainer_cls, spec_of) -> Trainer:
    rank, local_rank, world_size = env_rank(args.local_rank)
    setup_logging(rank)
    check_model_folder(args.init_path)
    require_hard_negative_file(args.hardneg_path)
    # Recorded in training_args.json beside the flags, and fixed on --resume.
    args.preprocess_fingerprint = preprocess_folder.preprocess_fingerprint(args.preprocess_dir)
    args.hardneg_fingerprint = fingerprint([Path(args.hardneg_path)])
    args.world_size = world_size
    lock = claim_output_dir(args, lambda e: run_checkpoint_name(args, e)) if rank == 0 else None
    try:
        seed_everything(args.seed)  # before the model exists, as the original
        device = resolve_device(args.no_cuda, local_rank)
        start_distributed(device, world_size, args.ddp_timeout)
        precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=True, tf32=args.tf32)
        model = build()
        train_data = load_train_data(
            args.preprocess_dir, args.hardneg_path, spec_of(model), flags.train_split(args)
        )
        warn_if_positives_in_hard_negatives(train_data)
        trainer = trainer_cls(
            args, model.to(device), train_data, device, precision, rank=rank, world_size=world_size
        )
        if rank == 0:
            warn_if_max_seg_num_unused(trainer)
            trainer.check_space()
        trainer.train()
        stop_distributed(world_size)
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
        model = build_model(
            args.model_class,
            args.init_path,
            max_seg_num=args.max_seg_num,
            cache_size=args.cache_size,
            gradient_checkpointing=args.use_gradient_checkpointing,
        )
        check_tokenizer_record(args.preprocess_dir, model, args.init_path)
        return model

    return _train(
        args,
        build,
        Trainer,
        lambda m: SegmentSpec(args.max_seg_length, args.max_seg_num, extra_reserve=m.extra_content_reserve),
    )


def run_longformer_training(argv=None) -> Trainer:
    """``SeDR_Longformer/train.py``: one ``max_doc_length`` row per document,
    so ``--max_bsize`` counts documents."""
    args = flags.build_longformer_train_parser().parse_args(argv)
    args.model_class = LONGFORMER_CLASS  # read by the Trainer's log and recorded in training_args.json
    flags.validate_train_args(args)

    def build():
        model = build_longformer(
            args.init_path,
            max_seg_num=args.max_seg_num,
            cache_size=args.cache_size,
            gradient_checkpointing=args.use_gradient_checkpointing,
        )
        check_doc_length(model, args.max_doc_length, args.init_path)
        check_tokenizer_record(args.preprocess_dir, model, args.init_path)
        return model

    return _train(args, build, LongformerTrainer, lambda m: SegmentSpec(args.max_doc_length, 1))
