"""Train a SeDR model class: ``python SeDR/train.py --model_class SeDR ...`` (SPEC §5, README)."""

from __future__ import annotations

import logging

from SeDR.args import build_train_parser, validate_train_args
from SeDR.data import SegmentSpec
from SeDR.errors import exit_on_input_error
from SeDR.runtime import env_rank, resolve_device, resolve_precision, seed_everything, setup_logging
from SeDR.tokenizer_record import check_tokenizer_record

logger = logging.getLogger(__name__)


def run(argv=None):
    """Parse, build and train; returns the :class:`~SeDR.trainer.Trainer` (``.saved`` lists the checkpoints)."""
    args = build_train_parser().parse_args(argv)
    validate_train_args(args)
    rank, local_rank, world_size = env_rank()
    setup_logging(rank)
    from SeDR.modeling import build_model, get_model_class
    from SeDR.trainer import Trainer, load_train_data, warn_if_positives_in_hard_negatives

    get_model_class(args.model_class)  # unknown names fail here, with the valid ones listed
    seed_everything(args.seed)  # before the model exists, as the original (SPEC §5.1)
    device = resolve_device(args.no_cuda, local_rank)
    if world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)
    precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=True)
    model = build_model(args.model_class, args.init_path, max_seg_num=args.max_seg_num,
                        cache_size=args.cache_size, gradient_checkpointing=args.use_gradient_checkpointing)
    check_tokenizer_record(args.preprocess_dir, model, args.init_path)
    spec = SegmentSpec(args.max_seg_length, args.max_seg_num, extra_reserve=model.extra_content_reserve)
    train_data = load_train_data(args.preprocess_dir, args.hardneg_path, spec)
    warn_if_positives_in_hard_negatives(train_data)
    trainer = Trainer(args, model.to(device), train_data, device, precision, rank=rank, world_size=world_size)
    trainer.check_output_dir()
    trainer.train()
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return trainer


@exit_on_input_error
def main(argv=None):
    return run(argv).saved


if __name__ == "__main__":
    main()
