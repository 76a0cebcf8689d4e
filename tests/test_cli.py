"""Never a stale, mixed or lost result: each case builds the bad artifact, flag or concurrent run on the
pipeline fixture and checks the exit status, the one-line message, and that nothing written before changed."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, user_error
from safetensors.torch import load_file, save_file

from SeDR import adore_train
from SeDR import inference as inference_script
from SeDR import train as train_script
from SeDR.modeling.checkpoint import model_fingerprint
from SeDR.retrieval import embedding_files
from SeDR.training.adore import AdoreRun

SMALL = ["--max_query_length", "16", "--max_seg_length", "64", "--max_seg_num", "4", "--max_bsize", "6"]
TRAIN = [
    "--model_class",
    "STAR_MaxP",
    *SMALL,
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
    "--hardneg_topk",
    "100",
    "--learning",
    "1e-3",
    "--warmup_steps",
    "0",
    "--optimizer_str",
    "adamw",
]
INFER = ["--model_class", "STAR_MaxP", *SMALL[:6], "--faiss_gpus", "0"]
CKPT = "epoch-1-64-4-6-STAR_MaxP"


def snapshot(folder) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def infer(model_path, *extra):
    return inference_script.main([*INFER, "--model_path", str(model_path), *extra])


@pytest.mark.slow
def test_retrained_weights_are_re_encoded_and_earlier_epochs_move_aside(root, caplog):
    """Retraining into the same folder: the newest epoch folder is this run's, and inference re-encodes."""
    train_script.main([*TRAIN, "--num_train_epochs", "2"])
    first = infer(f"data/models/{CKPT}")
    out = Path(f"data/evaluate/{CKPT}-inf64-4")
    old_epoch1 = load_file(f"data/models/{CKPT}/model.safetensors")
    saved = train_script.main(
        [*TRAIN, "--num_train_epochs", "1", "--learning", "3e-3", "--overwrite_output_dir"]
    )
    runs = sorted(p.name for p in Path("data/models").iterdir() if p.name.startswith("epoch-"))
    assert (
        [p.name for p in saved] == runs == [CKPT]
    )  # epoch-2 of the earlier run is gone from the run's names
    (backup,) = Path("data/models").glob("64-4-6-STAR_MaxP.bak-*")
    assert sorted(p.name for p in backup.iterdir()) == [CKPT, "epoch-2-64-4-6-STAR_MaxP"]
    assert torch.equal(
        load_file(str(backup / CKPT / "model.safetensors"))["norm.weight"], old_epoch1["norm.weight"]
    )
    with caplog.at_level("INFO"):
        second = infer(f"data/models/{CKPT}")
    assert any(
        "re-encoding" in r.getMessage() and "model_fingerprint" in r.getMessage() for r in caplog.records
    )
    fresh = infer(f"data/models/{CKPT}", "--output_dir", "./fresh")
    assert second.metrics["scores"] == fresh.metrics["scores"] != first.metrics["scores"]
    recorded = json.loads((out / "metrics.json").read_text())["model"]
    assert recorded["model_fingerprint"] == model_fingerprint(f"data/models/{CKPT}")
    (kept,) = out.glob("results.bak-*")  # the earlier metrics are kept, not overwritten
    assert json.loads((kept / "metrics.json").read_text())["scores"] == first.metrics["scores"]
    reused = snapshot(out)
    infer(f"data/models/{CKPT}")  # same weights again: reused, the embeddings untouched
    assert snapshot(out)["passages.memmap"] == reused["passages.memmap"]


@pytest.mark.slow
def test_resume_refuses_flags_the_saved_state_fixes(root, capsys):
    train_script.main([*TRAIN, "--num_train_epochs", "2", "--epochs_to_run", "1"])
    before = snapshot("data/models")
    msg = user_error(
        capsys, train_script.main, [*TRAIN, "--num_train_epochs", "2", "--resume", "--learning", "2e-3"]
    )
    assert "--learning_rate: saved 0.001, now 0.002" in msg
    msg = user_error(
        capsys, train_script.main, [*TRAIN, "--num_train_epochs", "2", "--resume", "--seed", "7"]
    )
    assert "--seed: saved 42, now 7" in msg
    assert snapshot("data/models") == before
    (saved,) = train_script.main([*TRAIN, "--num_train_epochs", "2", "--resume", "--logging_steps", "3"])
    args = json.loads((saved / "training_args.json").read_text())
    assert (
        saved.name == "epoch-2-64-4-6-STAR_MaxP"
        and args["logging_steps"] == 3
        and args["learning_rate"] == 1e-3
    )
    assert args["hardneg_fingerprint"].startswith("sha256:") and args["world_size"] == 1


