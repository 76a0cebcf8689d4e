"""``python -m SeDR.evaluate RUN QRELS``: hand-computed values on a hand-made pair, and exactly the numbers
of inference's ``metrics.json`` on its own run files (docs/own-collection.md#evaluate)."""

from __future__ import annotations

import json
from math import log2

import pytest
from conftest import user_error

from SeDR.cli import evaluate as command

# Three judged queries, one unjudged query in the run.
#   A: d9 (unjudged) 3.0, then d2 (rel 0) and d3 (rel 1) tied at 2.5 with ranks 2 and 3, then d1 (rel 2).
#      The rank column breaks the tie: d2 before d3 (trec_eval would put d3 first, by docid).
#   B: dX (unjudged) and d4 (rel 1) tied at 7.0, ranks 1 and 2 (file order reversed).
#   C: judged, not ranked: 0 everywhere, still in the denominator.
#   Z: ranked, not judged: ignored.
RUN = """A Q0 d9 1 3.0 t
A Q0 d2 2 2.5 t
A Q0 d3 3 2.5 t
A Q0 d1 4 1.0 t
B Q0 d4 2 7.0 t
B Q0 dX 1 7.0 t
Z Q0 d1 1 1.0 t
"""
TREC_QRELS = "A 0 d1 2\nA 0 d2 0\nA 0 d3 1\nB 0 d4 1\nC 0 d5 1\n"
BEIR_QRELS = "query-id\tcorpus-id\tscore\nA\td1\t2\nA\td2\t0\nA\td3\t1\nB\td4\t1\nC\td5\t1\n"
NDCG_A = (1 / log2(4) + 2 / log2(5)) / (2 / log2(2) + 1 / log2(3))  # d3 (gain 1) at 3, d1 (gain 2) at 4
NDCG_B = (1 / log2(3)) / 1  # d4 at 2
EXPECTED = {
    "MRR@10": (1 / 3 + 1 / 2 + 0) / 3,
    "R@2": (0 + 1 + 0) / 3,
    "nDCG@4": (NDCG_A + NDCG_B + 0) / 3,
    "Judged@2": (1 / 2 + 1 / 2 + 0) / 3,
}


@pytest.fixture
def pair(tmp_path):
    (tmp_path / "my.run").write_text(RUN)
    (tmp_path / "qrels.txt").write_text(TREC_QRELS)
    (tmp_path / "qrels.tsv").write_text(BEIR_QRELS)
    return tmp_path


@pytest.mark.parametrize("qrels", ["qrels.txt", "qrels.tsv"])
def test_hand_made_pair_gives_hand_computed_values(pair, qrels, capsys):
    metrics = command.main([str(pair / "my.run"), str(pair / qrels), "--metrics", ",".join(EXPECTED)])
    got = metrics["splits"]["my"]  # split named after the run file
    assert {k: got[k] for k in EXPECTED} == pytest.approx(EXPECTED, abs=1e-12)
    assert got["num_judged_queries"] == 3 and got["num_ranked_queries"] == 2
    assert metrics["contract"]["split_measures"]["my"]["MRR@10"] == "RR@10"
    assert metrics["contract"]["ranking_depth"] == {"my": 4}
    assert json.loads((pair / "my.run.metrics.json").read_text())["splits"] == metrics["splits"]
    out = capsys.readouterr().out
    assert "| split | queries | MRR@10 | R@2 | nDCG@4 | Judged@2 |" in out
    assert f"| my | 3 | {EXPECTED['MRR@10']:.4f} |" in out


