"""Metrics (docs/retrieval.md#metrics-contract), run files with original ids, and metrics.json."""

import json
import math
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import ir_measures
import numpy as np
import pytest

from SeDR.core.errors import DataFormatError, MissingInputError, SeDRInputError
from SeDR.retrieval import evaluation, ranking

ROOT = Path(__file__).resolve().parents[1]


def ranked(docs, start=100.0):
    """Rankings entry with decreasing scores."""
    return [(d, start - i) for i, d in enumerate(docs)]


def fillers(n, base):
    return list(range(base, base + n))


# Dev case (offset space). 5 judged queries, 4 ranked:
#   q0 rel {10}: 10 at unique rank 3                  -> RR 1/3, R@5..100 = 1
#   q1 rel {11}: rank 1                               -> RR 1,   R@5..100 = 1
#   q2 rel {12,13}: ranks 7 and 40                    -> RR 1/7, R@5 0, R@10 1/2, R@30 1/2, R@50 1, R@100 1
#   q3 rel {14}: rank 101 (dev lists keep 101 docs)   -> RR 0, all recalls 0 (cut at 100)
#   q4 rel {15}: no ranking at all                    -> 0 everywhere, still in the denominator
# MRR@100 = (1/3 + 1 + 1/7) / 5; R@5 = 2/5; R@10 = R@30 = 2.5/5; R@50 = R@100 = 3/5.
DEV_QRELS = {"0": {"10": 1}, "1": {"11": 1}, "2": {"12": 1, "13": 1}, "3": {"14": 1}, "4": {"15": 1}}
EXPECTED_DEV = {
    "MRR@100": (1 / 3 + 1 + 1 / 7) / 5,
    "Recall@5": 2 / 5,
    "Recall@10": 2.5 / 5,
    "Recall@30": 2.5 / 5,
    "Recall@50": 3 / 5,
    "Recall@100": 3 / 5,
}


def dev_rankings():
    q2 = fillers(100, 1000)
    q2[6], q2[39] = 12, 13
    return {
        0: ranked([20, 21, 10] + fillers(98, 2000)),
        1: ranked([11] + fillers(100, 3000)),
        2: ranked(q2 + [4000]),
        3: ranked(fillers(100, 5000) + [14]),
    }


def msmarco_reference(qrels, rankings, k_list=(5, 10, 30, 50, 100)):
    """Independent re-statement of the original msmarco_eval routine (rank order, not scores)."""
    rr, rec = 0.0, {k: 0.0 for k in k_list}
    for q, ranked_docs in rankings.items():
        rel = {d for d, r in qrels.get(str(q), {}).items() if r >= 1}
        if not rel:
            continue
        docs = [str(d) for d, _ in ranked_docs]
        for i, d in enumerate(docs[:100]):
            if d in rel:
                rr += 1 / (i + 1)
                break
        for k in k_list:
            rec[k] += len(rel & set(docs[:k])) / len(rel)
    n = len(qrels)
    return {"MRR@100": rr / n, **{f"Recall@{k}": v / n for k, v in rec.items()}}


def test_dev_metrics_hand_case():
    got = evaluation.msmarco_dev_metrics(DEV_QRELS, ranking.rankings_to_run(dev_rankings()))
    assert got == pytest.approx(EXPECTED_DEV, abs=1e-12)
    assert msmarco_reference(DEV_QRELS, dev_rankings()) == pytest.approx(EXPECTED_DEV, abs=1e-12)


def test_dev_metrics_equal_reference_on_random_rankings():
    rng = random.Random(3)
    qrels = {str(q): {str(d): 1 for d in rng.sample(range(300), rng.randint(1, 3))} for q in range(40)}
    rankings = {q: [(d, rng.choice([1.0, 2.0, 3.0])) for d in rng.sample(range(300), 101)] for q in range(35)}
    rankings = {q: sorted(r, key=lambda x: -x[1]) for q, r in rankings.items()}  # many equal scores
    got = evaluation.msmarco_dev_metrics(qrels, ranking.rankings_to_run(rankings))
    assert got == pytest.approx(msmarco_reference(qrels, rankings), abs=1e-12)


