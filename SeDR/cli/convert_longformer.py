"""Convert the STAR checkpoint into a SeDR-Longformer initialisation
(docs/longformer.md#longformer-conversion).

    python SeDR_Longformer/Star2Star_Longformer.py          # ./data/star -> ./data/starlongformer

* position table: ``max_doc_length + 2`` rows (2050); STAR's learned rows ``2..513`` are tiled into
  rows ``2..513, 514..1025, 1026..1537, 1538..2049``; rows 0 and 1 (1 = padding) are STAR's
  (the original left them uninitialised: docs/deviations.md#dev-longformer-position-rows);
* every layer keeps STAR's ``query/key/value``; ``query_global/key_global/value_global`` are copies;
* window 256 on each side for every layer (HF ``attention_window = 512``, both sides counted);
* STAR's ``embeddingHead`` and ``norm`` are copied; keys ``roberta.*``, ``embeddingHead.*``, ``norm.*``.

The result also initialises ``SeDR_Global_Attention`` (README), which keeps the global
projections and the first 514 position rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from SeDR.cli.flags import POSITIVE, Parser
from SeDR.core.errors import exit_on_input_error
from SeDR.core.runtime import setup_logging
from SeDR.modeling.longformer import (
    DEFAULT_MAX_DOC_LENGTH,
    DEFAULT_MAX_SEG_NUM,
    HF_ATTENTION_WINDOW,
    convert_star,
)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        description=" ".join(__doc__.split("\n\n")[0].split()),  # the summary, wrapped: first paragraph
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--star_path", default="./data/star", help="STAR checkpoint folder (DRhard release)")
    p.add_argument("--output_path", default="./data/starlongformer", help="where the conversion is written")
    p.add_argument(
        "--max_doc_length",
        type=POSITIVE,
        default=DEFAULT_MAX_DOC_LENGTH,
        help="longest document row; the position table gets max_doc_length + 2 rows",
    )
    p.add_argument(
        "--attention_window",
        type=POSITIVE,
        default=HF_ATTENTION_WINDOW,
        help="HF window counting both sides (512 = the original's one-sided 256)",
    )
    p.add_argument(
        "--max_seg_num",
        type=POSITIVE,
        default=DEFAULT_MAX_SEG_NUM,
        help="global CLS positions recorded in the config (the training flag overrides it)",
    )
    return p


@exit_on_input_error
def main(argv=None) -> Path:
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.attention_window % 2:
        build_parser().error("argument --attention_window: must be even (it counts both sides)")
    return convert_star(
        args.star_path,
        args.output_path,
        max_doc_length=args.max_doc_length,
        attention_window=args.attention_window,
        max_seg_num=args.max_seg_num,
    )
