"""The reproduction ledger: the paper's numbers, the README commands, and the OK/OKish/FAIL checker."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest

from SeDR.cli import flags
from SeDR.tools import ledger as lg

REPO = Path(__file__).resolve().parents[1]
LEDGER = REPO / "reproduction" / "ledger.json"

# Transcribed by hand from the reproduction issue: MS MARCO dev MRR@100 / R@100, DL19 nDCG@10 ("–" = None).
ISSUE_NUMBERS = {
    "STAR": (0.390, 0.913, None),
    "STAR-Multi": (0.404, 0.913, None),
    "STAR-MaxP": (0.394, 0.909, None),
    "SeDR": (0.409, 0.921, 0.632),
    "SeDR+ADORE": (0.421, 0.933, None),
    "SeDR-MaxP": (0.403, None, 0.611),
    "SeDR-Transformer-Head": (0.405, None, 0.622),
    "SeDR-Global-Attention": (0.406, None, 0.600),
    "SeDR-Longformer": (0.408, None, 0.625),
}


@pytest.fixture(scope="module")
def ledger():
    return lg.load_ledger(LEDGER)


def test_paper_numbers_match_the_issue(ledger):
    got = {
        r["name"]: tuple(r["paper"][m] for m in ("dev_MRR@100", "dev_R@100", "DL19_nDCG@10"))
        for r in ledger["rows"]
    }
    assert got == ISSUE_NUMBERS
    assert [r["name"] for r in ledger["rows"]] == list(ISSUE_NUMBERS)
    assert set(ledger["metrics"]) == set(lg.METRIC_KEYS)


def _readme_lines() -> set[str]:
    text = (REPO / "README.md").read_text()
    return {
        ln.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for ln in block.splitlines()
    }


def test_commands_are_the_readme_commands_verbatim(ledger):
    lines = _readme_lines()
    for cmd in ledger["setup"] + [c for r in ledger["rows"] for c in r["commands"]]:
        assert cmd in lines, cmd
    names = {r["name"] for r in ledger["rows"]}
    assert all(set(r["requires"]) <= names for r in ledger["rows"])


def _flags(cmd: str) -> tuple[str, list[str]]:
    words = shlex.split(cmd)
    assert words[0] == "python"
    return words[1], words[2:]


def _evaluate_dir(model_path: str, seg_len: int, seg_num: int) -> str:
    """docs/retrieval.md#inference-output-folder:
    ./data/evaluate/{basename(model_path)}-inf{seg_len}-{seg_num}."""
    return f"./data/evaluate/{Path(model_path).name}-inf{seg_len}-{seg_num}"


def test_metrics_paths_follow_from_the_commands(ledger):
    """Each row's metrics path is where its inference (or ADORE) command writes."""
    eval_dirs = {}
    for row in ledger["rows"]:
        trained = out = None
        for cmd in row["commands"]:
            script, argv = _flags(cmd)
            if script == "SeDR/train.py":
                ns = flags.build_train_parser().parse_args(argv)
                # epoch-{e}-{Lraw}-{M}-{max_bsize}-{class}; the paper evaluates epoch 4
                trained = f"epoch-4-{ns.max_seg_length}-{ns.max_seg_num}-{ns.max_bsize}-{ns.model_class}"
            elif script == "SeDR_Longformer/train.py":
                f = dict(zip(argv[::2], argv[1::2]))
                trained = (
                    f"epoch-4-{f['--max_doc_length']}-{f['--max_seg_num']}-{f['--max_bsize']}-SeDR_Longformer"
                )
            elif script == "SeDR/inference.py":
                ns = flags.build_inference_parser().parse_args(argv)
                out = _evaluate_dir(ns.model_path, ns.max_seg_length, ns.max_seg_num)
            elif script == "SeDR_Longformer/inference.py":
                f = dict(zip(argv[::2], argv[1::2]))
                out = _evaluate_dir(f["--model_path"], int(f["--max_doc_length"]), int(f["--max_seg_num"]))
            elif script == "SeDR/adore_train.py":
                ns = flags.build_adore_parser().parse_args(argv)
                assert ns.pembed_dir == eval_dirs["SeDR"]  # ADORE starts from SeDR's frozen index
                expected = f"{ns.model_save_dir}/{Path(ns.init_path).name}-best.json"
                assert row["metrics_json"] == expected and row["follow"] == lg.FOLLOW_SAVED
        if row["name"] != "SeDR+ADORE":
            assert row["metrics_json"] == f"{out}/metrics.json"
            eval_dirs[row["name"]] = out
        if trained is not None:
            assert out.split("/")[-1].startswith(trained + "-inf")