def test_equal_scores_keep_rank_order():
    # all scores equal: rank order gives RR 1/3 in both cases; any docid tie-break (ascending or
    # descending, as trec_eval does) would give RR 1 in one of them
    for docs in ([10, 20, 30], [30, 20, 10]):
        run = ranking.rankings_to_run({0: [(d, 1.0) for d in docs]})
        assert evaluation.msmarco_dev_metrics({"0": {str(docs[-1]): 1}}, run)["MRR@100"] == pytest.approx(
            1 / 3
        )
    s = ranking.rank_consistent_scores([2.0, 1.0, 1.0, 1.0, 0.5, 3.0])
    assert all(a > b for a, b in zip(s, s[1:])) and s[0] == 2.0 and s[4] == np.float32(0.5)
    assert len({f"{x:.9g}" for x in s}) == len(s)  # distinct when written


# TREC-DL case: judged q "0" with graded rels d1:3, d2:2, d3:1, d5:1 and a rel-0 line d4; judged q "1"
# without a ranking. Run for q0 (10 docs): d4 d1 u9 d3 d2 u1..u5.
TREC_QRELS = {"0": {"1": 3, "2": 2, "3": 1, "4": 0, "5": 1}, "1": {"7": 2}}


def test_trec_metrics_graded_hand_case():
    run = ranking.rankings_to_run({0: ranked([4, 1, 9, 3, 2, 101, 102, 103, 104, 105])})
    got = evaluation.trec_dl_metrics(TREC_QRELS, run)
    # DCG@10 = sum gain/log2(rank+1): d1 at 2, d3 at 4, d2 at 5 (d4 has gain 0).
    dcg = 3 / math.log2(3) + 1 / math.log2(5) + 2 / math.log2(6)
    # ideal order of gains 3,2,1,1: 3/log2(2) + 2/log2(3) + 1/log2(4) + 1/log2(5)
    idcg = 3 + 2 / math.log2(3) + 1 / 2 + 1 / math.log2(5)
    assert got["nDCG@10"] == pytest.approx((dcg / idcg + 0) / 2, abs=1e-9)
    # rel >= 1 relevant: {1,2,3,5}, 3 retrieved -> 3/4; the rel-0 doc 4 does not count (else 4/5).
    assert got["R@100"] == pytest.approx((3 / 4 + 0) / 2)
    # judged in the top 10: d4 d1 d3 d2 -> 4/10; q1 contributes 0.
    assert got["Judged@10"] == pytest.approx((4 / 10 + 0) / 2)
    # the same numbers from ir_measures directly on the qrels
    direct = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], TREC_QRELS, run)
    assert got["nDCG@10"] == pytest.approx(direct[ir_measures.nDCG @ 10])


def test_read_qrels_keeps_rel0_lines(tmp_path):
    path = tmp_path / "test-qrel.tsv"
    path.write_text("0\t0\t1\t3\n0\t0\t4\t0\n\n1 Q0 7 2\n")
    assert evaluation.read_qrels(path) == {"0": {"1": 3, "4": 0}, "1": {"7": 2}}
    path.write_text("0 0 1\n")
    with pytest.raises(DataFormatError, match=":1:"):
        evaluation.read_qrels(path)
    with pytest.raises(MissingInputError):
        evaluation.read_qrels(tmp_path / "nope.tsv")


# ------------------------------------------------------------------------------------ end to end


@pytest.fixture
def preprocess_dir(tmp_path):
    """Offset qrels + id pickles for dev and DL19 ('test'); doc offset o <-> MS MARCO number 900000 + 7*o."""
    folder = tmp_path / "preprocess"
    folder.mkdir()
    n_docs = 6000
    pid2offset = {900000 + 7 * o: o for o in range(n_docs)}
    qid2offset = {"dev": {174249 + 3 * o: o for o in range(5)}, "test": {1037798 + o: o for o in range(2)}}
    with open(folder / "pid2offset.pickle", "wb") as f:
        pickle.dump(pid2offset, f)
    for split, m in qid2offset.items():
        with open(folder / f"{split}-qid2offset.pickle", "wb") as f:
            pickle.dump(m, f)
    for split, qrels in (("dev", DEV_QRELS), ("test", TREC_QRELS)):
        with open(folder / f"{split}-qrel.tsv", "w") as f:
            for q, docs in qrels.items():
                for d, r in docs.items():
                    f.write(f"{q}\t0\t{d}\t{r}\n")
        # the same qrels with original ids, as in the downloaded files
        inv_q = {o: qid for qid, o in qid2offset[split].items()}
        with open(folder / f"{split}-orig-qrels.txt", "w") as f:
            for q, docs in qrels.items():
                for d, r in docs.items():
                    f.write(f"{inv_q[int(q)]} 0 D{900000 + 7 * int(d)} {r}\n")
    return folder


