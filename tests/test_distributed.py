"""Scale-out on CPU: sharded encoding equals single-process encoding; DDP training with gloo: an exact
``--resume``, the refusal of another world size, and ``no_sync`` during accumulation."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import cwd, user_error
from safetensors.torch import load_file

from SeDR import inference
from SeDR import train as train_script
from SeDR.modeling import cross_entropy_scores
from SeDR.retrieval import embedding_files, exact_search
from SeDR.training.loop import uses_no_sync

INFER = [
    "--model_class",
    "STAR_MaxP",
    "--max_query_length",
    "16",
    "--max_seg_length",
    "64",
    "--max_seg_num",
    "4",
    "--model_path",
    "./data/star",
    "--faiss_gpus",
    "0",
    "--max_bsize",
    "7",
]
TRAIN = [
    "--model_class",
    "SeDR",
    "--max_query_length",
    "16",
    "--max_seg_length",
    "64",
    "--max_seg_num",
    "4",
    "--max_bsize",
    "6",
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
    "--learning",
    "1e-3",
    "--warmup_steps",
    "1",
    "--hardneg_topk",
    "100",
    "--cache_size",
    "5",
    "--gradient_accumulation_steps",
    "2",
    "--num_train_epochs",
    "1",
    "--use_gradient_checkpointing",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_shards_equal_single_process(root):
    inference.main(INFER + ["--output_dir", "./single"])
    assert (
        inference.main(INFER + ["--output_dir", "./sharded", "--num_shards", "2", "--shard_id", "1"]) is None
    )
    assert not (Path("sharded") / "passages.memmap").exists()
    inference.main(INFER + ["--output_dir", "./sharded", "--num_shards", "2", "--shard_id", "0"])  # merges
    a, b = (
        embedding_files.load_segment_embeddings("single"),
        embedding_files.load_segment_embeddings("sharded"),
    )
    assert np.array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=0, atol=1e-6)
    assert not list(Path("sharded").glob("passages-shard*"))
    # A complete shard is not encoded again (its files are gone after the merge; the merged index is reused).
    before = (Path("sharded") / "passages.memmap").stat().st_mtime_ns
    inference.main(INFER + ["--output_dir", "./sharded", "--num_shards", "2", "--shard_id", "0"])
    assert (Path("sharded") / "passages.memmap").stat().st_mtime_ns == before


def _worker(rank: int, world: int, port: int, root: str, task: str, out: str):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    with cwd(root):
        if task.startswith("train"):
            from SeDR.cli.train import run_training

            x_device = task == "train_x"
            extra = ["--negatives_x_device", "--output_dir", "./data/models_x"] if x_device else []
            trainer = run_training(TRAIN + extra)
            torch.save(
                {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                Path(out) / f"rank{rank}{'_x' if x_device else ''}.pt",
            )
        elif task == "infer_hardneg":
            inference.main(
                INFER + ["--output_dir", "./ddp-hn", "--gen_hardneg", "--hardneg_path", "./hn-ddp.json"]
            )
        else:
            inference.main(INFER + ["--output_dir", "./ddp"])


def _spawn(task: str, root: Path, out: Path):
    mp.spawn(_worker, args=(2, _free_port(), str(root), task, str(out)), nprocs=2, join=True)


@pytest.mark.slow
def test_ddp_training_two_ranks(root, tmp_path):
    _spawn("train", root, tmp_path)
    _spawn("train_x", root, tmp_path)  # the same run with --negatives_x_device
    star = torch.load(root / "data" / "star" / "pytorch_model.bin", weights_only=True)
    for tag, folder in (("", "models"), ("_x", "models_x")):
        r0, r1 = torch.load(tmp_path / f"rank0{tag}.pt"), torch.load(tmp_path / f"rank1{tag}.pt")
        for k in r0:
            assert torch.equal(r0[k], r1[k]), k  # gradients were averaged: ranks stay in lockstep
        ckpt = root / "data" / folder / "epoch-1-64-4-6-SeDR"  # same name as a single-process run
        saved = load_file(str(ckpt / "model.safetensors"))
        assert saved.keys() == r0.keys()
        for k in saved:
            assert torch.equal(saved[k], r0[k]), k  # the checkpoint holds rank 0's final weights
        assert not torch.equal(saved["embeddingHead.weight"], star["embeddingHead.weight"])  # it trained
    # Gathering changes the loss (more negatives per query), hence the trained weights.
    plain, gathered = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank0_x.pt")
    assert not torch.equal(plain["embeddingHead.weight"], gathered["embeddingHead.weight"])


def _train_worker(rank: int, world: int, port: int, root: str, argv: list[str], out: str):
    """One rank of ``SeDR/train.py ARGV``; saves its final weights to ``out/rank{rank}.pt``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    with cwd(root):
        from SeDR.cli.train import run_training

        trainer = run_training(argv)
        weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save(weights, Path(out) / f"rank{rank}.pt")