@pytest.mark.slow
def test_a_second_concurrent_training_run_is_refused(root, capsys):
    argv = [*TRAIN, "--num_train_epochs", "500"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "SeDR" / "train.py"), *argv],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lock = Path("data/models/.64-4-6-STAR_MaxP.lock")
    try:
        deadline = time.time() + 120
        while not lock.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert lock.exists(), first.stderr.read().decode() if first.poll() is not None else "no lock"
        msg = user_error(capsys, train_script.main, argv)
        assert f"being written by process {first.pid}" in msg and str(lock) in msg
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_another_models_results_are_refused_or_moved_to_a_backup(root, capsys):
    shutil.copytree("data/star", "other/star")  # same folder name, another model
    infer("data/star")
    out = Path("data/evaluate/star-inf64-4")
    before = snapshot(out)
    msg = user_error(capsys, inference_script.main, [*INFER, "--model_path", "other/star"])
    assert str(out) in msg and "--overwrite_output_dir" in msg
    assert snapshot(out) == before
    infer("other/star", "--overwrite_output_dir")
    (backup,) = Path("data/evaluate").glob("star-inf64-4.bak-*")
    assert snapshot(backup) == before
    assert json.loads((out / "metrics.json").read_text())["model"]["model_path"] == str(
        Path("other/star").resolve()
    )


@pytest.mark.slow
def test_original_inference_folder_is_reused_only_on_request_and_never_written(root, capsys, caplog):
    ours = infer("data/star")
    Path("orig").mkdir()
    for name in ("passages.memmap", "passages-id.memmap"):
        shutil.copy2(f"data/evaluate/star-inf64-4/{name}", f"orig/{name}")
    before = snapshot("orig")
    assert "--reuse_embeddings" in user_error(
        capsys, inference_script.main, [*INFER, "--model_path", "data/star", "--output_dir", "orig"]
    )
    assert snapshot("orig") == before
    reused = infer("data/star", "--output_dir", "orig", "--reuse_embeddings")
    assert reused.metrics["scores"] == ours.metrics["scores"]
    assert {
        k: v for k, v in snapshot("orig").items() if k in before
    } == before  # the original's files untouched
    ids = np.fromfile("orig/passages-id.memmap", dtype=np.int32)
    short = Path("short")
    short.mkdir()
    (short / "passages-id.memmap").write_bytes(ids[:-1].tobytes())
    (short / "passages.memmap").write_bytes(Path("orig/passages.memmap").read_bytes()[: -32 * 4])
    msg = user_error(
        capsys,
        inference_script.main,
        [*INFER, "--model_path", "data/star", "--output_dir", "short", "--reuse_embeddings"],
    )
    assert "passages-id.memmap" in msg and "rows" in msg


ADORE = [
    "--metric_cut",
    "200",
    "--model_save_dir",
    "./adore",
    "--log_dir",
    "./data/log",
    "--preprocess_dir",
    "./data/preprocess",
    "--model_gpu_index",
    "0",
    "--faiss_gpu_index",
    "0",
    "--learning_rate",
    "3e-4",
    "--per_gpu_batch_size",
    "8",
    "--warmup_steps",
    "0",
    "--num_train_epochs",
    "2",
]


