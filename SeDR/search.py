"""``python -m SeDR.search MODEL INDEX "query"``: rank an index's documents by their best segment
(:mod:`SeDR.cli.search`)."""

import logging

from SeDR.cli.search import main

if __name__ == "__main__":
    # Loading a plain encoder logs every renamed tensor at INFO: noise on a terminal.
    logging.getLogger("SeDR.modeling.checkpoint").setLevel(logging.WARNING)
    main()
