"""``python -m SeDR.search MODEL INDEX "query"``: rank an index's documents by their best segment
(:mod:`SeDR.cli.search`)."""

from SeDR.cli.search import main

if __name__ == "__main__":
    main()
