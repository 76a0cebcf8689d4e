"""``python -m SeDR.index MODEL DOCS OUT``: encode your documents into an index folder
(:mod:`SeDR.cli.index`)."""

from SeDR.cli.index import main

if __name__ == "__main__":
    main()
