"""``SeDR/adore_train.py``: ADORE query-encoder fine-tuning against a frozen segment index."""

from __future__ import annotations

from pathlib import Path

from SeDR.cli import flags
from SeDR.core.errors import check_model_folder
from SeDR.core.outputs import ensure_writable
from SeDR.core.runtime import resolve_device, resolve_precision, seed_everything, setup_logging
from SeDR.data.tokenizer_record import check_tokenizer_record
from SeDR.modeling import load_model
from SeDR.training.adore import AdoreRun, claim_save_dir


def run_adore(argv=None) -> list[Path]:
    """``SeDR/adore_train.py``: returns the checkpoints saved (improvements only)."""
    args = flags.build_adore_parser().parse_args(argv)
    flags.validate_adore_args(args)
    setup_logging()
    check_model_folder(args.init_path)  # before the save folder is claimed
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