def _train_two_ranks(root: Path, argv: list[str], out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_train_worker, args=(2, _free_port(), str(root), argv, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def _two_epochs(model_class: str) -> list[str]:
    argv = list(TRAIN)
    argv[argv.index("--model_class") + 1] = model_class
    argv[argv.index("--num_train_epochs") + 1] = "2"
    return argv


@pytest.mark.slow
@pytest.mark.parametrize("model_class", ["SeDR", "STAR_MaxP"])
def test_two_ranks_resume_gives_the_uninterrupted_weights(root, tmp_path, model_class):
    argv = _two_epochs(model_class)
    straight = _train_two_ranks(root, argv + ["--output_dir", "./straight"], tmp_path / "straight")
    _train_two_ranks(root, argv + ["--output_dir", "./cut", "--epochs_to_run", "1"], tmp_path / "cut")
    resumed = _train_two_ranks(root, argv + ["--output_dir", "./cut", "--resume"], tmp_path / "resumed")
    for rank in range(2):
        assert straight[rank].keys() == resumed[rank].keys()
        for k in straight[rank]:
            assert torch.equal(straight[rank][k], resumed[rank][k]), (rank, k)
    state = torch.load(
        root / "cut" / f"epoch-2-64-4-6-{model_class}" / "training_state.pt", weights_only=False
    )
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    if model_class == "SeDR":  # each rank's Late-Cache holds its own queries: rank 1's is not rank 0's
        assert not torch.equal(state["ranks"][0]["cache"]["queries"], state["ranks"][1]["cache"]["queries"])


@pytest.mark.slow
def test_resume_with_another_world_size_is_refused_in_one_line(root, tmp_path, capsys):
    argv = _two_epochs("SeDR") + ["--output_dir", "./two"]
    _train_two_ranks(root, argv + ["--epochs_to_run", "1"], tmp_path / "two")
    before = (root / "two" / "epoch-1-64-4-6-SeDR" / "training_state.pt").read_bytes()
    line = user_error(capsys, train_script.main, argv + ["--resume"])
    assert "number of processes: saved 2, now 1" in line, line
    assert (root / "two" / "epoch-1-64-4-6-SeDR" / "training_state.pt").read_bytes() == before
    assert not (root / "two" / "epoch-2-64-4-6-SeDR").exists()


def _no_sync_worker(rank: int, world: int, port: int, root: str, out: str):
    """Three micro-steps of the trainer with DDP's all-reduce on each, and with ``no_sync`` on the
    first two; saves both accumulated gradients."""
    import torch.distributed as dist

    from SeDR.cli import flags
    from SeDR.core.runtime import resolve_precision
    from SeDR.data.segmentation import SegmentSpec
    from SeDR.modeling import build_model
    from SeDR.training.loop import Trainer, load_train_data

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    argv = _two_epochs("SeDR_without_LateCache") + ["--gradient_accumulation_steps", "3", "--max_grad_norm"]
    with cwd(root):
        args = flags.build_train_parser().parse_args(argv + ["-1"])
        model = build_model(
            args.model_class,
            args.init_path,
            max_seg_num=args.max_seg_num,
            gradient_checkpointing=args.use_gradient_checkpointing,
        )
        spec = SegmentSpec(args.max_seg_length, args.max_seg_num, extra_reserve=model.extra_content_reserve)
        data = load_train_data(args.preprocess_dir, args.hardneg_path, spec)
        cpu = torch.device("cpu")
        trainer = Trainer(args, model, data, cpu, resolve_precision(cpu), rank, world)
        batches = [trainer.collator(items) for items in list(trainer.sampler)[:3]]
        grads = {}
        for mode in ("sync", "no_sync"):
            torch.manual_seed(0)  # the same dropout in both
            model.zero_grad(set_to_none=True)
            for i, batch in enumerate(batches):
                trainer.micro_step(batch, sync=mode == "sync" or i == len(batches) - 1)
            grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"grads": grads, "uses_no_sync": trainer.no_sync}, Path(out) / f"ns{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize(
    "world,accum,clip,expected",
    [(2, 4, -1, True), (2, 4, 1.0, False), (2, 1, -1, False), (1, 4, -1, False)],
)
def test_no_sync_only_where_nothing_reads_the_partial_sum(world, accum, clip, expected):
    args = argparse.Namespace(gradient_accumulation_steps=accum, max_grad_norm=clip)
    assert uses_no_sync(args, world) is expected