@pytest.mark.slow
def test_adore_refuses_a_second_run_resumes_exactly_and_reads_original_folders(
    root, capsys, monkeypatch, caplog
):
    (ckpt,) = train_script.main([*TRAIN, "--num_train_epochs", "1"])
    infer(ckpt)
    pembed = f"data/evaluate/{CKPT}-inf64-4"
    argv = [*ADORE, "--init_path", str(ckpt), "--pembed_dir", pembed]
    adore_train.main(argv)
    full = torch.load(f"adore/{CKPT}-adore-state.pt", weights_only=False)["model"]
    before = snapshot("adore")
    msg = user_error(capsys, adore_train.main, argv)
    assert "--resume" in msg and "--overwrite_output_dir" in msg
    assert snapshot("adore") == before

    argv = [*ADORE, "--init_path", str(ckpt), "--pembed_dir", pembed, "--model_save_dir", "./cut"]
    real_save = AdoreRun._save_state

    def save_then_die(self, *a, **kw):
        real_save(self, *a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(AdoreRun, "_save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        adore_train.main(argv)
    monkeypatch.setattr(AdoreRun, "_save_state", real_save)
    state = Path(f"cut/{CKPT}-adore-state.pt")  # a state cut short: one line before any work
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])
    cut = snapshot("cut")
    msg = user_error(capsys, adore_train.main, [*argv, "--resume"])
    assert msg.startswith(f"error: {state} cannot be read (") and msg.endswith(
        "truncated or corrupt; restore the file, or start again with --overwrite_output_dir "
        "(this run's outputs move to a dated backup)"
    )
    assert snapshot("cut") == cut
    state.write_bytes(whole)
    assert "--learning_rate" in user_error(
        capsys, adore_train.main, [*argv, "--resume", "--learning_rate", "1e-4"]
    )
    adore_train.main([*argv, "--resume"])
    resumed = torch.load(f"cut/{CKPT}-adore-state.pt", weights_only=False)["model"]
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)

    Path("orig").mkdir()  # the original code's inference folder: no record, nothing written into it
    for name in ("passages.memmap", "passages-id.memmap"):
        shutil.copy2(f"{pembed}/{name}", f"orig/{name}")
    with caplog.at_level("WARNING"):
        adore_train.main(
            [
                *ADORE,
                "--init_path",
                str(ckpt),
                "--pembed_dir",
                "orig",
                "--model_save_dir",
                "./o",
                "--num_train_epochs",
                "1",
            ]
        )
    assert sorted(p.name for p in Path("orig").iterdir()) == ["passages-id.memmap", "passages.memmap"]
    assert any("no record of ours" in r.getMessage() for r in caplog.records)
    shutil.copytree(ckpt, "other")  # another model's weights against these embeddings
    state = load_file("other/model.safetensors")
    state["norm.bias"] += 1.0
    save_file(state, "other/model.safetensors", metadata={"format": "pt"})
    msg = user_error(
        capsys,
        adore_train.main,
        [*ADORE, "--init_path", "other", "--pembed_dir", pembed, "--model_save_dir", "./x"],
    )
    assert f"the embeddings in {pembed} were made by" in msg and "differ from --init_path other" in msg


def _truncate(path, keep=0.5):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def _hardneg(edit):
    path = Path("data/hard_negative.json")
    hard = json.loads(path.read_text())
    edit(hard)
    path.write_text(json.dumps(hard))


@pytest.mark.parametrize(
    "case, expect",
    [
        ("hardneg_minus_one", "hard_negative.json: query 0, position 1: document offset -1 is outside 0..29"),
        (
            "hardneg_out_of_range",
            "hard_negative.json: query 3, position 0: document offset 30 is outside 0..29",
        ),
        ("hardneg_missing_query", "training queries have no hard negatives"),
        ("passages_truncated", "passages.memmap: "),
        ("weights_truncated", "pytorch_model.bin: unreadable or truncated checkpoint"),
        ("config_missing", "missing input file data/star/config.json"),
    ],
)
def test_bad_artifacts_stop_training_before_any_work(root, capsys, case, expect):
    if case == "hardneg_minus_one":
        _hardneg(lambda h: h["0"].__setitem__(1, -1))
    elif case == "hardneg_out_of_range":
        _hardneg(lambda h: h["3"].__setitem__(0, 30))
    elif case == "hardneg_missing_query":
        _hardneg(lambda h: h.pop("5"))
    elif case == "passages_truncated":
        _truncate("data/preprocess/passages.memmap")
    elif case == "weights_truncated":
        _truncate("data/star/pytorch_model.bin")
    else:
        os.unlink("data/star/config.json")
    before = snapshot("data")
    assert expect in user_error(capsys, train_script.main, [*TRAIN, "--num_train_epochs", "1"])
    after = snapshot("data")
    assert {k: v for k, v in after.items() if k in before} == before and set(after) <= set(before)


