"""Reproduction ledger checker: the paper's numbers vs our ``metrics.json`` files (OK / OKish / FAIL).

``reproduction/ledger.json`` lists, for every model of the paper's tables, the README commands
that produce it, the ``metrics.json`` they write, the paper's numbers and a tolerance per metric.
This module reads whichever of those files exist and judges each number in the style of
pyserini's two-click reproductions: OK if ``|ours - paper| <= tol``, OKish if ``<= 2 tol``,
FAIL otherwise, "not run" when the file is absent.

    python -m SeDR.ledger [--ledger reproduction/ledger.json] [--root .] [--strict] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from SeDR.core.errors import DataFormatError, MissingInputError, exit_on_input_error

DEFAULT_LEDGER = Path("reproduction/ledger.json")

# Ledger metric name -> where its value lies in a metrics.json, tried in order (a key path into
# nested objects). SeDR/retrieval/evaluation.py writes flat names under "scores" ("dev_MRR@100",
# "dev_Recall@100", "test_nDCG@10" where split "test" is TREC-DL 2019); the flat
# top-level forms are accepted too.
METRIC_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "dev_MRR@100": (("scores", "dev_MRR@100"), ("dev_MRR@100",)),
    "dev_R@100": (("scores", "dev_Recall@100"), ("dev_Recall@100",), ("dev_R@100",)),
    "DL19_nDCG@10": (("scores", "test_nDCG@10"), ("test_nDCG@10",)),
}
# A row whose metrics file is an ADORE best-record: follow its last saved checkpoint.
FOLLOW_SAVED = "saved[-1]/metrics.json"
OKISH_FACTOR = 2.0
# Paper numbers carry 3 decimals; an absolute slack keeps exact-boundary values (0.414 vs 0.409 +- 0.005) OK
# despite binary floating point.
FLOAT_SLACK = 1e-9

OK, OKISH, FAIL, NOT_RUN, NO_VALUE = "OK", "OKish", "FAIL", "not run", "no value"


class Check(NamedTuple):
    model: str
    metric: str
    paper: float
    ours: float | None
    tolerance: float
    status: str
    source: str  # the metrics.json read (or looked for)


def load_ledger(path: str | Path = DEFAULT_LEDGER) -> dict:
    """Read and sanity-check the ledger (every row has commands, a metrics path and known metric names)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, "run from the repository root or pass --ledger")
    ledger = json.loads(path.read_text(encoding="utf-8"))
    metrics = ledger.get("metrics", {})
    for k, row in enumerate(ledger.get("rows", [])):
        unknown = set(row.get("paper", {})) - set(metrics)
        if not row.get("commands") or not row.get("metrics_json") or unknown:
            raise DataFormatError(
                path,
                None,
                f"row {k} ({row.get('name')}): needs commands, metrics_json and "
                f"paper values for {sorted(metrics)} only (unknown {sorted(unknown)})",
            )
    return ledger


def judge(paper: float, ours: float, tolerance: float) -> str:
    """OK within ``tolerance``, OKish within twice it, FAIL beyond (or for a non-finite value)."""
    if not math.isfinite(ours):
        return FAIL
    diff = abs(ours - paper)
    if diff <= tolerance + FLOAT_SLACK:
        return OK
    if diff <= OKISH_FACTOR * tolerance + FLOAT_SLACK:
        return OKISH
    return FAIL


def _lookup(metrics: Mapping, name: str) -> float | None:
    for path in METRIC_KEYS.get(name, ((name,),)):
        node = metrics
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            if isinstance(node, (int, float)):
                return float(node)
    return None


def metrics_path(row: Mapping, root: str | Path = ".") -> Path | None:
    """The metrics.json a row's commands produced, or None when it is not there (yet)."""
    root = Path(root)
    path = root / row["metrics_json"]
    if not path.exists():
        return None
    if row.get("follow") == FOLLOW_SAVED:
        saved = json.loads(path.read_text(encoding="utf-8")).get("saved") or []
        if not saved:  # ADORE never improved on its start: nothing saved
            return None
        best = Path(saved[-1])
        path = (best if best.is_absolute() else root / best) / "metrics.json"
        return path if path.exists() else None
    return path