@pytest.mark.parametrize(
    "ours, status",
    [
        (0.409, lg.OK),
        (0.414, lg.OK),
        (0.404, lg.OK),  # |diff| <= tol (boundary included)
        (0.4141, lg.OKISH),
        (0.419, lg.OKISH),
        (0.399, lg.OKISH),  # tol < |diff| <= 2 tol
        (0.4191, lg.FAIL),
        (0.3989, lg.FAIL),
        (math.nan, lg.FAIL),
    ],
)
def test_judge_boundaries(ours, status):
    assert lg.judge(0.409, ours, 0.005) == status


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_checker_on_fabricated_metrics(ledger, tmp_path, capsys):
    # SeDR (paper 0.409 / 0.921 / 0.632; tolerances 0.005 / 0.005 / 0.015),
    # nested like SeDR/retrieval/evaluation.py
    _write(
        tmp_path / "data/evaluate/epoch-4-512-4-17-SeDR-inf512-4/metrics.json",
        {"scores": {"dev_MRR@100": 0.412, "dev_Recall@100": 0.930, "test_nDCG@10": 0.600}},
    )
    # STAR-MaxP written with flat keys and without the DL19 split
    _write(
        tmp_path / "data/evaluate/epoch-4-512-4-17-STAR_MaxP-inf512-4/metrics.json", {"dev_MRR@100": 0.3940}
    )
    checks = {(c.model, c.metric): c for c in lg.check(ledger, tmp_path)}
    assert checks[("SeDR", "dev_MRR@100")].status == lg.OK  # +0.003
    assert checks[("SeDR", "dev_R@100")].status == lg.OKISH  # +0.009
    assert checks[("SeDR", "DL19_nDCG@10")].status == lg.FAIL  # -0.032 > 0.030
    assert checks[("STAR-MaxP", "dev_MRR@100")].status == lg.OK
    assert checks[("STAR-MaxP", "dev_R@100")].status == lg.NO_VALUE
    assert checks[("STAR", "dev_MRR@100")].status == lg.NOT_RUN
    assert ("SeDR-MaxP", "dev_R@100") not in checks  # "–" in the paper: nothing to check
    assert len(checks) == sum(v is not None for nums in ISSUE_NUMBERS.values() for v in nums)

    assert lg.main(["--ledger", str(LEDGER), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"SeDR\s+DL19_nDCG@10\s+0\.632\s+0\.6000\s+-0\.0320\s+0\.015\s+FAIL", out)
    assert re.search(r"STAR\s+dev_MRR@100\s+0\.390\s+-\s+0\.005\s+not run", out)
    assert lg.main(["--ledger", str(LEDGER), "--root", str(tmp_path), "--strict"]) == 1


def test_nothing_run_is_not_a_failure(ledger, tmp_path):
    assert {c.status for c in lg.check(ledger, tmp_path)} == {lg.NOT_RUN}
    assert lg.main(["--ledger", str(LEDGER), "--root", str(tmp_path), "--strict"]) == 0


def test_adore_row_follows_the_best_checkpoint(ledger, tmp_path):
    row = next(r for r in ledger["rows"] if r["name"] == "SeDR+ADORE")
    best = tmp_path / row["metrics_json"]
    _write(best, {"best_selection_score": 1.3, "saved": []})
    assert lg.read_ours(row, tmp_path)[0] is None  # ADORE never improved: not run
    _write(
        tmp_path / "data/adoremodels/epoch-4-512-4-17-SeDR-epoch-1/metrics.json",
        {"scores": {"dev_MRR@100": 0.40, "dev_Recall@100": 0.92}},
    )
    _write(
        tmp_path / "data/adoremodels/epoch-4-512-4-17-SeDR-ckpt-6000/metrics.json",
        {"scores": {"dev_MRR@100": 0.418, "dev_Recall@100": 0.935}},
    )
    _write(
        best,
        {
            "saved": [
                "data/adoremodels/epoch-4-512-4-17-SeDR-epoch-1",
                "data/adoremodels/epoch-4-512-4-17-SeDR-ckpt-6000",
            ]
        },
    )
    ours, source = lg.read_ours(row, tmp_path)
    assert ours == {"dev_MRR@100": 0.418, "dev_R@100": 0.935, "DL19_nDCG@10": None}
    assert source.endswith("SeDR-ckpt-6000/metrics.json")


def test_keys_match_what_the_evaluation_module_writes(ledger, tmp_path):
    """A metrics.json from SeDR/retrieval/evaluation.py is read under the ledger's names
    (hand-computed values)."""
    from SeDR.retrieval.evaluation import evaluate_rankings

    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "dev-qrel.tsv").write_text("0\t0\t1\t1\n1\t0\t5\t1\n")
    (pre / "test-qrel.tsv").write_text("0\t0\t0\t1\n")
    out = tmp_path / "data/evaluate/epoch-4-512-4-17-SeDR-inf512-4"
    rankings = {"dev": {0: [(0, 0.9), (1, 0.8)], 1: [(2, 0.7)]}, "test": {0: [(1, 1.0), (0, 0.5)]}}
    evaluate_rankings(rankings, pre, out, write_runs=False)
    row = next(r for r in ledger["rows"] if r["name"] == "SeDR")
    ours, _ = lg.read_ours(row, tmp_path)
    # dev: query 0 finds its document at rank 2, query 1 never -> MRR (1/2 + 0) / 2, recall (1 + 0) / 2
    assert ours["dev_MRR@100"] == pytest.approx(0.25) and ours["dev_R@100"] == pytest.approx(0.5)
    # DL19: the one relevant document at rank 2 -> nDCG@10 = (1 / log2 3) / 1
    assert ours["DL19_nDCG@10"] == pytest.approx(1 / math.log2(3))


def test_markdown_table(ledger, tmp_path):
    empty = lg.markdown_table(ledger)
    lines = empty.splitlines()
    assert lines[0].startswith("| Model | MS MARCO dev MRR@100 paper | ours |")
    assert len(lines) == 2 + len(ledger["rows"])
    assert "| SeDR-MaxP | 0.403 |  | – |  | 0.611 |  |" in lines
    _write(
        tmp_path / "data/evaluate/epoch-4-512-4-17-SeDR-inf512-4/metrics.json",
        {"scores": {"dev_MRR@100": 0.412, "dev_Recall@100": 0.930, "test_nDCG@10": 0.6}},
    )
    filled = lg.markdown_table(ledger, tmp_path)
    assert (
        "| SeDR | 0.409 | 0.4120 (OK) | 0.921 | 0.9300 (OKish) | 0.632 | 0.6000 (FAIL) |"
        in filled.splitlines()
    )
