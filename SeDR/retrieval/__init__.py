"""From a model to rankings: corpus and query encoding, segment-embedding files, exact search,
best-segment ranking and run files, hard negatives, metrics (docs/retrieval.md).

Layer 3: imports :mod:`SeDR.core`, :mod:`SeDR.data` and :mod:`SeDR.modeling`.
"""
