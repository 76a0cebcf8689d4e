"""The README pipeline end to end, in-process, on a tiny MS MARCO-format fixture (issue: pipeline).

Scripts resolve ``./data/...`` against the working directory, exactly as the README runs them,
so every test works inside a private copy of the fixture root.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import ir_measures
import numpy as np
import pytest
import torch
from conftest import user_error
from safetensors.torch import load_file

from SeDR import inference as inference_script
from SeDR import train as train_script
from SeDR.core.runtime import resolve_precision
from SeDR.data import preprocess_folder, segmentation
from SeDR.modeling import load_model
from SeDR.retrieval import embedding_files, hard_negatives
from SeDR.retrieval.encoding import encode_queries

# Short segments keep the CPU cost of training tests low (L = 52, T = 57).
SMALL = ["--max_query_length", "16", "--max_seg_length", "64", "--max_seg_num", "4", "--max_bsize", "6"]
COMMON = [
    "--preprocess_dir",
    "./data/preprocess",
    "--hardneg_path",
    "./data/hard_negative.json",
    "--init_path",
    "./data/star",
    "--output_dir",
    "./data/models",
    "--logging_dir",
    "./data/log",
]


def test_gen_hardneg_outputs(base_root):
    root, corpus = base_root
    out = root / "data" / "evaluate" / "star-inf512-1"
    for name in [
        "passages.memmap",
        "passages-id.memmap",
        "metrics.json",
        "dev.trec",
        "test.trec",
        "2020test.trec",
        "dev.msmarco.tsv",
    ]:
        assert (out / name).exists(), name
    hard = hard_negatives.load_hard_negatives(root / "data" / "hard_negative.json")
    rel = preprocess_folder.load_rel(root / "data" / "preprocess" / "train-qrel.tsv")
    assert sorted(hard) == sorted(rel) == list(range(24))
    for q, docs in hard.items():
        assert not set(docs) & set(rel[q])  # positives excluded
        assert (
            len(docs) == len(set(docs)) == 30 - len(set(rel[q]))
        )  # corpus smaller than 300: all others, once


def test_metrics_equal_ir_measures_on_the_written_runs(base_root):
    """metrics.json agrees with ir_measures on the run files (original ids) and the original qrels files."""
    root, _ = base_root
    out = root / "data" / "evaluate" / "star-inf512-1"
    scores = json.loads((out / "metrics.json").read_text())["scores"]
    dev_qrels = list(ir_measures.read_trec_qrels(str(root / "data" / "msmarco-docdev-qrels.tsv")))
    dev_run = list(ir_measures.read_trec_run(str(out / "dev.trec")))
    dev = ir_measures.calc_aggregate(
        [ir_measures.RR @ 100, ir_measures.R @ 100, ir_measures.R @ 10], dev_qrels, dev_run
    )
    assert scores["dev_MRR@100"] == pytest.approx(dev[ir_measures.RR @ 100], abs=1e-9)
    assert scores["dev_Recall@100"] == pytest.approx(dev[ir_measures.R @ 100], abs=1e-9)
    assert scores["dev_Recall@10"] == pytest.approx(dev[ir_measures.R @ 10], abs=1e-9)
    for split, qrels_file in [("test", "2019qrels-docs.txt"), ("2020test", "2020qrels-docs.txt")]:
        qrels = list(ir_measures.read_trec_qrels(str(root / "data" / qrels_file)))
        run = list(ir_measures.read_trec_run(str(out / f"{split}.trec")))
        ref = ir_measures.calc_aggregate([ir_measures.nDCG @ 10, ir_measures.R @ 100], qrels, run)
        assert scores[f"{split}_nDCG@10"] == pytest.approx(ref[ir_measures.nDCG @ 10], abs=1e-9)
        assert scores[f"{split}_R@100"] == pytest.approx(ref[ir_measures.R @ 100], abs=1e-9)
    assert all(line.split()[2].startswith("D") for line in (out / "test.trec").read_text().splitlines())


def test_ranking_equals_brute_force_max_over_segments(base_root):
    root, _ = base_root
    out = root / "data" / "evaluate" / "star-inf512-1"
    emb = embedding_files.load_segment_embeddings(out)
    model = load_model(root / "data" / "star", model_class="STAR_MaxP", max_seg_num=1)
    qcache = preprocess_folder.queries(root / "data" / "preprocess", "dev")
    q = encode_queries(model, qcache, 32, 8, torch.device("cpu"), resolve_precision(torch.device("cpu")))
    scores = q @ emb.vectors.T  # (nq, rows)
    n_docs = int(emb.doc_ids.max()) + 1
    doc_scores = np.full((len(q), n_docs), -np.inf, dtype=np.float32)
    np.maximum.at(doc_scores.T, emb.doc_ids, scores.T)  # max over each document's segments
    inv_pid = {
        v: k
        for k, v in preprocess_folder.load_id_map(root / "data" / "preprocess" / "pid2offset.pickle").items()
    }
    inv_qid = {
        v: k
        for k, v in preprocess_folder.load_id_map(
            root / "data" / "preprocess" / "dev-qid2offset.pickle"
        ).items()
    }
    run: dict[str, list[str]] = {}
    for line in (out / "dev.trec").read_text().splitlines():
        qid, _, doc, *_ = line.split()
        run.setdefault(qid, []).append(doc)
    pid2offset = {f"D{v}": k for k, v in inv_pid.items()}
    for i in range(len(q)):
        ranked = run[str(inv_qid[i])]
        assert len(ranked) == len(set(ranked)) == n_docs  # 30 documents < 101 kept
        got = doc_scores[i, [pid2offset[d] for d in ranked]]
        # The run's documents in order carry the brute-force scores sorted descending (ties in any order).
        np.testing.assert_allclose(got, np.sort(doc_scores[i])[::-1], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_train_inference_adore_readme_names(root, caplog, capsys):
    """SeDR training (README flags, short segments), its inference folder, then ADORE."""
    caplog.set_level(logging.WARNING)
    argv = [
        "--model_class",
        "SeDR",
        *SMALL,
        *COMMON,
        "--learning",
        "5e-5",
        "--hardneg_topk",
        "100",
        "--cache_size",
        "50",
        "--gradient_accumulation_steps",
        "2",
        "--fp16",
        "--use_gradient_checkpointing",
        "--num_train_epochs",
        "2",
    ]
    saved = train_script.main(argv)
    assert [p.name for p in saved] == ["epoch-1-64-4-6-SeDR", "epoch-2-64-4-6-SeDR"]
    assert sum("--fp16 needs a CUDA GPU" in r.message for r in caplog.records) == 1
    cfg = json.loads((saved[-1] / "config.json").read_text())
    assert cfg["max_seg_num"] == 4
    # An existing run is never overwritten silently.
    assert "--resume" in user_error(capsys, train_script.main, argv)
    inference_script.main(
        [
            "--model_class",
            "SeDR",
            "--max_query_length",
            "16",
            "--max_seg_length",
            "64",
            "--max_seg_num",
            "4",
            "--model_path",
            "./data/models/epoch-2-64-4-6-SeDR",
            "--faiss_gpus",
            "0",
        ]
    )
    out = Path("data/evaluate/epoch-2-64-4-6-SeDR-inf64-4")
    ids = np.fromfile(out / "passages-id.memmap", dtype=np.int32)
    lengths = np.load("data/preprocess/passages_length.npy")
    expected_rows = segmentation.num_segments(lengths, segmentation.SegmentSpec(64, 4))
    assert np.array_equal(np.bincount(ids, minlength=len(lengths)), expected_rows)
    from SeDR import adore_train

    adore_train.main(
        [
            "--metric_cut",
            "200",
            "--init_path",
            "./data/models/epoch-2-64-4-6-SeDR",
            "--pembed_dir",
            str(out),
            "--model_save_dir",
            "./data/adoremodels",
            "--log_dir",
            "./data/log",
            "--preprocess_dir",
            "./data/preprocess",
            "--model_gpu_index",
            "0",
            "--faiss_gpu_index",
            "0",
            "--learning_rate",
            "3e-6",
            "--num_train_epochs",
            "1",
            "--per_gpu_batch_size",
            "8",
            "--warmup_steps",
            "1",
        ]
    )
    best = json.loads(Path("data/adoremodels/epoch-2-64-4-6-SeDR-best.json").read_text())
    assert np.isfinite(best["best_selection_score"])
    for folder in best["saved"]:
        assert load_model(folder).model_class_name == "SeDR"


def _weights(folder) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))


@pytest.mark.slow
def test_resume_gives_the_uninterrupted_weights(root):
    argv = [
        "--model_class",
        "SeDR",
        *SMALL,
        *COMMON,
        "--learning",
        "1e-3",
        "--warmup_steps",
        "2",
        "--hardneg_topk",
        "100",
        "--cache_size",
        "5",
        "--gradient_accumulation_steps",
        "3",
        "--num_train_epochs",
        "3",
    ]
    full = train_script.main(argv + ["--output_dir", "./full"])
    train_script.main(argv + ["--output_dir", "./cut", "--epochs_to_run", "1"])
    resumed = train_script.main(argv + ["--output_dir", "./cut", "--resume"])
    assert [p.name for p in resumed] == ["epoch-2-64-4-6-SeDR", "epoch-3-64-4-6-SeDR"]
    a, b = _weights(full[-1]), _weights(resumed[-1])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Only the newest checkpoint keeps the resumable state.
    assert not (Path("cut") / "epoch-1-64-4-6-SeDR" / "training_state.pt").exists()


def test_a_moved_run_folder_resumes_to_the_uninterrupted_weights(root):
    """Paths are compared by where they lead and what they hold, not by their spelling."""
    argv = [
        "--model_class",
        "SeDR",
        *SMALL,
        *COMMON,
        "--learning",
        "1e-3",
        "--warmup_steps",
        "1",
        "--hardneg_topk",
        "100",
        "--cache_size",
        "5",
        "--num_train_epochs",
        "2",
    ]
    full = train_script.main(argv + ["--output_dir", "./full"])
    train_script.main(argv + ["--output_dir", "./cut", "--epochs_to_run", "1"])
    Path("elsewhere").mkdir()
    Path("cut").rename("elsewhere/moved")
    respelled = [
        "--preprocess_dir",
        "data/preprocess/",
        "--hardneg_path",
        "data/../data/hard_negative.json",
        "--init_path",
        str(Path("data/star").resolve()),
    ]
    resumed = train_script.main(argv + respelled + ["--output_dir", "elsewhere/moved/", "--resume"])
    assert [p.name for p in resumed] == ["epoch-2-64-4-6-SeDR"]
    a, b = _weights(full[-1]), _weights(resumed[-1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_collating_workers_give_the_in_line_weights(root):
    """``--num_workers 2`` collates in worker processes; the plan, the Late-Cache order and the random
    draws are those of the in-line loader, so a CPU run ends with the same weights bit for bit."""
    argv = [
        "--model_class",
        "SeDR",
        *SMALL,
        *COMMON,
        "--learning",
        "1e-3",
        "--warmup_steps",
        "2",
        "--hardneg_topk",
        "100",
        "--cache_size",
        "5",
        "--gradient_accumulation_steps",
        "3",
        "--num_train_epochs",
        "2",
    ]
    in_line = train_script.main(argv + ["--output_dir", "./w0", "--num_workers", "0"])
    workers = train_script.main(argv + ["--output_dir", "./w2", "--num_workers", "2"])
    a, b = _weights(in_line[-1]), _weights(workers[-1])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    h0, h2 = (json.loads((p[-1] / "train_history.json").read_text()) for p in (in_line, workers))
    assert [(h["mean_loss"], h["micro_batches"]) for h in h0] == [
        (h["mean_loss"], h["micro_batches"]) for h in h2
    ]
    assert json.loads((workers[-1] / "training_args.json").read_text())["num_workers"] == 2


# SeDR's loss is averaged over B + C rows, so it grows while its Late-Cache fills
# (docs/training.md#late-cache-layout): the cache-free variant shows learning on the same encoder.
@pytest.mark.slow
@pytest.mark.parametrize("model_class", ["SeDR_without_LateCache"])
def test_training_loss_goes_down(root, model_class):
    argv = [
        "--model_class",
        model_class,
        *SMALL[:-1],
        "16",
        *COMMON,
        "--learning",
        "1e-2",
        "--warmup_steps",
        "0",
        "--optimizer_str",
        "adamw",
        "--hardneg_topk",
        "5",
        "--num_train_epochs",
        "6",
    ]
    saved = train_script.main(argv)
    history = json.loads((saved[-1] / "train_history.json").read_text())
    losses = [h["mean_loss"] for h in history]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_class",
    ["SeDR_without_LateCache", "SeDR_MaxP", "SeDR_Transformer_Head", "SeDR_Global_Attention", "STAR_Multi"],
)
def test_every_class_trains_and_evaluates(root, model_class):
    m = "1" if model_class == "STAR_Multi" else "4"
    argv = [
        "--model_class",
        model_class,
        "--max_query_length",
        "16",
        "--max_seg_length",
        "64",
        "--max_seg_num",
        m,
        "--max_bsize",
        "6",
        *COMMON,
        "--num_train_epochs",
        "1",
        "--hardneg_topk",
        "100",
    ]
    (saved,) = train_script.main(argv)
    assert saved.name == f"epoch-1-64-{m}-6-{model_class}"
    ev = inference_script.main(
        [
            "--model_class",
            model_class,
            "--max_query_length",
            "16",
            "--max_seg_length",
            "64",
            "--max_seg_num",
            m,
            "--model_path",
            str(saved),
            "--faiss_gpus",
            "0",
        ]
    )
    assert 0.0 <= ev.metrics["scores"]["dev_MRR@100"] <= 1.0
    ids = np.fromfile(
        Path("data/evaluate") / f"{saved.name}-inf64-{m}" / "passages-id.memmap", dtype=np.int32
    )
    per_doc = np.bincount(ids)
    if model_class == "STAR_Multi":
        assert (per_doc == 4).all()  # K = 4 rows per document
    else:
        lengths = np.load("data/preprocess/passages_length.npy")
        assert np.array_equal(per_doc, segmentation.num_segments(lengths, segmentation.SegmentSpec(64, 4)))
