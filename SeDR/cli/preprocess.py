"""Tokenise MS MARCO Document + TREC-DL into ``<data_path>/preprocess``.

    python SeDR_preprocess.py --data_path ./data --max_seq_length 2048

Reruns on a complete output do nothing; see :mod:`SeDR.data.preprocessing` for the outputs and the
bad-input policy.
"""

from __future__ import annotations

import argparse
import logging

from SeDR.cli.flags import POSITIVE, QUERY_LENGTH, Parser
from SeDR.core.constants import DEFAULT_MAX_DOC_CHARACTER, DEFAULT_MAX_QUERY_LENGTH, DEFAULT_MAX_SEQ_LENGTH
from SeDR.core.errors import exit_on_input_error
from SeDR.core.runtime import setup_logging
from SeDR.data.preprocessing import Settings, default_threads, preprocess
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
    preprocess(args.data_path, args.output_dir, settings, threads=args.threads)
