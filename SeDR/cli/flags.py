"""Command-line flags of every command, declared once, with the original names and defaults; the
cross-flag checks; the retriever commands' flags."""

from __future__ import annotations

import argparse
import os

from SeDR.core.constants import (
    DEFAULT_DDP_TIMEOUT,
    MULTI_SEGMENT_RESERVE,
    SEARCH_BACKENDS,
    SEARCH_BLOCK_ROWS,
    SEARCH_QUERY_BLOCK,
    SINGLE_SEGMENT_RESERVE,
)
from SeDR.core.errors import SeDRInputError
from SeDR.data.preprocessing import check_split_name

DEFAULT_TRAIN_SPLIT = "train"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``prog: error: ...``), exit status 2 as usual."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser(description: str) -> Parser:
    return Parser(
        description=description, allow_abbrev=True, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def number(kind=int, low=None, high=None, low_open=False, allow=()):
    """An argparse ``type`` that parses ``kind`` and checks ``low <= x (< if low_open) <= high``."""

    def parse(text):
        try:
            x = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if x in allow:
            return x
        if low is not None and (x <= low if low_open else x < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text}")
        if high is not None and x > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return x

    parse.__name__ = kind.__name__
    return parse


POSITIVE = number(int, 1)


NON_NEGATIVE = number(int, 0)


QUERY_LENGTH = number(int, 2)  # room for CLS and EOS


POSITIVE_FLOAT = number(float, 0, low_open=True)


def add_data_args(parser, *, required: bool = True, query_length_default: int | None = None):
    g = parser.add_argument_group("data")
    g.add_argument(
        "--max_query_length",
        type=QUERY_LENGTH,
        required=query_length_default is None and required,
        default=query_length_default,
        help="query tokens used, CLS and EOS included (queries are stored at 64; docs/data.md#query-view)",
    )
    g.add_argument(
        "--preprocess_dir", default="./data/preprocess", help="folder written by SeDR_preprocess.py"
    )
    return g


def add_train_split_arg(group, *, recorded: bool):
    """``--train_split``: the split whose queries train (and get hard negatives). A training run records its
    flags, so there the flag is left out of the record unless given (README runs keep their records)."""
    group.add_argument(
        "--train_split",
        type=split_name,
        default=argparse.SUPPRESS if recorded else DEFAULT_TRAIN_SPLIT,
        help=f"preprocessed split of training queries (default {DEFAULT_TRAIN_SPLIT}; "
        "docs/own-collection.md#train)",
    )


def split_name(text: str) -> str:
    try:
        return check_split_name(text)
    except SeDRInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def split_names(text: str) -> list[str]:
    names = [split_name(n.strip()) for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct split names separated by commas, got {text!r}")
    return names


def train_split(args) -> str:
    """The training split of a parsed command (``--train_split`` or the default)."""
    return getattr(args, "train_split", DEFAULT_TRAIN_SPLIT)


def add_segment_args(
    parser, *, seg_length_default: int | None, seg_num_default: int | None, max_bsize_default: int
):
    g = parser.add_argument_group("segmentation (docs/segmentation.md)")
    g.add_argument(
        "--max_seg_length",
        type=POSITIVE,
        required=seg_length_default is None,
        default=seg_length_default,
        help="segment row budget Lraw in tokens; content per segment is Lraw-12 (Lraw-2 when max_seg_num=1)",
    )
    g.add_argument(
        "--max_seg_num",
        type=POSITIVE,
        required=seg_num_default is None,
        default=seg_num_default,
        help="maximum number of segments per document M",
    )
    g.add_argument(
        "--max_bsize",
        type=POSITIVE,
        default=max_bsize_default,
        help="segment budget per forward pass (positives' segments in training)",
    )
    return g


def add_runtime_args(parser):
    g = parser.add_argument_group("runtime")
    g.add_argument("--no_cuda", action="store_true", help="run on CPU even when a GPU is visible")
    g.add_argument(
        "--fp16",
        action="store_true",
        help="float16 autocast (+ GradScaler in training) on a GPU; on CPU: warn once, run fp32",
    )
    g.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast on a GPU; on CPU: warn once, run fp32"
    )
    g.add_argument("--seed", type=int, default=42, help="seed of python, numpy and torch")
    g.add_argument(
        "--tf32",
        action="store_true",
        help="let fp32 matmuls use TF32 tensor cores (Ampere or newer GPU; faster, ~1e-3 relative "
        "rounding per product; the paper's runs were full fp32); on CPU: warn once, no effect",
    )
    g.add_argument(
        "--num_workers",
        type=NON_NEGATIVE,
        default=None,
        help="processes that collate batches ahead of the model (0: in line, in the main process); "
        "default 2 on a GPU, 0 on a CPU. Results do not depend on it",
    )
    g.add_argument(
        "--ddp_timeout",
        type=POSITIVE,
        default=DEFAULT_DDP_TIMEOUT,
        help="under torchrun: seconds a rank may wait for the others (e.g. while rank 0 merges "
        "the encoded shards) before the job stops",
    )
    g.add_argument(
        "--local_rank",
        "--local-rank",
        dest="local_rank",
        type=int,
        default=int(os.environ.get("LOCAL_RANK", -1)),
        help="this process's GPU, as torch.distributed.launch passes it; must agree with LOCAL_RANK "
        "(torchrun sets that instead)",
    )
    return g


def add_retrieval_args(parser, length_flag: str):
    g = parser.add_argument_group("retrieval")
    g.add_argument(
        "--faiss_gpus",
        type=int,
        nargs="*",
        default=None,
        help="GPU ids for the faiss index (several = sharded); none or no GPU: CPU search",
    )
    g.add_argument(
        "--faiss_fp16", action="store_true", help="store the GPU index in float16 (half the memory)"
    )
    g.add_argument(
        "--search_backend",
        choices=SEARCH_BACKENDS,
        default="auto",
        help="exact search by faiss or by torch matmul + top-k (same rankings); auto: faiss on GPU "
        "with faiss-gpu, else torch on the GPUs of --faiss_gpus, on CPU the faster one (torch)",
    )
    g.add_argument(
        "--search_shards",
        type=POSITIVE,
        default=1,
        help="CPU only: search N contiguous row shards one after the other and merge (same results)",
    )
    g.add_argument(
        "--search_block_rows",
        type=POSITIVE,
        default=SEARCH_BLOCK_ROWS,
        help="rows per block of a search's scan over the vectors (the page-cache working set on a CPU; "
        "docs/scale.md#memory)",
    )
    g.add_argument(
        "--search_query_block",
        type=POSITIVE,
        default=SEARCH_QUERY_BLOCK,
        help="queries searched in one pass over the vectors; their running top-k (this x hits x 12 bytes) "
        "is the search's main memory, and more queries take more passes",
    )
    g.add_argument(
        "--search_threads",
        type=NON_NEGATIVE,
        default=0,
        help="CPU threads of torch and faiss while searching; 0 keeps the process's own (torch: every "
        "physical core; torchrun: one per rank)",
    )
    g.add_argument(
        "--doc_topk_exact",
        action="store_true",
        help="rank documents by their best segment over every row (enough segment hits for the exact top "
        "documents and hard negatives); default: among the first 1,024 segment hits, as the original",
    )
    g.add_argument(
        "--output_dir",
        default=None,
        help=f"default ./data/evaluate/{{basename(model_path)}}-inf{{{length_flag}}}-{{max_seg_num}}",
    )
    g.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="an output folder holding another model's results is moved to a dated backup instead of "
        "refusing to start",
    )
    g.add_argument(
        "--reuse_embeddings",
        action="store_true",
        help="require reusing the segment embeddings in the output folder (also a folder written by the "
        "original code); stop with an error instead of re-encoding when they do not match",
    )
    return g


