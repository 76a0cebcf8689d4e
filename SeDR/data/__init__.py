"""From raw files to batches: MS MARCO/TREC and own-document readers, the STAR tokenizer and the
tokenizer record, preprocessing, the preprocess-folder readers, segmentation, batch types, row
groups, sampling and collation (docs/data.md, docs/segmentation.md).

Layer 1: imports only :mod:`SeDR.core`.
"""
