"""Metrics and ``metrics.json`` (docs/retrieval.md#metrics-contract).

Metric contract (also recorded in every ``metrics.json``):

* MS MARCO dev: MRR@100 (``RR@100``) and Recall@{5,10,30,50,100} (``R@k`` = |rel ∩ top-k| / |rel|),
  relevant = qrels ``rel >= 1`` (dev qrels are all 1), averaged over **all** judged queries; a
  judged query without a ranking counts 0 (the original divides by the 5,193 dev queries).
* TREC-DL 2019/2020: ``nDCG@10`` with graded gains (trec_eval ``ndcg_cut.10``), ``R@100`` with
  ``rel >= 1`` relevant (``rel = 0`` lines are judged-non-relevant), ``Judged@10``; averaged over all
  judged queries (``trec_eval -c``).
* Evaluator: ``ir_measures`` (pytrec_eval-terrier backend for nDCG/R), no external binary.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple

from SeDR.core.constants import MRR_CUTOFF, SEGMENT_HITS, TREC_DOCS_KEPT
from SeDR.core.outputs import atomic_write_text, writing
from SeDR.data.preprocess_folder import iter_qrels
from SeDR.retrieval.ranking import (
    DEFAULT_RUN_TAG,
    TIE_RULE,
    OriginalIds,
    Rankings,
    Run,
    rankings_to_run,
    write_msmarco_run,
    write_trec_run,
)

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]

# Dev recall cut-offs and TREC-DL measures (docs/retrieval.md#dev-metrics, #trec-metrics).
DEV_RECALL_CUTOFFS = (5, 10, 30, 50, 100)
NDCG_CUTOFF = 10
TREC_RECALL_CUTOFF = 100
JUDGED_CUTOFF = 10
RELEVANCE_THRESHOLD = 1
# Which metric family each preprocessed split gets.
SPLIT_KINDS = {"dev": "msmarco", "test": "trec", "2020test": "trec"}
SPLIT_LABELS = {"dev": "MS MARCO dev", "test": "TREC-DL 2019", "2020test": "TREC-DL 2020"}


# --------------------------------------------------------------------------------------------
# Qrels
# --------------------------------------------------------------------------------------------


def read_qrels(path: str | Path) -> Qrels:
    """TREC qrels ``qid iter docid rel`` (offset-space ``{split}-qrel.tsv`` or original-id files).

    Every line is kept, ``rel = 0`` included (judged non-relevant: needed by ``Judged@10``, never
    counted as relevant). Ids stay strings.
    """
    qrels: Qrels = {}
    for q, d, rel in iter_qrels(path):
        qrels.setdefault(q, {})[d] = int(rel)
    return qrels


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def evaluator_name() -> str:
    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "unknown"

    return f"ir_measures {ver('ir_measures')} (pytrec_eval-terrier {ver('pytrec-eval-terrier')})"


def _aggregate(measures: dict, qrels: Qrels, run: Run) -> dict[str, float]:
    """``{name: mean over all qrels queries}``; judged queries missing from ``run`` count 0."""
    if not qrels:
        return {name: 0.0 for name in measures}
    import ir_measures  # here, not at import: training and encoding run without the metric library

    run = {q: docs for q, docs in run.items() if docs}
    values = ir_measures.calc_aggregate(list(measures.values()), qrels, run) if run else {}
    return {name: float(values.get(m, 0.0)) for name, m in measures.items()}


def msmarco_dev_metrics(qrels: Qrels, run: Run) -> dict[str, float]:
    """MRR@100 and Recall@{5,10,30,50,100} (docs/retrieval.md#dev-metrics)."""
    from ir_measures import RR, R

    measures = {f"MRR@{MRR_CUTOFF}": RR(rel=RELEVANCE_THRESHOLD) @ MRR_CUTOFF}
    measures.update({f"Recall@{k}": R @ k for k in DEV_RECALL_CUTOFFS})
    return _aggregate(measures, qrels, run)


def trec_dl_metrics(qrels: Qrels, run: Run) -> dict[str, float]:
    """nDCG@10 (graded), R@100 (rel >= 1) and Judged@10 (docs/retrieval.md#trec-metrics)."""
    from ir_measures import Judged, R, nDCG

    measures = {
        f"nDCG@{NDCG_CUTOFF}": nDCG @ NDCG_CUTOFF,
        f"R@{TREC_RECALL_CUTOFF}": R @ TREC_RECALL_CUTOFF,
        f"Judged@{JUDGED_CUTOFF}": Judged @ JUDGED_CUTOFF,
    }
    return _aggregate(measures, qrels, run)


def split_metrics(kind: str, qrels: Qrels, run: Run) -> dict[str, float]:
    if kind == "msmarco":
        return msmarco_dev_metrics(qrels, run)
    if kind == "trec":
        return trec_dl_metrics(qrels, run)
    raise ValueError(f"unknown metric kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def metric_contract(qrels_files: Mapping[str, str], depths: Mapping[str, int]) -> dict:
    return {
        "evaluator": evaluator_name(),
        "relevance_threshold": {
            "binary_measures": f"rel >= {RELEVANCE_THRESHOLD}",
            "nDCG": "graded gains = rel (0..3), trec_eval ndcg_cut",
        },
        "averaging": "mean over all judged queries in the qrels; judged queries without a ranking count 0 "
        "(trec_eval -c; MS MARCO dev divides by all dev queries)",
        "measures": {
            "msmarco": [f"MRR@{MRR_CUTOFF}"] + [f"Recall@{k}" for k in DEV_RECALL_CUTOFFS],
            "trec": [f"nDCG@{NDCG_CUTOFF}", f"R@{TREC_RECALL_CUTOFF}", f"Judged@{JUDGED_CUTOFF}"],
        },
        "ranking_depth": dict(depths),
        "segment_hits_per_query": SEGMENT_HITS,
        "ties": TIE_RULE,
        "qrels": dict(qrels_files),
    }


def write_metrics_json(path: str | Path, metrics: Mapping) -> None:
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | Path, record: Mapping) -> None:
    """One JSON object per line (the original appended objects without separators,
    docs/deviations.md#dev-res-jsonl)."""
    with writing(path), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


TABLE_COLUMNS = (
    "MRR@100",
    "Recall@5",
    "Recall@10",
    "Recall@30",
    "Recall@50",
    "Recall@100",
    "nDCG@10",
    "R@100",
    "Judged@10",
)


def format_results_table(metrics: Mapping) -> str:
    """A Markdown table, one row per evaluated split, blank cells where a metric does not apply."""
    splits = [s for s in metrics.get("splits", {})]
    cols = [c for c in TABLE_COLUMNS if any(c in metrics["splits"][s] for s in splits)]
    lines = ["| split | queries | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for s in splits:
        m = metrics["splits"][s]
        cells = [f"{m[c]:.4f}" if c in m else "" for c in cols]
        lines.append(f"| {SPLIT_LABELS.get(s, s)} | {m['num_judged_queries']} | " + " | ".join(cells) + " |")
    if metrics.get("selection_score") is not None:
        lines.append(f"\nmodel-selection value (dev MRR@100 + Recall@100): {metrics['selection_score']:.4f}")
    return "\n".join(lines)


class Evaluation(NamedTuple):
    metrics: dict
    selection_score: float | None  # dev MRR@100 + dev Recall@100 (ADORE model selection), None without dev


def evaluate_rankings(
    rankings_by_split: Mapping[str, Rankings],
    preprocess_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    run_tag: str = DEFAULT_RUN_TAG,
    qrels_paths: Mapping[str, str | Path] | None = None,
    write_runs: bool = True,
    original_ids: OriginalIds | None = None,
    offset_runs: bool = False,
    history_record: Mapping | None = None,
    model_record: Mapping | None = None,
) -> Evaluation:
    """Evaluate per-split rankings, write run files and ``metrics.json``; the inference/ADORE entry point.

    Args:
        rankings_by_split: ``{"dev"|"test"|"2020test": {query offset: [(doc offset, score), ...]}}``;
            dev lists may hold 101 documents (MRR/Recall cut at 100), TREC lists 100.
        preprocess_dir: folder with ``{split}-qrel.tsv`` and the id pickles.
        out_dir: where ``{split}.trec`` (original ids), ``{split}.msmarco.tsv`` (top 100),
            optionally ``{split}.offsets.trec``, ``metrics.json`` and ``res.jsonl`` go; ``None``
            writes nothing.
        qrels_paths: per-split qrels overriding ``{preprocess_dir}/{split}-qrel.tsv``, in offset space.
        history_record: extra fields (e.g. the ADORE step) for the line appended to ``res.jsonl``.
        model_record: what produced the rankings (model path, class, fingerprint, ...),
            kept in ``metrics.json``.

    Returns:
        ``Evaluation(metrics, selection_score)``.
    """
    preprocess_dir = Path(preprocess_dir)
    unknown = sorted(set(rankings_by_split) - set(SPLIT_KINDS))
    if unknown:
        raise ValueError(f"no metrics defined for split(s) {unknown}; known: {sorted(SPLIT_KINDS)}")
    splits = [s for s in SPLIT_KINDS if s in rankings_by_split]
    qrels_files = {s: str((qrels_paths or {}).get(s, preprocess_dir / f"{s}-qrel.tsv")) for s in splits}
    results: dict[str, dict] = {}
    for s in splits:
        rankings = rankings_by_split[s]
        qrels = read_qrels(qrels_files[s])
        values = split_metrics(SPLIT_KINDS[s], qrels, rankings_to_run(rankings))
        results[s] = {
            **values,
            "num_judged_queries": len(qrels),
            "num_ranked_queries": sum(1 for r in rankings.values() if r),
        }
    selection = None
    if "dev" in results:
        selection = results["dev"][f"MRR@{MRR_CUTOFF}"] + results["dev"]["Recall@100"]
    depths = {s: max((len(r) for r in rankings_by_split[s].values()), default=0) for s in splits}
    # flat names in the style of the original res.json ("dev_MRR@100", "test_nDCG@10", ...)
    scores = {f"{s}_{k}": v for s in splits for k, v in results[s].items() if not k.startswith("num_")}
    metrics = {
        "scores": scores,
        "splits": results,
        "selection_score": selection,
        "model": dict(model_record or {}),
        "contract": metric_contract(qrels_files, depths),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if write_runs and splits:
            ids = original_ids or OriginalIds.load(preprocess_dir, splits)
            for s in splits:
                write_trec_run(out_dir / f"{s}.trec", rankings_by_split[s], ids, s, run_tag)
                write_msmarco_run(out_dir / f"{s}.msmarco.tsv", rankings_by_split[s], ids, s, TREC_DOCS_KEPT)
                if offset_runs:
                    write_trec_run(out_dir / f"{s}.offsets.trec", rankings_by_split[s], None, None, run_tag)
            metrics["run_files"] = {s: {"trec": f"{s}.trec", "msmarco": f"{s}.msmarco.tsv"} for s in splits}
        write_metrics_json(out_dir / "metrics.json", metrics)
        append_jsonl(
            out_dir / "res.jsonl",
            {
                **(history_record or {}),
                "splits": results,
                "selection_score": selection,
                "model_fingerprint": (model_record or {}).get("model_fingerprint"),
            },
        )
    for s in splits:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in results[s].items() if not k.startswith("num_"))
        logger.info("%s (%d judged queries): %s", SPLIT_LABELS[s], results[s]["num_judged_queries"], shown)
    if selection is not None and not math.isfinite(selection):
        logger.warning("non-finite model-selection value %s", selection)
    return Evaluation(metrics, selection)
