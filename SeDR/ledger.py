"""``python -m SeDR.ledger``: the paper's numbers vs this project's ``metrics.json`` files
(:mod:`SeDR.tools.ledger`)."""

from SeDR.tools.ledger import main

if __name__ == "__main__":
    raise SystemExit(main())