def build_train_parser() -> argparse.ArgumentParser:
    p = _parser("Train a SeDR model class (docs/training.md).")
    add_data_args(p)
    add_segment_args(p, seg_length_default=None, seg_num_default=None, max_bsize_default=512)
    add_train_args(p)
    add_runtime_args(p)
    return p


def add_train_args(p, *, model_class: bool = True):
    """Model, negatives, optimisation and output flags of every training script."""
    g = p.add_argument_group("model")
    if model_class:
        g.add_argument(
            "--model_class", default="SeDR", help="one of the registered model classes (README names)"
        )
    g.add_argument(
        "--init_path", required=True, help="checkpoint to start from (STAR, or ./data/starlongformer)"
    )
    g.add_argument(
        "--cache_size", type=POSITIVE, default=50, help="Late-Cache capacity in queries (cached classes)"
    )
    g.add_argument(
        "--use_gradient_checkpointing",
        action="store_true",
        help="recompute each encoder layer in the backward pass (memory only, same numbers)",
    )
    g = p.add_argument_group("negatives")
    g.add_argument(
        "--hardneg_path", required=True, help="hard_negative.json written by inference.py --gen_hardneg"
    )
    add_train_split_arg(g, recorded=True)
    g.add_argument(
        "--hardneg_topk",
        type=POSITIVE,
        default=200,
        help="sample hard negatives from the first k entries of each list",
    )
    g.add_argument(
        "--negatives_x_device",
        action="store_true",
        help="under torchrun, score each rank's queries against the positives and hard negatives of "
        "all ranks (off: each rank's micro-batch alone, the paper's per-GPU semantics)",
    )
    g = p.add_argument_group("optimisation (docs/training.md#optimizer)")
    g.add_argument("--optimizer_str", choices=["lamb", "adamw"], default="lamb", help="optimizer")
    g.add_argument("--learning_rate", type=POSITIVE_FLOAT, default=1e-4, help="peak learning rate")
    g.add_argument(
        "--weight_decay",
        type=number(float, 0),
        default=0.01,
        help="decay of every parameter whose name has neither 'bias' nor 'LayerNorm.weight'",
    )
    g.add_argument("--adam_beta1", type=number(float, 0, 1), default=0.9, help="AdamW beta1 (LAMB uses 0.9)")
    g.add_argument(
        "--adam_beta2", type=number(float, 0, 1), default=0.999, help="AdamW beta2 (LAMB uses 0.999)"
    )
    g.add_argument("--adam_epsilon", type=POSITIVE_FLOAT, default=1e-8, help="epsilon of both optimizers")
    g.add_argument(
        "--max_grad_norm",
        type=number(float, 0, low_open=True, allow=(-1,)),
        default=1.0,
        help="clipping threshold; -1 disables clipping",
    )
    g.add_argument(
        "--gradient_accumulation_steps", type=POSITIVE, default=1, help="micro-batches per optimizer step"
    )
    g.add_argument(
        "--num_train_epochs",
        type=POSITIVE,
        default=25,
        help="epochs of the LR schedule's horizon, and epochs run unless --epochs_to_run is set",
    )
    g.add_argument(
        "--epochs_to_run",
        type=POSITIVE,
        default=None,
        help="stop after this many epochs with the schedule of --num_train_epochs (README evaluates epoch 4)",
    )
    g.add_argument(
        "--warmup_steps", type=NON_NEGATIVE, default=1000, help="linear warm-up, in optimizer steps"
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--output_dir",
        default="./data/models",
        help=(
            "checkpoints go to "
            "OUTPUT_DIR/epoch-{e}-{max_seg_length}-{max_seg_num}-{max_bsize}-{class}{postfix}"
        ),
    )
    g.add_argument("--postfix", default="", help="appended to checkpoint folder names")
    g.add_argument("--logging_dir", default="./data/log", help="TensorBoard event files")
    g.add_argument("--logging_steps", type=POSITIVE, default=200, help="log every N micro-steps")
    g.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="replace existing checkpoint folders of this run instead of refusing to start",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest epoch checkpoint of this run (optimizer, scheduler, RNG, Late-Cache)",
    )
    return p


