"""Scale-out on CPU: sharded encoding equals single-process encoding; DDP training with gloo."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import cwd
from safetensors.torch import load_file

from SeDR import inference, retrieval

INFER = ["--model_class", "STAR_MaxP", "--max_query_length", "16", "--max_seg_length", "64", "--max_seg_num", "4",
         "--model_path", "./data/star", "--faiss_gpus", "0", "--max_bsize", "7"]
TRAIN = ["--model_class", "SeDR", "--max_query_length", "16", "--max_seg_length", "64", "--max_seg_num", "4",
         "--max_bsize", "6", "--preprocess_dir", "./data/preprocess", "--hardneg_path", "./data/hard_negative.json",
         "--init_path", "./data/star", "--output_dir", "./data/models", "--logging_dir", "./data/log",
         "--learning", "1e-3", "--warmup_steps", "1", "--hardneg_topk", "100", "--cache_size", "5",
         "--gradient_accumulation_steps", "2", "--num_train_epochs", "1", "--use_gradient_checkpointing"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shards_equal_single_process(root):
    inference.main(INFER + ["--output_dir", "./single"])
    assert inference.main(INFER + ["--output_dir", "./sharded", "--num_shards", "2", "--shard_id", "1"]) is None
    assert not (Path("sharded") / "passages.memmap").exists()
    inference.main(INFER + ["--output_dir", "./sharded", "--num_shards", "2", "--shard_id", "0"])  # merges
    a, b = retrieval.load_segment_embeddings("single"), retrieval.load_segment_embeddings("sharded")
    assert np.array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=0, atol=1e-6)
    assert not list(Path("sharded").glob("passages-shard*"))
    # A complete shard is not encoded again (its files are gone after the merge; the merged index is reused).
    before = (Path("sharded") / "passages.memmap").stat().st_mtime_ns
    inference.main(INFER + ["--output_dir", "./sharded", "--num_shards", "2", "--shard_id", "0"])
    assert (Path("sharded") / "passages.memmap").stat().st_mtime_ns == before


def _worker(rank: int, world: int, port: int, root: str, task: str, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with cwd(root):
        if task == "train":
            from SeDR import train

            trainer = train.run(TRAIN)
            torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                       Path(out) / f"rank{rank}.pt")
        else:
            inference.main(INFER + ["--output_dir", "./ddp"])


def _spawn(task: str, root: Path, out: Path):
    mp.spawn(_worker, args=(2, _free_port(), str(root), task, str(out)), nprocs=2, join=True)


@pytest.mark.slow
def test_ddp_training_two_ranks(root, tmp_path):
    _spawn("train", root, tmp_path)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k          # gradients were averaged: ranks stay in lockstep
    ckpt = root / "data" / "models" / "epoch-1-64-4-6-SeDR"   # same name as a single-process run
    saved = load_file(str(ckpt / "model.safetensors"))
    assert saved.keys() == r0.keys()
    for k in saved:
        assert torch.equal(saved[k], r0[k]), k      # the checkpoint holds rank 0's final weights
    star = torch.load(root / "data" / "star" / "pytorch_model.bin", weights_only=True)
    assert not torch.equal(saved["embeddingHead.weight"], star["embeddingHead.weight"])  # it trained


@pytest.mark.slow
def test_torchrun_encoding_equals_single_process(root, tmp_path):
    inference.main(INFER + ["--output_dir", "./single"])
    _spawn("infer", root, tmp_path)
    a, b = retrieval.load_segment_embeddings(root / "single"), retrieval.load_segment_embeddings(root / "ddp")
    assert np.array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=0, atol=1e-6)
    assert (root / "ddp" / "metrics.json").exists()


@pytest.mark.parametrize("num_shards", [2, 3, 7])
def test_shard_merge_search_equals_flat_search(num_shards):
    rng = np.random.default_rng(num_shards)
    vectors = rng.standard_normal((53, 16)).astype(np.float32)
    queries = rng.standard_normal((9, 16)).astype(np.float32)
    flat_s, flat_r = retrieval.FaissFlatIndex(vectors, None, show_progress=False).search(queries, 20)
    shard_s, shard_r = retrieval.ShardedCpuIndex(vectors, num_shards).search(queries, 20)
    assert np.array_equal(flat_r, shard_r)               # continuous random scores: no ties
    np.testing.assert_allclose(flat_s, shard_s, rtol=0, atol=1e-5)
    # More hits asked than rows exist: both pad with -1.
    _, r_all = retrieval.ShardedCpuIndex(vectors, num_shards).search(queries, 60)
    assert (r_all[:, 53:] == -1).all() and sorted(r_all[0, :53].tolist()) == list(range(53))


def test_search_shards_flag_gives_the_flat_ranking(root):
    import json

    inference.main(INFER + ["--output_dir", "./flat"])
    flat = json.loads((Path("flat") / "metrics.json").read_text())["scores"]
    inference.main(INFER + ["--output_dir", "./flat3", "--search_shards", "3"])
    shard = json.loads((Path("flat3") / "metrics.json").read_text())["scores"]
    assert flat == shard
    def run_lines(folder):  # without the run tag (the folder name)
        return [line.split()[:5] for line in (Path(folder) / "dev.trec").read_text().splitlines()]

    assert run_lines("flat") == run_lines("flat3")