@pytest.mark.slow
def test_no_sync_accumulation_gives_the_synced_gradients(root, tmp_path):
    mp.spawn(_no_sync_worker, args=(2, _free_port(), str(root), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "ns0.pt"), torch.load(tmp_path / "ns1.pt")
    assert r0["uses_no_sync"]  # --max_grad_norm -1: nothing reads the partial sum
    synced, local = r0["grads"]["sync"], r0["grads"]["no_sync"]
    assert synced.keys() == local.keys() and len(synced) > 10
    worst = 0.0
    for n in synced:
        assert torch.equal(local[n], r1["grads"]["no_sync"][n]), n  # averaged at the last micro-step
        scale = float(synced[n].abs().max()) or 1.0
        worst = max(worst, float((local[n] - synced[n]).abs().max()) / scale)
    # The same sum in another order: (a1 + b1)/2 + (a2 + b2)/2 + ... vs (a1 + a2 + ...)/2 + ...
    assert worst < 1e-5, worst


@pytest.mark.slow
def test_torchrun_encoding_equals_single_process(root, tmp_path):
    inference.main(INFER + ["--output_dir", "./single"])
    _spawn("infer", root, tmp_path)
    a, b = (
        embedding_files.load_segment_embeddings(root / "single"),
        embedding_files.load_segment_embeddings(root / "ddp"),
    )
    assert np.array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=0, atol=1e-6)
    assert (root / "ddp" / "metrics.json").exists()


# --------------------------------------------------------------------- cross-device negatives
# Rank 0 holds queries 10, 11 and rank 1 query 12 (unequal micro-batches); d = 3, M = 1, h = 1.
XDEV = {
    0: {
        "q": [[1, 0, 0], [0, 1, 0]],
        "pos": [[2, 0, 0], [0, 1, 0]],
        "neg": [[0, 0, 1], [1, 1, 0]],
        "qids": [10, 11],
        "pos_ids": [100, 101],
        "neg_ids": [200, 201],
    },
    1: {
        "q": [[0, 0, 1]],
        "pos": [[0, 0, 3]],
        "neg": [[0, 1, 0]],
        "qids": [12],
        "pos_ids": [102],
        "neg_ids": [101],
    },
}
XDEV_REL = {10: [100], 11: [101], 12: [102, 200]}