def build_inference_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Encode every segment, search exactly, rank documents by their best segment, "
        "evaluate (docs/retrieval.md)."
    )
    add_data_args(p, query_length_default=32)
    add_segment_args(p, seg_length_default=512, seg_num_default=4, max_bsize_default=100)
    g = p.add_argument_group("model")
    g.add_argument("--model_path", required=True, help="checkpoint folder")
    g.add_argument(
        "--model_class",
        default=None,
        help="model class; default: the class recorded in the checkpoint, else SeDR",
    )
    g.add_argument("--eval_batch_size", type=POSITIVE, default=32, help="queries per encoding/search batch")
    g = add_retrieval_args(p, "max_seg_length")
    g.add_argument(
        "--gen_hardneg",
        action="store_true",
        help="also write hard negatives of every training query to --hardneg_path",
    )
    g.add_argument("--hardneg_path", default="./data/hard_negative.json", help="where --gen_hardneg writes")
    add_train_split_arg(g, recorded=False)
    add_evaluation_args(p)
    g.add_argument("--num_shards", type=POSITIVE, default=1, help="encode only shard --shard_id of this many")
    g.add_argument(
        "--shard_id", type=NON_NEGATIVE, default=0, help="which contiguous document range to encode"
    )
    add_runtime_args(p)
    return p


