"""``python -m SeDR.search MODEL INDEX "query" [--k 10]``: rank an index's documents by their best segment
(docs/your-documents.md)."""

from __future__ import annotations

import argparse

from SeDR.api.index_folder import read_index_info
from SeDR.api.retriever import Hit
from SeDR.cli.flags import POSITIVE, Parser
from SeDR.cli.retriever_flags import QUIET_LOGGERS, add_retriever_args, retriever_from_args
from SeDR.core.constants import SEARCH_BACKENDS
from SeDR.core.errors import SeDRInputError, check_model_folder, exit_on_input_error
from SeDR.core.runtime import setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m SeDR.search",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Search an index folder written by `python -m SeDR.index`; prints rank, id, score, the "
        "best segment and its first words.",
    )
    p.add_argument("model", metavar="MODEL", help="the checkpoint that built the index")
    p.add_argument("index", metavar="INDEX", help="index folder")
    p.add_argument("queries", metavar="QUERY", nargs="+", help="one or more queries")
    p.add_argument("--k", type=POSITIVE, default=10, help="documents listed per query")
    p.add_argument("--words", type=POSITIVE, default=12, help="words of the best segment shown")
    p.add_argument("--faiss_gpus", type=int, nargs="*", default=None, help="GPU ids of the search index")
    p.add_argument(
        "--search_backend",
        choices=SEARCH_BACKENDS,
        default="auto",
        help="exact search by faiss or by torch (same rankings); auto as SeDR/inference.py",
    )
    add_retriever_args(p, segments=False)  # the segment shape is the index's
    return p


def format_hits(query: str, hits: list[Hit], texts: list[str | None], words: int) -> str:
    width = max([len(h.doc_id) for h in hits] + [2])
    lines = [f"query: {query}", f"{'rank':>4}  {'id':<{width}}  {'score':>10}  {'seg':>3}  text"]
    for rank, (hit, text) in enumerate(zip(hits, texts), 1):
        shown = " ".join((text or "").split()[:words])
        lines.append(f"{rank:>4}  {hit.doc_id:<{width}}  {hit.score:>10.4f}  {hit.best_segment:>3}  {shown}")
    return "\n".join(lines)


@exit_on_input_error
def main(argv: list[str] | None = None) -> list[list[Hit]]:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=QUIET_LOGGERS)
    empty = [n for n, q in enumerate(args.queries, 1) if not q.strip()]
    if empty:
        raise SeDRInputError(
            f"QUERY {empty[0]} of {len(args.queries)} is empty or only spaces: there is nothing to rank "
            "the documents by; give every query some words"
        )
    check_model_folder(args.model)  # before the index is read
    info = read_index_info(args.index)
    retriever = retriever_from_args(
        args,
        args.model,
        model_class=args.model_class or info.get("model_class"),
        max_seg_length=info.get("seg_length"),
        max_seg_num=info.get("max_seg_num"),
    )
    index = retriever.load_index(args.index)
    results = retriever.search(
        index, args.queries, k=args.k, faiss_gpus=args.faiss_gpus, search_backend=args.search_backend
    )
    for query, hits in zip(args.queries, results):
        texts = [retriever.segment_text(index, h.doc_id, h.best_segment) for h in hits]
        print(format_hits(query, hits, texts, args.words) + "\n")
    return results
