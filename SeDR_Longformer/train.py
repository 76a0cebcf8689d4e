"""Train SeDR-Longformer: ``python SeDR_Longformer/train.py --max_doc_length 2048 --max_seg_num 4 ...`` (SPEC §5.5).

The loop, optimizer, schedule, clipping, logging, Late-Cache and checkpointing are
:class:`SeDR.trainer.Trainer`'s. Differences (SPEC §5.5): every document is one
``max_doc_length`` row (the §2 pipeline with ``M = 1``, so ``--max_bsize`` counts documents),
the schedule horizon omits the factor ``M``, and checkpoints are named
``epoch-{e}-{max_doc_length}-{max_seg_num}-{max_bsize}-SeDR_Longformer``.
"""

from __future__ import annotations

import logging

from SeDR.args import build_longformer_train_parser, validate_train_args
from SeDR.errors import exit_on_input_error
from SeDR.trainer import Trainer, checkpoint_name
from SeDR_Longformer.model import MODEL_CLASS_NAME

logger = logging.getLogger(__name__)


class LongformerTrainer(Trainer):
    """:class:`Trainer` with SeDR-Longformer's checkpoint names and schedule horizon (SPEC §5.3, §5.5)."""

    def schedule_seg_num(self) -> int:
        return 1  # 367,013·25/(7·4) → 327,690 steps for the README run

    def name_of_epoch(self, epoch: int) -> str:
        a = self.args
        return checkpoint_name(epoch, a.max_doc_length, a.max_seg_num, a.max_bsize, MODEL_CLASS_NAME, a.postfix)


@exit_on_input_error
def main(argv=None):
    args = build_longformer_train_parser().parse_args(argv)
    args.model_class = MODEL_CLASS_NAME  # read by the Trainer's log and recorded in training_args.json
    validate_train_args(args)
    from SeDR.data import SegmentSpec
    from SeDR.runtime import env_rank, resolve_device, resolve_precision, seed_everything, setup_logging
    from SeDR.trainer import load_train_data, warn_if_positives_in_hard_negatives
    from SeDR_Longformer.model import build_longformer

    rank, local_rank, world_size = env_rank()
    setup_logging(rank)
    seed_everything(args.seed)  # before the model exists, as the original (SPEC §5.1)
    device = resolve_device(args.no_cuda, local_rank)
    precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=True)
    model = build_longformer(args.init_path, max_seg_num=args.max_seg_num, cache_size=args.cache_size,
                             gradient_checkpointing=args.use_gradient_checkpointing)
    if args.max_doc_length > model.max_doc_length:
        raise SystemExit(f"--max_doc_length {args.max_doc_length} exceeds the position table of {args.init_path} "
                         f"({model.max_doc_length} tokens); convert with Star2Star_Longformer.py --max_doc_length")
    spec = SegmentSpec(args.max_doc_length, 1)  # [CLS] + max_doc_length-2 content + [EOS] (SPEC §3.4)
    train_data = load_train_data(args.preprocess_dir, args.hardneg_path, spec)
    warn_if_positives_in_hard_negatives(train_data)
    trainer = LongformerTrainer(args, model.to(device), train_data, device, precision, rank=rank,
                                world_size=world_size)
    trainer.check_output_dir()
    return trainer.train()


if __name__ == "__main__":
    main()