def test_evaluate_rankings_writes_runs_with_original_ids(preprocess_dir, tmp_path):
    out = tmp_path / "eval"
    rankings = {"dev": dev_rankings(), "test": {0: ranked([4, 1, 9, 3, 2, 101, 102, 103, 104, 105])}}
    result = evaluation.evaluate_rankings(
        rankings, preprocess_dir, out, run_tag="tiny", offset_runs=True, history_record={"step": 3}
    )
    dev = result.metrics["splits"]["dev"]
    assert {k: dev[k] for k in EXPECTED_DEV} == pytest.approx(EXPECTED_DEV, abs=1e-12)
    assert (dev["num_judged_queries"], dev["num_ranked_queries"]) == (5, 4)
    assert result.selection_score == pytest.approx(EXPECTED_DEV["MRR@100"] + EXPECTED_DEV["Recall@100"])

    # TREC run file: original ids (D prefix, real qids), ranks 1.., strictly decreasing scores.
    lines = (out / "dev.trec").read_text().splitlines()
    first = lines[0].split()
    assert first == ["174249", "Q0", "D900140", "1", "100", "tiny"]  # q0 -> 174249, doc 20 -> D900140
    per_q: dict[str, list] = {}
    for line in lines:
        qid, _, docid, rank, score, _ = line.split()
        assert docid.startswith("D")
        per_q.setdefault(qid, []).append((int(rank), float(score)))
    for rows in per_q.values():
        assert [r for r, _ in rows] == list(range(1, len(rows) + 1))
        assert all(a[1] > b[1] for a, b in zip(rows, rows[1:]))
    assert len(per_q["174258"]) == 101  # q3 keeps 101 docs in the TREC run
    # MS MARCO run: qid \t docid \t rank, top 100
    ms = (out / "dev.msmarco.tsv").read_text().splitlines()
    assert ms[0] == "174249\tD900140\t1" and sum(1 for x in ms if x.startswith("174258\t")) == 100

    # evaluating the written run files against original-id qrels gives the offset-space numbers
    for split, kind in (("dev", "msmarco"), ("test", "trec")):
        qrels = evaluation.read_qrels(preprocess_dir / f"{split}-orig-qrels.txt")
        again = evaluation.split_metrics(kind, qrels, ranking.read_trec_run(out / f"{split}.trec"))
        offsets = evaluation.split_metrics(
            kind,
            evaluation.read_qrels(preprocess_dir / f"{split}-qrel.tsv"),
            ranking.read_trec_run(out / f"{split}.offsets.trec"),
        )
        stored = {k: v for k, v in result.metrics["splits"][split].items() if not k.startswith("num_")}
        assert again == pytest.approx(stored, abs=1e-12) and offsets == pytest.approx(stored, abs=1e-12)

    # metrics.json is valid JSON with the contract; res.jsonl has one line per evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scores"]["dev_MRR@100"] == pytest.approx(EXPECTED_DEV["MRR@100"])
    assert metrics["splits"]["test"]["num_judged_queries"] == 2
    assert metrics["contract"]["qrels"]["test"].endswith("test-qrel.tsv")
    assert metrics["contract"]["ranking_depth"] == {"dev": 101, "test": 10}
    assert "ir_measures" in metrics["contract"]["evaluator"]
    history = [json.loads(x) for x in (out / "res.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["step"] == 3
    table = evaluation.format_results_table(metrics)
    assert "| MS MARCO dev | 5 |" in table and "TREC-DL 2019" in table
    assert f"{EXPECTED_DEV['MRR@100']:.4f}" in table


def test_any_split_name_gets_trec_measures_in_the_order_given(preprocess_dir):
    shutil.copy(preprocess_dir / "test-qrel.tsv", preprocess_dir / "my-split-qrel.tsv")
    rankings = {"my-split": {0: ranked([4, 1, 9])}, "dev": dev_rankings()}
    result = evaluation.evaluate_rankings(rankings, preprocess_dir, None, labels={})
    assert list(result.metrics["splits"]) == ["my-split", "dev"]
    assert list(result.metrics["splits"]["my-split"])[:3] == ["nDCG@10", "R@100", "Judged@10"]
    assert "split_measures" not in result.metrics["contract"]  # every split on its defaults
    table = evaluation.format_results_table(result.metrics, labels={})
    assert "| my-split | 2 |" in table and "| dev | 5 |" in table


def test_measures_by_name_and_their_contract(preprocess_dir):
    measures = evaluation.parse_measures("MRR@10, nDCG@3,AP")
    assert evaluation.repr_measures(measures) == {"MRR@10": "RR@10", "nDCG@3": "nDCG@3", "AP": "AP"}
    rankings = {"dev": dev_rankings()}
    result = evaluation.evaluate_rankings(rankings, preprocess_dir, None, measures={"dev": measures})
    dev = result.metrics["splits"]["dev"]
    qrels, run = DEV_QRELS, ranking.rankings_to_run(dev_rankings())
    oracle = ir_measures.calc_aggregate(list(measures.values()), qrels, run)
    assert [dev[n] for n in measures] == pytest.approx([oracle[m] for m in measures.values()], abs=1e-12)
    assert dev["MRR@10"] == pytest.approx((1 / 3 + 1 + 1 / 7) / 5, abs=1e-12)  # q3 at 101, q4 unranked: 0
    assert result.metrics["contract"]["split_measures"] == {"dev": evaluation.repr_measures(measures)}
    assert result.selection_score is None  # no MRR@100 + Recall@100 asked for
    table = evaluation.format_results_table(result.metrics)
    assert table.splitlines()[0] == "| split | queries | MRR@10 | nDCG@3 | AP |"


@pytest.mark.parametrize("text", ["", "nDCG@x", "MRR@10,MRR@10", "Bogus@3"])
def test_bad_measure_names_are_refused(text):
    with pytest.raises(SeDRInputError, match="--metrics"):
        evaluation.parse_measures(text)


def test_ranking_depth_is_the_usual_depth_or_the_largest_cutoff():
    assert evaluation.ranking_depth("dev", evaluation.default_measures("dev")) == 101
    assert evaluation.ranking_depth("mine", evaluation.default_measures("mine")) == 100
    assert evaluation.ranking_depth("mine", evaluation.parse_measures("R@500,AP")) == 500


def test_judged_only_scores_condensed_rankings_and_judged_counts_the_full_ones():
    qrels = {"q": {"a": 0, "b": 1}}
    run = {"q": {"x": 3.0, "a": 2.0, "b": 1.0}}  # x unjudged
    measures = evaluation.parse_measures("RR@10,Judged@2")
    assert evaluation.compute_metrics(measures, qrels, run) == pytest.approx(
        {"RR@10": 1 / 3, "Judged@2": 0.5}
    )
    assert evaluation.compute_metrics(measures, qrels, run, judged_only=True) == pytest.approx(
        {"RR@10": 1 / 2, "Judged@2": 0.5}
    )


# ------------------------------------------------------------------------------------ without ir_measures

TINY_TRAIN = (
    "--model_class SeDR --max_query_length 16 --max_seg_length 64 --max_seg_num 4 --max_bsize 6 "
    "--preprocess_dir ./data/preprocess --hardneg_path ./data/hard_negative.json --init_path ./data/star "
    "--output_dir ./data/models --logging_dir ./data/log --hardneg_topk 100 --cache_size 5 "
    "--num_train_epochs 1"
).split()


@pytest.mark.slow
def test_training_and_help_run_without_the_metric_library(root, tmp_path):
    """On a machine with torch, transformers and numpy but no ir_measures (a bare CUDA torch image),
    training and every script's --help work: the metric library is imported where metrics are computed."""
    stub = tmp_path / "stub" / "ir_measures"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ir_measures'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stub.parent), str(ROOT)])}

    def run(*argv):
        return subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True)

    blocked = run("-c", "import ir_measures")
    assert blocked.returncode != 0 and "No module named 'ir_measures'" in blocked.stderr
    for script in ("SeDR/train.py", "SeDR/inference.py", "SeDR_Longformer/train.py"):
        done = run(str(ROOT / script), "--help")
        assert done.returncode == 0 and "--tf32" in done.stdout, done.stderr[-2000:]
    done = run(str(ROOT / "SeDR" / "train.py"), *TINY_TRAIN)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "data" / "models" / "epoch-1-64-4-6-SeDR" / "model.safetensors").is_file()
