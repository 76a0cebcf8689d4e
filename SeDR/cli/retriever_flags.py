"""The flags ``python -m SeDR.index`` and ``python -m SeDR.search`` share, and the :class:`Retriever` they
describe."""

from __future__ import annotations

from SeDR.api.retriever import DEFAULT_QUERY_LENGTH, DEFAULT_SEG_LENGTH, DEFAULT_SEG_NUM, Retriever
from SeDR.cli.flags import POSITIVE, QUERY_LENGTH
from SeDR.core.errors import SeDRInputError
from SeDR.modeling import checkpoint

# Loading a plain encoder logs every renamed tensor at INFO: noise for someone searching documents.
QUIET_LOGGERS = (checkpoint.__name__,)


def add_retriever_args(parser, segments: bool = True) -> None:
    """The model flags of ``python -m SeDR.index`` and ``python -m SeDR.search``."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model_class", default=None, help="default: the class the checkpoint records, else STAR_MaxP"
    )
    if segments:
        g.add_argument(
            "--max_seg_length",
            type=POSITIVE,
            default=None,
            help=f"segment row budget Lraw (default: the training run's, else {DEFAULT_SEG_LENGTH})",
        )
        g.add_argument(
            "--max_seg_num",
            type=POSITIVE,
            default=None,
            help=f"segments per document M (default: the checkpoint's, else {DEFAULT_SEG_NUM})",
        )
    g.add_argument(
        "--max_query_length",
        type=QUERY_LENGTH,
        default=None,
        help=f"query tokens, CLS and EOS included (default: the training run's, else {DEFAULT_QUERY_LENGTH})",
    )
    g.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder or name (default: the model's, else its "
        "training run's --init_path, else roberta-base)",
    )
    g = parser.add_argument_group("runtime")
    g.add_argument("--no_cuda", action="store_true", help="run on CPU even when a GPU is visible")
    g.add_argument(
        "--fp16", action="store_true", help="float16 autocast on a GPU; on CPU: warn once, run fp32"
    )
    g.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast on a GPU; on CPU: warn once, run fp32"
    )


def retriever_from_args(args, model_path, **shape) -> Retriever:
    """A :class:`Retriever` from the flags of :func:`add_retriever_args` (``shape`` overrides them)."""
    options = {
        k: getattr(args, k, None)
        for k in ("model_class", "max_seg_length", "max_seg_num", "max_query_length")
    }
    options.update({k: v for k, v in shape.items() if v is not None})
    if args.fp16 and args.bf16:
        raise SeDRInputError("--fp16 and --bf16 exclude each other")
    return Retriever.from_pretrained(
        model_path,
        tokenizer=args.tokenizer,
        device="cpu" if args.no_cuda else None,
        fp16=args.fp16,
        bf16=args.bf16,
        **options,
    )
