"""``python -m SeDR.evaluate RUN QRELS [--metrics ...]``: any TREC run against any qrels, with the metric
contract of ``SeDR/inference.py`` (:mod:`SeDR.cli.evaluate`).

``python SeDR/train.py`` puts ``SeDR/`` first on ``sys.path``, where this file shadows a top-level package
named ``evaluate`` (Hugging Face's). Nothing the project imports (torch, transformers, tokenizers,
ir_measures, tensorboard, faiss, bm25s) imports ``evaluate``: a search of their sources finds no such import.
"""

from SeDR.cli.evaluate import main

if __name__ == "__main__":
    main()