@pytest.mark.slow
def test_truncated_embeddings_and_weights_stop_adore_and_inference_with_one_line(root, capsys):
    (ckpt,) = train_script.main([*TRAIN, "--num_train_epochs", "1"])
    infer(ckpt)
    pembed = f"data/evaluate/{CKPT}-inf64-4"
    _truncate(f"{pembed}/passages.memmap")
    msg = user_error(capsys, adore_train.main, [*ADORE, "--init_path", str(ckpt), "--pembed_dir", pembed])
    assert f"{pembed}/passages.memmap:" in msg and "truncated" in msg
    shutil.copytree("data/star", "st")
    from SeDR.modeling import build_model, save_pretrained

    save_pretrained(build_model("STAR_MaxP", "st", max_seg_num=4), "ours")
    _truncate("ours/model.safetensors")
    assert "ours/model.safetensors: unreadable or truncated checkpoint" in user_error(
        capsys, inference_script.main, [*INFER, "--model_path", "ours"]
    )


@pytest.mark.slow
def test_full_disk_while_encoding_names_the_file_and_keeps_earlier_outputs(root, capsys, monkeypatch):
    (ckpt,) = train_script.main([*TRAIN, "--num_train_epochs", "1"])
    infer(ckpt)
    out = Path(f"data/evaluate/{CKPT}-inf64-4")
    before = snapshot(out)
    state = load_file(str(ckpt / "model.safetensors"))
    state["norm.bias"] += 1.0  # other weights at the same path: the folder must be re-encoded
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    real_init = embedding_files.SegmentEmbeddingWriter.__init__

    def init_then_fill_disk(self, *a, **kw):
        real_init(self, *a, **kw)

        class Full:
            def __init__(self, f):
                self.f = f

            def write(self, b):
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, name):
                return getattr(self.f, name)

        self._emb = Full(self._emb)

    monkeypatch.setattr(embedding_files.SegmentEmbeddingWriter, "__init__", init_then_fill_disk)
    msg = user_error(capsys, inference_script.main, [*INFER, "--model_path", str(ckpt)])
    assert msg.startswith(f"error: no space left on the device while writing {out}/passages.memmap")
    assert snapshot(out) == before  # the earlier embeddings, record and metrics, as they were

    def save_fails(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail] PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", save_fails)
    models = snapshot("data/models")
    msg = user_error(
        capsys,
        train_script.main,
        [*TRAIN, "--num_train_epochs", "1", "--overwrite_output_dir", "--output_dir", "./m2"],
    )
    assert "could not write m2/epoch-1-64-4-6-STAR_MaxP" in msg
    assert not list(Path("m2").glob("*epoch*")) and snapshot("data/models") == models


def test_unwritable_or_full_output_folder_is_found_before_training(root, capsys, monkeypatch):
    Path("blocked").write_text("a file where a folder should be")
    msg = user_error(capsys, train_script.main, [*TRAIN, "--output_dir", "blocked/models"])
    assert "cannot write into blocked/models" in msg
    from SeDR.core import outputs

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 1000})())
    msg = user_error(capsys, train_script.main, [*TRAIN, "--num_train_epochs", "1"])
    # sizes in a unit that fits (a tiny disk is not "0.00 GiB")
    assert re.search(
        r"only 1000 bytes free on the device of data/models; the next checkpoint: about \d+ KiB needed", msg
    ), msg
    assert not list(Path("data/models").glob("epoch-*"))
    msg = user_error(capsys, inference_script.main, [*INFER, "--model_path", "data/star"])
    assert (
        "the segment embeddings and the result files: about" in msg
        and not Path("data/evaluate/star-inf64-4/passages.memmap").exists()
    )


