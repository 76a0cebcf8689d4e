"""The demo's report: one table row per system, read back from its ``metrics.json``, and the curves."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

START_LABEL = "untrained start (STAR_MaxP)"
# Metrics shown, as keyed in metrics.json "scores" (SeDR.retrieval.evaluation);
# test = the TREC-DL-2019-named half.
TABLE_METRICS = (
    ("dev_MRR@100", "dev MRR@100"),
    ("dev_Recall@100", "dev R@100"),
    ("test_nDCG@10", "test nDCG@10"),
    ("2020test_nDCG@10", "test-2 nDCG@10"),
)


def _fmt_seconds(x: float | None) -> str:
    return "" if x is None else f"{x:.0f}"


def results_rows(results: Mapping[str, dict], root: Path) -> list[dict]:
    """One row per system, metric values read back from each row's ``metrics.json``
    (path relative to ``root``)."""
    rows = []
    for label, r in results.items():
        scores = json.loads((root / r["metrics_json"]).read_text())["scores"]
        rows.append(
            {
                "system": label,
                "metrics_json": r["metrics_json"],
                **{k: scores.get(k) for k, _ in TABLE_METRICS},
                "train_seconds": r.get("train_seconds"),
                "index_seconds": r.get("index_seconds"),
            }
        )
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
    # matplotlib is imported when plotting (start-up time) and set to a file backend first.
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
    # Each class trains with its own loss (STAR_MaxP pairwise, SeDR cross-entropy): scales differ.
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


def format_hits_table(hits: Mapping) -> str:
    """Each system's top hits for the same dev queries, side by side;
    ✓ marks the query's own page (its qrel)."""
    names = list(hits["systems"])
    lines = [
        "| dev query (its page) | rank | " + " | ".join(names) + " |",
        "|---|---:|" + "---|" * len(names),
    ]
    for i, q in enumerate(hits["queries"]):
        ranked = [hits["systems"][n][i] for n in names]
        for rank in range(max(map(len, ranked))):
            cells = []
            for r in ranked:
                doc, score = r[rank] if rank < len(r) else (None, None)
                cells.append(
                    "" if doc is None else f"{hits['urls'][doc]} {score:.2f}" + " ✓" * (doc == q["relevant"])
                )
            query = f"{q['text']} ({q['relevant_url']})".replace("|", "\\|") if rank == 0 else ""
            lines.append(f"| {query} | {rank + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
