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
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # imported where metrics are computed: training and encoding run without it
    import ir_measures

from SeDR.core.constants import EVAL_DOCS_KEPT, MRR_CUTOFF, SEGMENT_HITS, TREC_DOCS_KEPT
from SeDR.core.errors import SeDRInputError
from SeDR.core.outputs import atomic_write_text, writing
from SeDR.data.collection_files import read_judgements
from SeDR.data.preprocess_folder import iter_qrels
from SeDR.retrieval.ranking import (
    DEFAULT_RUN_TAG,
    TIE_RULE,
    OriginalIds,
    Rankings,
    Run,
    rankings_to_run,
    read_ranked_run,
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
JUDGED_ONLY_RULE = (
    "unjudged documents removed from every ranking before scoring; Judged@k on the full ranking"
)
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
    values = ir_measures.calc_aggregate(list(measures.values()), qrels, run) if run and measures else {}
    return {name: float(values.get(m, 0.0)) for name, m in measures.items()}


def msmarco_dev_metrics(qrels: Qrels, run: Run) -> dict[str, float]:
    """MRR@100 and Recall@{5,10,30,50,100} (docs/retrieval.md#dev-metrics)."""
    return _aggregate(default_measures("dev"), qrels, run)


def trec_dl_metrics(qrels: Qrels, run: Run) -> dict[str, float]:
    """nDCG@10 (graded), R@100 (rel >= 1) and Judged@10 (docs/retrieval.md#trec-metrics)."""
    return _aggregate(default_measures("test"), qrels, run)


def split_metrics(kind: str, qrels: Qrels, run: Run) -> dict[str, float]:
    if kind == "msmarco":
        return msmarco_dev_metrics(qrels, run)
    if kind == "trec":
        return trec_dl_metrics(qrels, run)
    raise ValueError(f"unknown metric kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Measures asked for by name (docs/own-collection.md#metrics)
# --------------------------------------------------------------------------------------------

Measures = dict[str, "ir_measures.Measure"]  # our name (as the user wrote it) -> ir_measures measure


def default_measures(split: str) -> Measures:
    """Today's measures: MS MARCO dev's for ``dev``, TREC-DL's for every other split name."""
    from ir_measures import RR, Judged, R, nDCG  # here: training and encoding run without it

    if SPLIT_KINDS.get(split, "trec") == "msmarco":
        return {
            f"MRR@{MRR_CUTOFF}": RR(rel=RELEVANCE_THRESHOLD) @ MRR_CUTOFF,
            **{f"Recall@{k}": R @ k for k in DEV_RECALL_CUTOFFS},
        }
    return {
        f"nDCG@{NDCG_CUTOFF}": nDCG @ NDCG_CUTOFF,
        f"R@{TREC_RECALL_CUTOFF}": R @ TREC_RECALL_CUTOFF,
        f"Judged@{JUDGED_CUTOFF}": Judged @ JUDGED_CUTOFF,
    }


def parse_measures(text: str, flag: str = "--metrics") -> Measures:
    """``"nDCG@10,R@100,MRR@10"``: ir_measures names, each checked to have a provider installed."""
    import ir_measures

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SeDRInputError(f"{flag} {text!r}: give ir_measures names such as nDCG@10,R@100,MRR@10")
    out: Measures = {}
    for name in names:
        if name in out:
            raise SeDRInputError(f"{flag}: {name} is given twice")
        try:
            out[name] = ir_measures.parse_measure(name)
        except (ValueError, NameError, SyntaxError, TypeError) as err:
            raise SeDRInputError(
                f"{flag}: {name!r} is not an ir_measures name ({err}); e.g. nDCG@10, R@100, MRR@10, AP, P@10"
            ) from None
    try:  # a provider (pytrec_eval, ...) must compute every measure: fail now, not after encoding
        ir_measures.calc_aggregate(list(out.values()), {"q": {"d": 1}}, {"q": {"d": 1.0}})
    except Exception as err:  # noqa: BLE001 - providers raise many kinds
        raise SeDRInputError(f"{flag}: ir_measures cannot compute {text!r} here ({err})") from None
    return out


def condensed(run: Run, qrels: Qrels) -> Run:
    """Each ranking without its unjudged documents (judged-only evaluation, Sakai's condensed lists)."""
    return {q: {d: v for d, v in docs.items() if d in qrels.get(q, {})} for q, docs in run.items()}


def ranking_depth(split: str, measures: Measures) -> int:
    """Documents kept per query: the split's usual depth (101 dev, else 100), or the largest cut-off asked."""
    cutoffs = [m.params.get("cutoff") for m in measures.values()]
    return max([EVAL_DOCS_KEPT.get(split, TREC_DOCS_KEPT)] + [c for c in cutoffs if isinstance(c, int)])


def compute_metrics(
    measures: Measures, qrels: Qrels, run: Run, judged_only: bool = False
) -> dict[str, float]:
    """``{name: mean over every judged query}``; judged queries missing from ``run`` count 0.

    ``judged_only``: every measure but ``Judged@k`` (which counts the unjudged) sees the condensed rankings.
    """
    if not judged_only:
        return _aggregate(measures, qrels, run)
    counts = {n: m for n, m in measures.items() if m.NAME == "Judged"}
    values = {
        **_aggregate({n: m for n, m in measures.items() if n not in counts}, qrels, condensed(run, qrels)),
        **_aggregate(counts, qrels, run),
    }
    return {n: values[n] for n in measures}


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def metric_contract(
    qrels_files: Mapping[str, str],
    depths: Mapping[str, int],
    measures: Mapping[str, Measures] | None = None,
    judged_only: bool = False,
) -> dict:
    """The contract recorded in ``metrics.json``; ``measures`` (per split) adds ``split_measures`` when a
    split's measures are not its defaults, ``judged_only`` a ``judged_only`` entry."""
    contract = {
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
    if measures and any(repr_measures(m) != repr_measures(default_measures(s)) for s, m in measures.items()):
        contract["split_measures"] = {s: repr_measures(m) for s, m in measures.items()}
    if judged_only:
        contract["judged_only"] = JUDGED_ONLY_RULE
    return contract


def repr_measures(measures: Measures) -> dict[str, str]:
    """``{our name: ir_measures' canonical name}``, e.g. ``{"MRR@10": "RR@10"}``."""
    return {name: str(m) for name, m in measures.items()}


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


def format_results_table(metrics: Mapping, labels: Mapping[str, str] = SPLIT_LABELS) -> str:
    """A Markdown table, one row per evaluated split, blank cells where a metric does not apply.

    ``labels``: row names by split (MS MARCO's by default; a collection's splits keep their names).
    """
    splits = [s for s in metrics.get("splits", {})]
    cols = [c for c in TABLE_COLUMNS if any(c in metrics["splits"][s] for s in splits)]
    for s in splits:  # measures asked for by name, in the order asked
        cols += [c for c in metrics["splits"][s] if c not in cols and not c.startswith("num_")]
    lines = ["| split | queries | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for s in splits:
        m = metrics["splits"][s]
        cells = [f"{m[c]:.4f}" if c in m else "" for c in cols]
        lines.append(f"| {labels.get(s, s)} | {m['num_judged_queries']} | " + " | ".join(cells) + " |")
    if metrics.get("selection_score") is not None:
        lines.append(f"\nmodel-selection value (dev MRR@100 + Recall@100): {metrics['selection_score']:.4f}")
    return "\n".join(lines)


class Evaluation(NamedTuple):
    metrics: dict
    selection_score: float | None  # dev MRR@100 + dev Recall@100 (ADORE model selection), None without dev


def split_result(measures: Measures, qrels: Qrels, run: Run, judged_only: bool = False) -> dict:
    """One split's entry of ``metrics.json``: its measures, judged queries and judged queries ranked."""
    return {
        **compute_metrics(measures, qrels, run, judged_only),
        "num_judged_queries": len(qrels),
        "num_ranked_queries": sum(1 for q, docs in run.items() if docs and q in qrels),
    }


def metrics_record(
    results: Mapping[str, dict],
    qrels_files: Mapping[str, str],
    depths: Mapping[str, int],
    measures: Mapping[str, Measures],
    model_record: Mapping | None = None,
    judged_only: bool = False,
) -> dict:
    """``metrics.json``'s content, the same for inference, ADORE and ``python -m SeDR.evaluate``."""
    selection = None
    dev = results.get("dev", {})
    if f"MRR@{MRR_CUTOFF}" in dev and "Recall@100" in dev:
        selection = dev[f"MRR@{MRR_CUTOFF}"] + dev["Recall@100"]
    # flat names in the style of the original res.json ("dev_MRR@100", "test_nDCG@10", ...)
    scores = {f"{s}_{k}": v for s in results for k, v in results[s].items() if not k.startswith("num_")}
    return {
        "scores": scores,
        "splits": dict(results),
        "selection_score": selection,
        "model": dict(model_record or {}),
        "contract": metric_contract(qrels_files, depths, measures, judged_only),
    }


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
    measures: Mapping[str, Measures] | None = None,
    judged_only: bool = False,
    labels: Mapping[str, str] = SPLIT_LABELS,
) -> Evaluation:
    """Evaluate per-split rankings, write run files and ``metrics.json``; the inference/ADORE entry point.

    Args:
        rankings_by_split: ``{split: {query offset: [(doc offset, score), ...]}}`` in the order to report;
            dev lists may hold 101 documents (MRR/Recall cut at 100), TREC lists 100.
        preprocess_dir: folder with ``{split}-qrel.tsv`` and the id pickles.
        out_dir: where ``{split}.trec`` (original ids), ``{split}.msmarco.tsv`` (top 100),
            optionally ``{split}.offsets.trec``, ``metrics.json`` and ``res.jsonl`` go; ``None``
            writes nothing.
        qrels_paths: per-split qrels overriding ``{preprocess_dir}/{split}-qrel.tsv``, in offset space.
        history_record: extra fields (e.g. the ADORE step) for the line appended to ``res.jsonl``.
        model_record: what produced the rankings (model path, class, fingerprint, ...),
            kept in ``metrics.json``.
        measures: per split, the measures to compute (:func:`parse_measures`); default
            :func:`default_measures`.
        judged_only: score condensed rankings (:func:`compute_metrics`).
        labels: split names as logged (MS MARCO's; a collection's splits keep their names).

    Returns:
        ``Evaluation(metrics, selection_score)``.
    """
    preprocess_dir = Path(preprocess_dir)
    splits = list(rankings_by_split)
    chosen = {s: (measures or {}).get(s) or default_measures(s) for s in splits}
    qrels_files = {s: str((qrels_paths or {}).get(s, preprocess_dir / f"{s}-qrel.tsv")) for s in splits}
    results = {
        s: split_result(
            chosen[s], read_qrels(qrels_files[s]), rankings_to_run(rankings_by_split[s]), judged_only
        )
        for s in splits
    }
    depths = {s: max((len(r) for r in rankings_by_split[s].values()), default=0) for s in splits}
    metrics = metrics_record(results, qrels_files, depths, chosen, model_record, judged_only)
    selection = metrics["selection_score"]
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
        logger.info("%s (%d judged queries): %s", labels.get(s, s), results[s]["num_judged_queries"], shown)
    if selection is not None and not math.isfinite(selection):
        logger.warning("non-finite model-selection value %s", selection)
    return Evaluation(metrics, selection)


def evaluate_run_file(
    run_path: str | Path,
    qrels_path: str | Path,
    split: str,
    measures: Measures | None = None,
    depth: int | None = None,
    judged_only: bool = False,
) -> dict:
    """``python -m SeDR.evaluate``: the ``metrics.json`` content of any TREC run against any TREC or BEIR
    qrels, under inference's contract (ties by rank, every judged query averaged, unjudged run queries
    ignored, ``judged_only`` as inference's); ``depth`` cuts each ranking first
    (docs/own-collection.md#evaluate)."""
    measures = measures or default_measures(split)
    run = rankings_to_run(read_ranked_run(run_path), cutoff=depth)
    qrels = read_judgements(qrels_path)
    unjudged = sum(1 for q in run if q not in qrels)
    if unjudged:
        logger.info(
            "%s: %d ranked queries have no judgements in %s and are not evaluated",
            run_path,
            unjudged,
            qrels_path,
        )
    result = split_result(measures, qrels, run, judged_only)
    depths = {split: max((len(docs) for docs in run.values()), default=0)}
    record = metrics_record(
        {split: result}, {split: str(qrels_path)}, depths, {split: measures}, None, judged_only
    )
    return {**record, "run_file": str(run_path)}