def add_evaluation_args(parser):
    """Which splits inference evaluates and with which measures (docs/own-collection.md#metrics)."""
    g = parser.add_argument_group("evaluation")
    g.add_argument(
        "--eval_splits",
        type=split_names,
        default=None,
        help="preprocessed splits to rank and evaluate, comma-separated; default: MS MARCO's dev, test, "
        "2020test (those present), or every split of a collection but --train_split",
    )
    g.add_argument(
        "--metrics",
        default=None,
        help="ir_measures names for every evaluated split, comma-separated (e.g. nDCG@10,R@100,MRR@10); "
        "default: dev MRR@100 and Recall@5,10,30,50,100, other splits nDCG@10, R@100, Judged@10",
    )
    g.add_argument(
        "--judged_only",
        action="store_true",
        help="score the rankings without their unjudged documents (condensed lists; Judged@k on the full "
        "rankings)",
    )
    return g


def build_adore_parser() -> argparse.ArgumentParser:
    p = _parser("ADORE: fine-tune the query encoder against a frozen segment index (docs/adore.md).")
    g = p.add_argument_group("data")
    g.add_argument("--init_path", required=True, help="trained checkpoint (its own model class is loaded)")
    g.add_argument("--pembed_dir", required=True, help="folder with passages.memmap and passages-id.memmap")
    g.add_argument("--model_save_dir", required=True, help="where improved checkpoints are saved")
    g.add_argument("--log_dir", required=True, help="TensorBoard event files")
    g.add_argument("--preprocess_dir", required=True, help="folder written by SeDR_preprocess.py")
    g.add_argument(
        "--max_seq_length", type=QUERY_LENGTH, default=64, help="query tokens in training and evaluation"
    )
    g.add_argument(
        "--metric_cut", type=POSITIVE, default=200, help="unique retrieved documents used per query"
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--per_gpu_batch_size", type=POSITIVE, default=32, help="queries per step")
    g.add_argument(
        "--gradient_accumulation_steps", type=POSITIVE, default=1, help="micro-batches per optimizer step"
    )
    g.add_argument("--learning_rate", type=POSITIVE_FLOAT, default=5e-6, help="peak learning rate (AdamW)")
    g.add_argument(
        "--adore_optimizer",
        choices=["original", "torch_adamw"],
        default="original",
        help="original: transformers 4.x AdamW as the original ran it (decay after the step, on the "
        "updated weights); torch_adamw: torch.optim.AdamW",
    )
    g.add_argument(
        "--weight_decay",
        type=number(float, 0),
        default=0.01,
        help="weight decay (no bias / LayerNorm.weight)",
    )
    g.add_argument("--adam_epsilon", type=POSITIVE_FLOAT, default=1e-8, help="AdamW epsilon")
    g.add_argument(
        "--max_grad_norm",
        type=number(float, 0, low_open=True, allow=(-1,)),
        default=1.0,
        help="clipping threshold",
    )
    g.add_argument(
        "--warmup_steps", type=NON_NEGATIVE, default=2000, help="linear warm-up, in optimizer steps"
    )
    g.add_argument("--num_train_epochs", type=POSITIVE, default=6, help="epochs")
    g.add_argument(
        "--save_steps",
        type=POSITIVE,
        default=3000,
        help="evaluate (and save if better) every N optimizer steps",
    )
    g.add_argument("--logging_steps", type=POSITIVE, default=1000, help="log every N optimizer steps")
    g = p.add_argument_group("devices")
    g.add_argument(
        "--model_gpu_index", type=NON_NEGATIVE, default=0, help="GPU of the query encoder (CPU if none)"
    )
    g.add_argument("--faiss_gpu_index", type=int, nargs="*", default=[], help="GPU ids of the faiss index")
    g.add_argument("--faiss_omp_num_threads", type=POSITIVE, default=32, help="faiss CPU threads")
    g.add_argument(
        "--search_backend",
        choices=SEARCH_BACKENDS,
        default="auto",
        help="faiss or torch exact search (as inference.py); auto: faiss with faiss-gpu, else torch",
    )
    g.add_argument("--no_cuda", action="store_true", help="run on CPU even when a GPU is visible")
    g.add_argument("--seed", type=int, default=42, help="seed")
    g = p.add_argument_group("output")
    g.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="move this run's earlier checkpoints in --model_save_dir to a dated backup and start over",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue this run from its last completed epoch (state kept in --model_save_dir)",
    )
    return p


