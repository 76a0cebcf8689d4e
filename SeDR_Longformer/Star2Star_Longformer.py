"""Convert the STAR checkpoint into a SeDR-Longformer initialisation
(docs/longformer.md#longformer-conversion).

    python SeDR_Longformer/Star2Star_Longformer.py          # ./data/star -> ./data/starlongformer

The command is :mod:`SeDR.cli.convert_longformer`.
"""

from SeDR.cli.convert_longformer import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    main()