def _xdev_worker(rank: int, world: int, port: int, out: str):
    import torch.distributed as dist

    from SeDR.data.collation import pair_masks
    from SeDR.modeling import cross_entropy_labels, cross_entropy_loss, star_pairwise_loss
    from SeDR.modeling.cross_device import gather_objects, gather_rows

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mine = XDEV[rank]
    q, pos, neg = (
        torch.tensor(mine[k], dtype=torch.float32, requires_grad=True) for k in ("q", "pos", "neg")
    )
    everyone = gather_objects((mine["pos_ids"], mine["neg_ids"]))
    rel_mask, hard_mask = pair_masks(
        mine["qids"], XDEV_REL, [d for p, _ in everyone for d in p], [d for _, n in everyone for d in n]
    )
    pos_all, offset = gather_rows(pos[:, None])  # (3, 1, 3)
    neg_all, _ = gather_rows(neg[:, None])
    scores = cross_entropy_scores(q, pos_all, neg_all, rel_mask, hard_mask, positive_offset=offset)
    labels = cross_entropy_labels(len(q), 0, pos_all.shape[0], offset)
    ce, _ = cross_entropy_loss(scores, len(q), labels)
    star, _ = star_pairwise_loss(q, pos_all, neg_all, rel_mask, hard_mask, positive_offset=offset)
    ce.backward()
    torch.save(
        {
            "ce": ce.item(),
            "star": star.item(),
            "offset": offset,
            "rel_mask": rel_mask,
            "hard_mask": hard_mask,
            "grads": [t.grad for t in (q, pos, neg)],
        },
        Path(out) / f"xdev{rank}.pt",
    )
    dist.barrier()  # no rank tears the group down while the other still has collectives in flight
    dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_negatives_give_the_hand_computed_loss(tmp_path):
    import math

    mp.spawn(_xdev_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "xdev0.pt"), torch.load(tmp_path / "xdev1.pt")
    assert (r0["offset"], r1["offset"]) == (0, 2)
    # Columns: positives of docs 100, 101, 102 | negatives 200, 201, 101 (rank order).
    assert r0["rel_mask"].tolist() == [[0, 1, 1], [1, 0, 1]]
    assert r0["hard_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]  # doc 101 is query 11's positive
    assert r1["rel_mask"].tolist() == [[1, 1, 0]] and r1["hard_mask"].tolist() == [
        [0, 1, 1]
    ]  # 200 relevant to 12
    e = math.e
    # CE: rows [2,0,0 | 0,1,0] -> 2; [0,1,0 | 0,1,masked] -> 1; rank 1: [0,0,3 | masked,0,0] -> 3.
    ce0 = ((math.log(e**2 + e + 4) - 2) + (math.log(3 + 2 * e) - 1)) / 2
    ce1 = math.log(4 + e**3) - 3
    assert r0["ce"] == pytest.approx(ce0, abs=1e-6) and r1["ce"] == pytest.approx(ce1, abs=1e-6)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731  softplus(S - p) over unmasked pairs
    star0 = (
        2 * sp(-2)
        + 2 * sp(-2)
        + sp(-1)  # query 10 (p = 2): in-batch 0, 0; hard 0, 1, 0
        + 2 * sp(-1)
        + sp(-1)
        + sp(0)
    ) / 9  # query 11 (p = 1): in-batch 0, 0; hard 0, 1 (101 masked)
    star1 = (2 * sp(-3) + 2 * sp(-3)) / 4  # query 12 (p = 3): in-batch 0, 0; hard 0, 0 (200 masked)
    assert r0["star"] == pytest.approx(star0, abs=1e-6) and r1["star"] == pytest.approx(star1, abs=1e-6)
    # Gradients: each rank's rows receive the gradient of the sum of both ranks' losses
    # (one process, brute force).
    q, pos, neg = (
        torch.tensor(XDEV[0][k] + XDEV[1][k], dtype=torch.float32, requires_grad=True)
        for k in ("q", "pos", "neg")
    )
    total = 0
    for rank, (a, b) in enumerate([(0, 2), (2, 3)]):
        r = (r0, r1)[rank]
        s = cross_entropy_scores(
            q[a:b], pos[:, None], neg[:, None], r["rel_mask"], r["hard_mask"], positive_offset=a
        )
        total = total + torch.nn.functional.cross_entropy(s, torch.arange(a, b))
    total.backward()
    for rank, (a, b) in enumerate([(0, 2), (2, 3)]):
        got_q, got_pos, got_neg = (r0, r1)[rank]["grads"]
        torch.testing.assert_close(got_q, q.grad[a:b], rtol=0, atol=1e-6)
        torch.testing.assert_close(got_pos, pos.grad[a:b], rtol=0, atol=1e-6)
        torch.testing.assert_close(got_neg, neg.grad[a:b], rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_shards", [2, 3, 7])
def test_shard_merge_search_equals_flat_search(num_shards):
    rng = np.random.default_rng(num_shards)
    vectors = rng.standard_normal((53, 16)).astype(np.float32)
    queries = rng.standard_normal((9, 16)).astype(np.float32)
    flat_s, flat_r = exact_search.FaissFlatIndex(vectors, None, show_progress=False).search(queries, 20)
    shard_s, shard_r = exact_search.ShardedCpuIndex(vectors, num_shards).search(queries, 20)
    assert np.array_equal(flat_r, shard_r)  # continuous random scores: no ties
    np.testing.assert_allclose(flat_s, shard_s, rtol=0, atol=1e-5)
    # More hits asked than rows exist: both pad with -1.
    _, r_all = exact_search.ShardedCpuIndex(vectors, num_shards).search(queries, 60)
    assert (r_all[:, 53:] == -1).all() and sorted(r_all[0, :53].tolist()) == list(range(53))


@pytest.mark.slow
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


@pytest.mark.slow
def test_torchrun_search_writes_what_one_process_writes_over_the_same_vectors(root, tmp_path):
    """Under torchrun rank 0 searches the merged shards: its run files, metrics and hard negatives are
    byte for byte those of one process searching the same vectors."""
    import json
    import shutil

    _spawn("infer_hardneg", root, tmp_path)
    single = root / "single-search"
    single.mkdir()
    for name in ("passages.memmap", "passages-id.memmap", "passages-meta.json"):
        shutil.copy2(root / "ddp-hn" / name, single / name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: the query encoder's float sums depend on the thread count
    try:
        with cwd(root):
            inference.main(
                INFER
                + ["--output_dir", "./single-search", "--reuse_embeddings", "--gen_hardneg"]
                + ["--hardneg_path", "./hn.json"]
            )
    finally:
        torch.set_num_threads(threads)
    assert (root / "hn-ddp.json").read_bytes() == (root / "hn.json").read_bytes()
    for split in ("dev", "test", "2020test"):
        a, b = root / "ddp-hn", single
        assert (a / f"{split}.msmarco.tsv").read_bytes() == (b / f"{split}.msmarco.tsv").read_bytes()
        without_tag = [
            [line.rsplit(" ", 1)[0] for line in (f / f"{split}.trec").read_text().splitlines()]
            for f in (a, b)
        ]
        assert without_tag[0] == without_tag[1] and without_tag[0]
    metrics = [json.loads((f / "metrics.json").read_text()) for f in (root / "ddp-hn", single)]
    assert metrics[0]["splits"] == metrics[1]["splits"]
