"""``python -m SeDR.index MODEL DOCS OUT``: encode your documents into an index folder
(:mod:`SeDR.cli.index`)."""

import logging

from SeDR.cli.index import main

if __name__ == "__main__":
    # Loading a plain encoder logs every renamed tensor at INFO: noise on a terminal.
    logging.getLogger("SeDR.modeling.checkpoint").setLevel(logging.WARNING)
    main()