def read_ours(row: Mapping, root: str | Path = ".") -> tuple[dict[str, float | None] | None, str]:
    """``({metric: value or None}, source)`` for a row; ``(None, where it was looked for)`` when not run."""
    path = metrics_path(row, root)
    if path is None:
        return None, str(Path(root) / row["metrics_json"])
    metrics = json.loads(path.read_text(encoding="utf-8"))
    return {name: _lookup(metrics, name) for name in row["paper"]}, str(path)


def tolerance_of(ledger: Mapping, row: Mapping, metric: str) -> float:
    """The row's own tolerance for ``metric`` if it sets one, else the ledger's."""
    return float(row.get("tolerance", {}).get(metric, ledger["metrics"][metric]["tolerance"]))


def check(ledger: Mapping, root: str | Path = ".") -> list[Check]:
    """One :class:`Check` per (row, metric with a paper number)."""
    checks = []
    for row in ledger["rows"]:
        ours, source = read_ours(row, root)
        for metric, paper in row["paper"].items():
            if paper is None:
                continue
            tol = tolerance_of(ledger, row, metric)
            if ours is None:
                checks.append(Check(row["name"], metric, paper, None, tol, NOT_RUN, source))
            elif ours[metric] is None:
                checks.append(Check(row["name"], metric, paper, None, tol, NO_VALUE, source))
            else:
                checks.append(
                    Check(
                        row["name"], metric, paper, ours[metric], tol, judge(paper, ours[metric], tol), source
                    )
                )
    return checks


def format_report(checks: Sequence[Check]) -> str:
    """Plain-text table: model, metric, paper, ours, difference, tolerance, status."""
    head = f"{'model':<24}{'metric':<15}{'paper':>7}{'ours':>9}{'diff':>9}{'tol':>7}  status"
    lines = [head, "-" * len(head)]
    for c in checks:
        ours = f"{c.ours:.4f}" if c.ours is not None else "-"
        diff = f"{c.ours - c.paper:+.4f}" if c.ours is not None else ""
        lines.append(
            f"{c.model:<24}{c.metric:<15}{c.paper:>7.3f}{ours:>9}{diff:>9}{c.tolerance:>7.3f}  {c.status}"
        )
    counts = {s: sum(c.status == s for c in checks) for s in (OK, OKISH, FAIL, NOT_RUN, NO_VALUE)}
    lines.append(", ".join(f"{k}: {v}" for k, v in counts.items() if v))
    return "\n".join(lines)


def markdown_table(ledger: Mapping, root: str | Path | None = None) -> str:
    """The table of docs/reproduction.md#ledger: "paper / ours" per metric; ``ours`` cells stay empty until a
    run's metrics.json exists.

    Cells with our number carry the status, e.g. ``0.4093 (OK)``; "–" where the paper reports nothing.
    """
    metrics = list(ledger["metrics"])
    header = ["Model"]
    for m in metrics:
        label = ledger["metrics"][m]["label"]
        header += [f"{label} paper", "ours"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (2 * len(metrics))]
    for row in ledger["rows"]:
        ours = read_ours(row, root)[0] if root is not None else None
        cells = [row["name"]]
        for m in metrics:
            paper = row["paper"].get(m)
            cells.append("–" if paper is None else f"{paper:.3f}")
            value = ours.get(m) if ours else None
            if value is None:
                cells.append("")
            elif paper is None:
                cells.append(f"{value:.4f}")
            else:
                cells.append(f"{value:.4f} ({judge(paper, value, tolerance_of(ledger, row, m))})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@exit_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m SeDR.ledger", description="Compare our metrics.json files with the paper's numbers."
    )
    parser.add_argument("--ledger", default=str(DEFAULT_LEDGER))
    parser.add_argument("--root", default=".", help="folder the ledger's ./data/... paths are relative to")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any number is FAIL")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the Markdown table of docs/reproduction.md#ledger instead",
    )
    args = parser.parse_args(argv)
    ledger = load_ledger(args.ledger)
    if args.markdown:
        print(markdown_table(ledger, args.root))
        return 0
    checks = check(ledger, args.root)
    print(format_report(checks))
    print(ledger.get("tolerance_rule", ""))
    return 1 if args.strict and any(c.status == FAIL for c in checks) else 0
