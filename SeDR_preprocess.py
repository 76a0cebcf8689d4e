"""Tokenise MS MARCO Document + TREC-DL into ``<data_path>/preprocess`` (README).

    python SeDR_preprocess.py --data_path ./data --max_seq_length 2048

The command is :mod:`SeDR.cli.preprocess`; the outputs and the bad-input policy: docs/data.md.
"""

from SeDR.cli.preprocess import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