def test_a_truncated_training_state_is_one_line_before_any_work(root, capsys):
    train_script.main([*TRAIN, "--num_train_epochs", "2", "--epochs_to_run", "1"])
    state = f"data/models/{CKPT}/training_state.pt"
    _truncate(state)
    before = snapshot("data")
    msg = user_error(capsys, train_script.main, [*TRAIN, "--num_train_epochs", "2", "--resume"])
    assert msg.startswith(f"error: {state} cannot be read (") and msg.endswith(
        "truncated or corrupt; restore the file, or train again with --overwrite_output_dir "
        "(the run's checkpoints move to a dated backup)"
    )
    assert snapshot("data") == before


def test_max_seg_num_above_every_document_warns_with_the_schedule_it_implies(root, caplog):
    argv = [*TRAIN, "--num_train_epochs", "1", "--max_seg_num", "100", "--output_dir", "./m100"]
    with caplog.at_level("WARNING"):
        (saved,) = train_script.main(argv)
    (msg,) = [r.getMessage() for r in caplog.records if "--max_seg_num 100 is above" in r.getMessage()]
    # the longest document's segments at L = 64 - 12 content tokens, counted here from its stored length
    longest_tokens = int(np.load("data/preprocess/passages_length.npy").max())
    longest = int(msg.split("is above the ")[1].split()[0])
    assert longest in (-(-longest_tokens // 52) - 1, -(-longest_tokens // 52))  # a short tail may drop
    n_queries = len({line.split()[0] for line in Path("data/preprocess/train-qrel.tsv").open()})
    assert msg == (
        f"--max_seg_num 100 is above the {longest} segments of the longest document in ./data/preprocess "
        "(at --max_seg_length 64); no document fills the extra slots, but the learning-rate schedule "
        f"counts them: {n_queries * 100 // 6} optimizer steps instead of {n_queries * longest // 6} "
        f"with --max_seg_num {longest}"
    )
    assert saved.name == "epoch-1-64-100-6-STAR_MaxP"
    with caplog.at_level("WARNING"):
        caplog.clear()
        train_script.main([*TRAIN, "--num_train_epochs", "1"])  # M = 4: below the longest document
    assert not [r for r in caplog.records if "is above the" in r.getMessage()]


def test_late_failures_are_found_before_encoding_and_results_are_readable_by_others(
    root, capsys, monkeypatch
):
    from SeDR.cli import inference as inference_cli
    from SeDR.core import outputs

    infer("data/star")
    out = Path("data/evaluate/star-inf64-4")
    mask = outputs.process_umask()
    for path in (
        out / "metrics.json",
        out / "dev.trec",
        out / "passages.memmap",
        Path("data/hard_negative.json"),
    ):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path  # as any tool would create them
    before = snapshot("data")

    def no_encoding(*a, **kw):
        raise AssertionError("encoded before the check")

    monkeypatch.setattr(inference_cli, "encode_corpus", no_encoding)
    monkeypatch.setattr(inference_cli, "encode_queries", no_encoding)
    Path("blocked").write_text("a file where a folder should be")
    msg = user_error(
        capsys,
        inference_script.main,
        [
            *INFER,
            "--model_path",
            "data/star",
            "--output_dir",
            "./new",
            "--gen_hardneg",
            "--hardneg_path",
            "blocked/hn.json",
        ],
    )
    assert msg.startswith("error: cannot write into blocked (--hardneg_path blocked/hn.json): ")
    os.rename("data/preprocess/pid2offset.pickle", "pid2offset.pickle")
    msg = user_error(
        capsys, inference_script.main, [*INFER, "--model_path", "data/star", "--output_dir", "./new"]
    )
    assert msg.startswith(
        "error: missing input file data/preprocess/pid2offset.pickle; the run files need it"
    )
    os.rename("pid2offset.pickle", "data/preprocess/pid2offset.pickle")
    assert not Path("new").exists() and snapshot("data") == before
    # a folder whose embeddings are reused still needs room for the result files: checked first
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 1000})())
    msg = user_error(capsys, inference_script.main, [*INFER, "--model_path", "data/star"])
    assert re.fullmatch(
        rf"error: only 1000 bytes free on the device of {out}; the result files: about [\d.]+ KiB needed; "
        "free space or choose another folder",
        msg,
    ), msg
    assert snapshot("data") == before
