"""Learning: optimizers and the schedule, the training loop, ADORE (docs/training.md, docs/adore.md).

Layer 4: imports :mod:`SeDR.core`, :mod:`SeDR.data`, :mod:`SeDR.modeling` and :mod:`SeDR.retrieval`
(ADORE searches the frozen index; training reads hard negatives).
"""