def _flag_error(message: str):
    return SeDRInputError(f"bad flags: {message}")


def _validate_common(args) -> None:
    if args.fp16 and args.bf16:
        raise _flag_error("--fp16 and --bf16 are exclusive")
    if "max_seg_length" in args:
        reserve = MULTI_SEGMENT_RESERVE if args.max_seg_num > 1 else SINGLE_SEGMENT_RESERVE
        if args.max_seg_length <= reserve:
            raise _flag_error(
                f"--max_seg_length {args.max_seg_length} leaves no content tokens with "
                f"--max_seg_num {args.max_seg_num} ({reserve} tokens are reserved); use at least "
                f"{reserve + 1}"
            )
    if "max_doc_length" in args and args.max_doc_length <= SINGLE_SEGMENT_RESERVE:
        raise _flag_error(
            f"--max_doc_length must be >= {SINGLE_SEGMENT_RESERVE + 1} (CLS and EOS are reserved)"
        )


def validate_train_args(args) -> None:
    """Cross-flag checks; each error says how to fix the command."""
    _validate_common(args)
    if args.epochs_to_run is not None and args.epochs_to_run > args.num_train_epochs:
        raise _flag_error(
            f"--epochs_to_run {args.epochs_to_run} exceeds --num_train_epochs {args.num_train_epochs}"
        )
    if args.resume and args.overwrite_output_dir:
        raise _flag_error("--resume and --overwrite_output_dir are exclusive")


def validate_inference_args(args) -> None:
    _validate_common(args)
    if "num_shards" in args and args.shard_id >= args.num_shards:
        raise _flag_error(f"--shard_id must lie in 0..{args.num_shards - 1} (--num_shards {args.num_shards})")


def validate_adore_args(args) -> None:
    if args.resume and args.overwrite_output_dir:
        raise _flag_error("--resume and --overwrite_output_dir are exclusive")


def add_document_args(
    parser, *, doc_length_default: int | None, seg_num_default: int | None, max_bsize_default: int
):
    """SeDR-Longformer's row flags: one ``max_doc_length`` row per document, ``M`` global CLS
    (docs/longformer.md#longformer-rows)."""
    g = parser.add_argument_group("documents (docs/longformer.md)")
    g.add_argument(
        "--max_doc_length",
        type=POSITIVE,
        required=doc_length_default is None,
        default=doc_length_default,
        help="document row length, CLS and EOS included (README 2048; content = max_doc_length-2)",
    )
    g.add_argument(
        "--max_seg_num",
        type=POSITIVE,
        required=seg_num_default is None,
        default=seg_num_default,
        help="global CLS positions 0, 512, ... = vectors per document",
    )
    g.add_argument(
        "--max_bsize",
        type=POSITIVE,
        default=max_bsize_default,
        help="documents per forward pass (positives in training)",
    )
    return g


def build_longformer_train_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Train SeDR-Longformer (docs/longformer.md#longformer-training): "
        "the SeDR loop over one 2048-token row per document."
    )
    add_data_args(p)
    add_document_args(p, doc_length_default=None, seg_num_default=None, max_bsize_default=512)
    add_train_args(p, model_class=False)
    add_runtime_args(p)
    return p


def build_longformer_inference_parser() -> argparse.ArgumentParser:
    p = _parser(
        "Encode SeDR-Longformer document vectors, search, evaluate "
        "(docs/longformer.md#longformer-rows-per-document)."
    )
    add_data_args(p, query_length_default=32)
    add_document_args(p, doc_length_default=512, seg_num_default=4, max_bsize_default=50)
    g = p.add_argument_group("model")
    g.add_argument("--model_path", required=True, help="SeDR-Longformer checkpoint folder")
    g.add_argument("--eval_batch_size", type=POSITIVE, default=32, help="queries per encoding/search batch")
    add_retrieval_args(p, "max_doc_length")
    add_evaluation_args(p)
    add_runtime_args(p)
    return p
