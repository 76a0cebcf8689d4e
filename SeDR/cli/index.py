"""``python -m SeDR.index MODEL DOCS OUT``: encode a document collection into an index folder
(docs/your-documents.md)."""

from __future__ import annotations

import argparse

from SeDR.api.retriever import DEFAULT_MAX_BSIZE, DocumentIndex
from SeDR.cli.flags import POSITIVE, Parser
from SeDR.cli.retriever_flags import QUIET_LOGGERS, add_retriever_args, retriever_from_args
from SeDR.core.errors import exit_on_input_error
from SeDR.core.runtime import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m SeDR.index",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Encode every segment of your documents with a trained model into an index folder "
        "that `python -m SeDR.search` and `SeDR.Retriever` search.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="checkpoint folder (any model class), a STAR folder or a BERT/RoBERTa encoder",
    )
    p.add_argument(
        "docs",
        metavar="DOCS",
        help="a .tsv in MS MARCO Document's layout (id, url, title, body), a "
        ".jsonl with id and text, or a folder of .txt files",
    )
    p.add_argument("out", metavar="OUT", help="the index folder to create (absent or empty)")
    add_retriever_args(p)
    p.add_argument("--max_bsize", type=POSITIVE, default=DEFAULT_MAX_BSIZE, help="segments per forward pass")
    p.add_argument(
        "--no_texts", action="store_true", help="keep no document texts (search then shows no text)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="move a non-empty OUT to a dated backup OUT.bak-<date> instead of refusing",
    )
    return p


@exit_on_input_error
def main(argv: list[str] | None = None) -> DocumentIndex:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=QUIET_LOGGERS)
    retriever = retriever_from_args(args, args.model)
    index = retriever.index(
        args.docs,
        out=args.out,
        overwrite=args.overwrite,
        batch_size=args.max_bsize,
        keep_texts=not args.no_texts,
    )
    print(f"indexed {len(index)} documents ({index.num_rows} segment vectors) into {args.out}")
    return index