def test_depth_judged_only_and_default_measures(pair):
    run, qrels = str(pair / "my.run"), str(pair / "qrels.txt")
    cut = command.main([run, qrels, "--metrics", "MRR@10", "--depth", "2"])["splits"]["my"]
    assert cut["MRR@10"] == pytest.approx((0 + 1 / 2 + 0) / 3, abs=1e-12)  # A: d9, d2; B: dX, d4
    # condensed lists: A -> d2, d3, d1 (RR 1/2); B -> d4 (RR 1)
    judged = command.main([run, qrels, "--metrics", "MRR@10", "--judged_only"])["splits"]["my"]
    assert judged["MRR@10"] == pytest.approx((1 / 2 + 1 + 0) / 3, abs=1e-12)
    dev = command.main([run, qrels, "--split", "dev"])["splits"]["dev"]  # MS MARCO dev's measures
    assert list(dev)[:6] == ["MRR@100", "Recall@5", "Recall@10", "Recall@30", "Recall@50", "Recall@100"]
    assert dev["MRR@100"] == pytest.approx((1 / 3 + 1 / 2) / 3, abs=1e-12)
    assert dev["Recall@5"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-12)
    other = command.main([run, qrels, "--split", "test"])
    assert list(other["splits"]["test"])[:3] == ["nDCG@10", "R@100", "Judged@10"]
    assert "split_measures" not in other["contract"]  # today's measures: the contract as inference's


def test_an_existing_metrics_file_is_kept(pair):
    out = pair / "m.json"
    out.write_text("earlier")
    command.main([str(pair / "my.run"), str(pair / "qrels.txt"), "--output", str(out)])
    backups = [p for p in pair.iterdir() if p.name.startswith("m.json.bak")]
    assert (
        len(backups) == 1 and backups[0].read_text() == "earlier" and "splits" in json.loads(out.read_text())
    )


@pytest.mark.parametrize(
    "run, qrels, message",
    [
        ("A Q0 d1 1 1.0\n", TREC_QRELS, "my.run:1: expected `qid Q0 docid rank score tag`, got 5 fields"),
        ("A Q0 d1 1 x t\n", TREC_QRELS, "my.run:1: rank '1' or score 'x' is not a number"),
        ("A Q0 d1 1 nan t\n", TREC_QRELS, "my.run:1: score 'nan' is not a finite number"),
        (
            "A Q0 d1 1 2 t\nA Q0 d1 2 1 t\n",
            TREC_QRELS,
            "my.run:2: document 'd1' is ranked twice for query 'A'",
        ),
        (RUN, "A d1 2\n", "qrels.txt:1: neither a TREC qrels line"),
        (RUN, "", "qrels.txt: no judgements"),
    ],
)
def test_bad_input_is_one_line_with_file_and_line(pair, capsys, run, qrels, message):
    (pair / "my.run").write_text(run)
    (pair / "qrels.txt").write_text(qrels)
    line = user_error(capsys, command.main, [str(pair / "my.run"), str(pair / "qrels.txt")])
    assert line.startswith("error: ") and f"{pair}/{message}" in line, line


def test_bad_metric_name_is_refused(pair, capsys):
    line = user_error(
        capsys, command.main, [str(pair / "my.run"), str(pair / "qrels.txt"), "--metrics", "nDCG@x"]
    )
    assert "--metrics: 'nDCG@x' is not an ir_measures name" in line


def test_equals_inference_metrics_json_on_its_run_files(base_root, tmp_path):
    """The MS MARCO fixture's inference (dev 101 deep, TREC splits graded): every number equal, exactly."""
    root, _ = base_root
    folder = root / "data" / "evaluate" / "star-inf512-1"
    stored = json.loads((folder / "metrics.json").read_text())
    qrels = {
        "dev": "msmarco-docdev-qrels.tsv",
        "test": "2019qrels-docs.txt",
        "2020test": "2020qrels-docs.txt",
    }
    for split, name in qrels.items():
        got = command.main(
            [
                str(folder / f"{split}.trec"),
                str(root / "data" / name),
                "--output",
                str(tmp_path / f"{split}.json"),
            ]
        )
        assert got["splits"][split] == stored["splits"][split]
        assert got["contract"]["ranking_depth"] == {split: stored["contract"]["ranking_depth"][split]}
        assert {k: v for k, v in got["scores"].items()} == {
            k: v for k, v in stored["scores"].items() if k.startswith(f"{split}_")
        }
