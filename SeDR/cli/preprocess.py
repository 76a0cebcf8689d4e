"""Tokenise MS MARCO Document + TREC-DL, or your own collection, into a preprocess folder.

    python SeDR_preprocess.py --data_path ./data --max_seq_length 2048
    python SeDR_preprocess.py --corpus beir/corpus.jsonl --split train=beir/queries.jsonl \
        --split test=beir/queries.jsonl:beir/qrels/test.tsv --output_dir ./data/my-preprocess

Reruns on a complete output do nothing; see :mod:`SeDR.data.preprocessing` for the outputs and the
bad-input policy, docs/own-collection.md#preprocess for a collection's files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from SeDR.cli.flags import POSITIVE, QUERY_LENGTH, Parser
from SeDR.core.constants import DEFAULT_MAX_DOC_CHARACTER, DEFAULT_MAX_QUERY_LENGTH, DEFAULT_MAX_SEQ_LENGTH
from SeDR.core.errors import SeDRInputError, exit_on_input_error
from SeDR.core.runtime import setup_logging
from SeDR.data.ir_datasets_files import IrDatasetsSource
from SeDR.data.preprocessing import (
    CollectionSource,
    Settings,
    default_threads,
    parse_split,
    preprocess,
    preprocess_collection,
)
from SeDR.modeling.backbones import check_backbone_folder


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--model_name_or_path",
        default="roberta-base",
        help="tokenizer (name or folder); emulated as transformers-2.8's lower-cased slow one",
    )
    parser.add_argument(
        "--max_seq_length",
        type=POSITIVE,
        default=DEFAULT_MAX_SEQ_LENGTH,
        help="tokens stored per document (rows are padded with 0)",
    )
    parser.add_argument(
        "--max_query_length",
        type=QUERY_LENGTH,
        default=DEFAULT_MAX_QUERY_LENGTH,
        help="tokens stored per query, CLS and EOS included",
    )
    parser.add_argument(
        "--max_doc_character",
        type=POSITIVE,
        default=DEFAULT_MAX_DOC_CHARACTER,
        help="characters of 'url</s>title</s>body' kept before tokenisation",
    )
    parser.add_argument("--data_path", default="./data", help="folder with the files of download_data.sh")
    parser.add_argument(
        "--threads",
        type=POSITIVE,
        default=default_threads(),
        help="tokenizer processes (the original used 32)",
    )
    parser.add_argument("--output_dir", default=None, help="output folder (default: <data_path>/preprocess)")
    g = parser.add_argument_group(
        "your own collection (docs/own-collection.md), instead of --data_path's files"
    )
    g.add_argument(
        "--corpus",
        default=None,
        help="documents: .jsonl with _id (or id), text and optional title/url (BEIR); "
        ".tsv (id, url, title, body); or a folder of .txt files",
    )
    g.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="NAME=QUERIES[:QRELS]",
        help="a named split (repeat for more): queries .jsonl/.tsv and TREC or BEIR qrels "
        "(default qrels: QUERIES' folder/qrels/NAME.tsv, the BEIR layout)",
    )
    g.add_argument(
        "--ir_datasets",
        action="append",
        default=[],
        metavar="[NAME=]ID",
        help="read the corpus (first id) and splits (ids with queries and qrels) through the optional "
        "ir_datasets package",
    )
    return parser


@exit_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging()
    logging.getLogger(__name__).info("flags: %s", vars(args))
    check_backbone_folder(args.model_name_or_path)  # refuse an unsupported family before tokenizing
    settings = Settings(
        args.model_name_or_path, args.max_seq_length, args.max_query_length, args.max_doc_character
    )
    source = collection_source(args)
    if source is None:
        preprocess(args.data_path, args.output_dir, settings, threads=args.threads)
        return
    output_dir = args.output_dir or Path(args.data_path) / "preprocess"
    preprocess_collection(source, output_dir, settings, threads=args.threads)


def collection_source(args) -> CollectionSource | IrDatasetsSource | None:
    """The collection the flags describe; None for the MS MARCO files of ``--data_path``."""
    if args.ir_datasets:
        if args.corpus or args.split:
            raise SeDRInputError(
                "bad flags: --ir_datasets reads the corpus and splits; drop --corpus and --split"
            )
        return IrDatasetsSource.from_specs(args.ir_datasets)
    if not args.corpus and not args.split:
        return None
    if not args.corpus or not args.split:
        raise SeDRInputError(
            "bad flags: a collection needs --corpus and at least one --split NAME=QUERIES[:QRELS]"
        )
    return CollectionSource(Path(args.corpus), tuple(parse_split(s) for s in args.split))
