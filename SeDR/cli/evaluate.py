"""``python -m SeDR.evaluate RUN QRELS``: any TREC run against any TREC or BEIR qrels under the metric
contract of ``SeDR/inference.py``; prints the table and writes ``metrics.json``
(docs/own-collection.md#evaluate)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from SeDR.cli.flags import POSITIVE, Parser
from SeDR.core.errors import exit_on_input_error
from SeDR.core.outputs import backup_name
from SeDR.core.runtime import setup_logging
from SeDR.retrieval.evaluation import (
    evaluate_run_file,
    format_results_table,
    parse_measures,
    write_metrics_json,
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m SeDR.evaluate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Evaluate a TREC run (qid Q0 docid rank score tag) against TREC (qid iter docid rel) or "
        "BEIR (query-id corpus-id score) qrels, as SeDR/inference.py does; prints the table, writes metrics.",
    )
    p.add_argument("run", metavar="RUN", help="TREC run file, e.g. ./data/evaluate/<model>-inf512-4/dev.trec")
    p.add_argument("qrels", metavar="QRELS", help="qrels file with the run's original ids")
    p.add_argument(
        "--metrics",
        default=None,
        help="ir_measures names, comma-separated (e.g. nDCG@10,R@100,MRR@10); default: the split's, as "
        "inference (dev: MRR@100 and Recall@5,10,30,50,100; any other split: nDCG@10, R@100, Judged@10)",
    )
    p.add_argument(
        "--split",
        default=None,
        help="split name that picks the default measures and names the metrics; default: the run file's "
        "name up to its first '.' (dev.trec -> dev)",
    )
    p.add_argument(
        "--depth", type=POSITIVE, default=None, help="cut every ranking to this many documents first"
    )
    p.add_argument(
        "--judged_only",
        action="store_true",
        help="score the rankings without their unjudged documents (condensed lists; Judged@k on the full "
        "rankings)",
    )
    p.add_argument(
        "--output",
        default=None,
        help="metrics file (default RUN.metrics.json; an existing one is kept as a backup)",
    )
    return p


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    setup_logging()
    split = args.split or Path(args.run).name.split(".", 1)[0] or "run"
    measures = parse_measures(args.metrics) if args.metrics else None
    metrics = evaluate_run_file(args.run, args.qrels, split, measures, args.depth, args.judged_only)
    print(format_results_table(metrics, labels={}))
    out = Path(args.output or f"{args.run}.metrics.json")
    if out.exists():
        backup = backup_name(out)
        os.replace(out, backup)
        logger.info("%s exists; the previous version is kept as %s", out, backup)
    write_metrics_json(out, metrics)
    logger.info("wrote %s", out)
    return metrics
