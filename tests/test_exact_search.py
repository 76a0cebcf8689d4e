"""Exact inner-product search: faiss vs torch, the GPU fallback and the GPU wiring."""

import json
import logging

import numpy as np
import pytest
import torch

from SeDR.retrieval import exact_search


def test_faiss_and_torch_search_agree_with_k_larger_than_corpus(random_corpus):
    vectors, _, queries = random_corpus
    k = len(vectors) + 3
    fs, fr = exact_search.search(
        exact_search.FaissFlatIndex(vectors, show_progress=False), queries, k, 8, False
    )
    ts, tr = exact_search.search(exact_search.TorchFlatIndex(vectors), queries, k, 8, False)
    assert fr.shape == tr.shape == (20, k)
    assert (fr[:, -3:] == -1).all() and (tr[:, -3:] == -1).all()
    np.testing.assert_array_equal(fr[:, :-3], tr[:, :-3])
    np.testing.assert_allclose(fs[:, :-3], ts[:, :-3], rtol=1e-5, atol=1e-5)


def test_faiss_gpus_fall_back_to_cpu_with_one_warning(random_corpus, caplog, monkeypatch):
    vectors, _, queries = random_corpus
    monkeypatch.setattr(exact_search, "faiss_gpu_available", lambda: False)  # as on a CPU machine
    with caplog.at_level(logging.WARNING, logger="SeDR.retrieval.exact_search"):
        gpu = exact_search.FaissFlatIndex(vectors, gpu_ids=[0], show_progress=False)
        gs, gr = exact_search.search(gpu, queries, 64, show_progress=False)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "faiss-gpu" in warnings[0].getMessage()
    assert gpu.gpu_ids == []
    cs, cr = exact_search.search(
        exact_search.FaissFlatIndex(vectors, show_progress=False), queries, 64, show_progress=False
    )
    np.testing.assert_array_equal(gr, cr)
    np.testing.assert_array_equal(gs, cs)


def test_resolve_faiss_gpus_without_request_is_silent(caplog):
    with caplog.at_level(logging.WARNING):
        assert exact_search.resolve_faiss_gpus(None) == [] and exact_search.resolve_faiss_gpus([]) == []
    assert not caplog.records


class FakeGpuFaiss:
    """Real faiss for the CPU index; a recording stand-in for the GPU layer faiss-cpu lacks."""

    def __init__(self, n_gpus):
        import types

        import faiss

        self.real, self.n_gpus, self.calls, self.temp_memory = faiss, n_gpus, [], []
        fake = self

        class Res:
            def setTempMemory(self, n):
                fake.temp_memory.append(n)

        self.StandardGpuResources = Res
        self.GpuClonerOptions = lambda: types.SimpleNamespace(useFloat16=None)
        self.GpuMultipleClonerOptions = lambda: types.SimpleNamespace(useFloat16=None, shard=None)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_num_gpus(self):
        return self.n_gpus

    def index_cpu_to_gpu(self, res, gpu, index, co):
        self.calls.append(("single", gpu, co.useFloat16))
        return self.real.clone_index(index)

    def index_cpu_to_gpu_multiple_py(self, resources, index, co, gpus):
        assert len(resources) == len(gpus)
        self.calls.append(("sharded", list(gpus), co.useFloat16, co.shard))
        return self.real.clone_index(index)


def test_gpu_wiring_single_and_sharded(random_corpus, monkeypatch):
    vectors, _, queries = random_corpus
    fake = FakeGpuFaiss(n_gpus=2)
    monkeypatch.setattr(exact_search, "_faiss", lambda: fake)
    cpu = exact_search.search(
        exact_search.build_index(vectors, None, show_progress=False), queries, 32, show_progress=False
    )
    one = exact_search.build_index(vectors, [1], fp16=True, show_progress=False)
    both = exact_search.build_index(vectors, [0, 1], show_progress=False)
    assert fake.calls == [("single", 1, True), ("sharded", [0, 1], False, True)]
    assert fake.temp_memory == [
        512 * 1024 * 1024,
        200 * 1024 * 1024,
        200 * 1024 * 1024,
    ]  # the original's temporary memory
    for index in (one, both):
        assert index.ntotal == len(vectors)
        np.testing.assert_array_equal(exact_search.search(index, queries, 32, show_progress=False)[1], cpu[1])
    with pytest.raises(ValueError, match="GPUs 0..1"):
        exact_search.build_index(vectors, [2], show_progress=False)


# ------------------------------------------------------------------ canonical order, both backends


def brute_force_topk(vectors, queries, k):
    """Score descending, then row ascending; ``-1`` / ``-inf`` past the last row."""
    scores = queries.astype(np.float64) @ vectors.T.astype(np.float64)  # exact for the small integers used
    n = len(vectors)
    rows = np.full((len(queries), k), -1, dtype=np.int64)
    best = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for i, s in enumerate(scores):
        order = np.lexsort((np.arange(n), -s))[:k]
        rows[i, : len(order)], best[i, : len(order)] = order, s[order]
    return best, rows


def tie_data(kind, rng, n=400, d=6):
    if kind == "integer":  # scores are small integers: many exact ties
        return (
            rng.integers(-2, 3, size=(n, d)).astype(np.float32),
            rng.integers(-2, 3, size=(30, d)).astype(np.float32),
        )
    if kind == "duplicated":  # eighths: exact products; a third of the rows copies of a few others
        x = rng.integers(-16, 17, size=(n, d)).astype(np.float32) / 8
        x[rng.integers(0, n, size=n // 3)] = x[rng.integers(0, 5, size=n // 3)]
        return x, rng.integers(-16, 17, size=(30, d)).astype(np.float32) / 8
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((30, d)).astype(np.float32)


def every_index(vectors):
    return {
        "faiss": exact_search.FaissFlatIndex(vectors, show_progress=False),
        "torch": exact_search.TorchFlatIndex(vectors),
        "torch, chunks of 37 rows": exact_search.TorchFlatIndex(vectors, chunk_rows=37),
        "faiss, 3 shards": exact_search.ShardedCpuIndex(vectors, 3),
        "torch, 5 shards": exact_search.ShardedCpuIndex(
            vectors, 5, lambda v, offset: exact_search.TorchFlatIndex(v, chunk_rows=29)
        ),
        "torch, 3 devices": exact_search.TorchShardedIndex(vectors, ["cpu"] * 3, chunk_rows=50),
        "faiss, blocks of 64 rows": exact_search.FaissFlatIndex(
            vectors, show_progress=False, settings=blocks(64)
        ),
        "torch, blocks of 41 rows, chunks of 16": exact_search.TorchFlatIndex(
            vectors, chunk_rows=16, settings=blocks(41)
        ),
        "faiss, 3 shards of blocks of 50 rows": exact_search.ShardedCpuIndex(vectors, 3, settings=blocks(50)),
    }


def blocks(rows):
    return exact_search.SearchSettings(block_rows=rows)


@pytest.mark.parametrize("kind", ["integer", "duplicated", "normal"])
def test_every_backend_returns_the_canonical_top_k(kind):
    rng = np.random.default_rng(["integer", "duplicated", "normal"].index(kind))
    vectors, queries = tie_data(kind, rng)
    for k in (1, 7, 100, len(vectors) + 5):
        ref_s, ref_r = brute_force_topk(vectors, queries, k)
        for name, index in every_index(vectors).items():
            for q in (slice(0, 30), slice(0, 6)):  # faiss takes a BLAS path from 20 queries, a loop below
                s, r = index.search(queries[q], k)
                np.testing.assert_array_equal(r, ref_r[q], err_msg=f"{name}, k={k}")
                np.testing.assert_allclose(s, ref_s[q], rtol=1e-5, atol=1e-5, err_msg=f"{name}, k={k}")


def test_faiss_alone_orders_ties_otherwise():
    """Why FaissFlatIndex reorders: raw faiss lists tied rows by descending id and keeps an arbitrary
    subset of the tied rows at the cut."""
    vectors, queries = tie_data("integer", np.random.default_rng(0))
    import faiss

    index = exact_search.FaissFlatIndex(vectors, show_progress=False)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    raw = flat.search(queries, 10)[1]
    assert not np.array_equal(raw, brute_force_topk(vectors, queries, 10)[1])
    np.testing.assert_array_equal(index.search(queries, 10)[1], brute_force_topk(vectors, queries, 10)[1])


def test_empty_and_tiny_indexes():
    vectors = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)  # 2 rows, tied for every query
    queries = np.array([[2.0, 1.0]], dtype=np.float32)
    for name, index in every_index(vectors).items():  # 3 and 5 shards of 2 rows: empty shards
        s, r = index.search(queries, 4)
        assert r.tolist() == [[0, 1, -1, -1]], name
        assert s[0, :2].tolist() == [2.0, 2.0] and np.isneginf(s[0, 2:]).all(), name
    for empty in (
        exact_search.TorchFlatIndex(np.zeros((0, 2), np.float32)),
        exact_search.FaissFlatIndex(np.zeros((0, 2), np.float32), show_progress=False),
    ):
        s, r = empty.search(queries, 3)
        assert r.tolist() == [[-1, -1, -1]] and np.isneginf(s).all()


def test_torch_index_uses_a_memmap_in_place_and_bounds_its_chunks(tmp_path):
    rows = np.memmap(tmp_path / "v.memmap", dtype=np.float32, mode="w+", shape=(1000, 8))
    rows[:] = np.random.default_rng(0).standard_normal((1000, 8))
    rows.flush()
    ro = np.memmap(tmp_path / "v.memmap", dtype=np.float32, mode="r", shape=(1000, 8))
    index = exact_search.TorchFlatIndex(ro)
    assert index.vectors.data_ptr() == ro.ctypes.data  # no copy of the segment vectors
    for n in (1, 64, 1024, 4096):
        assert index.rows_per_chunk(n) * n * 4 <= exact_search.TORCH_SCORE_BYTES
    q = np.asarray(ro[:5]) + 0.1
    np.testing.assert_array_equal(index.search(q, 50)[1], brute_force_topk(np.asarray(ro), q, 50)[1])


def test_resolve_search_backend(monkeypatch, caplog):
    monkeypatch.setattr(exact_search, "faiss_gpu_available", lambda: False)
    monkeypatch.setattr(exact_search.torch.cuda, "is_available", lambda: False)
    assert exact_search.resolve_search_backend("auto", None) == (exact_search.CPU_AUTO_BACKEND, [])
    assert exact_search.resolve_search_backend("faiss", [0]) == (
        "faiss",
        [0],
    )  # FaissFlatIndex warns and goes to CPU
    with caplog.at_level(logging.WARNING, logger="SeDR.retrieval.exact_search"):
        assert exact_search.resolve_search_backend("torch", [0]) == ("torch", [])
    assert len(caplog.records) == 1 and "no CUDA GPU" in caplog.records[0].getMessage()
    # A CUDA GPU without faiss-gpu (the CUDA 13 case): auto searches with torch on it.
    monkeypatch.setattr(exact_search.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(exact_search.torch.cuda, "device_count", lambda: 2)
    assert exact_search.resolve_search_backend("auto", [1, 0]) == ("torch", [1, 0])
    with pytest.raises(ValueError, match="GPUs 0..1"):
        exact_search.resolve_search_backend("torch", [2])
    monkeypatch.setattr(exact_search, "faiss_gpu_available", lambda: True)
    assert exact_search.resolve_search_backend("auto", [0]) == ("faiss", [0])
    assert exact_search.resolve_search_backend("torch", [0]) == ("torch", [0])
    with pytest.raises(ValueError, match="choose one of"):
        exact_search.resolve_search_backend("gpu", [0])


def test_no_faiss_installed_still_searches(monkeypatch, random_corpus):
    """GPU images without faiss: auto needs no faiss at all."""
    vectors, _, queries = random_corpus

    def missing():
        raise ImportError("No module named 'faiss'")

    monkeypatch.setattr(exact_search, "_faiss", missing)
    assert not exact_search.faiss_gpu_available()
    index = exact_search.build_index(vectors, [0], show_progress=False, search_shards=2)
    np.testing.assert_array_equal(index.search(queries, 9)[1], brute_force_topk(vectors, queries, 9)[1])


@pytest.mark.slow
def test_inference_with_torch_and_faiss_backends_writes_the_same_results(root):
    from pathlib import Path

    from SeDR import inference

    cmd = (
        "--model_class STAR_MaxP --max_query_length 32 --max_seg_length 64 --max_seg_num 4 "
        "--model_path ./data/star --faiss_gpus 0 --gen_hardneg"
    ).split()
    for backend in ("faiss", "torch"):
        inference.main(
            cmd
            + [
                "--search_backend",
                backend,
                "--output_dir",
                f"./{backend}",
                "--hardneg_path",
                f"./{backend}.json",
            ]
        )
    scores = [json.loads((Path(b) / "metrics.json").read_text())["scores"] for b in ("faiss", "torch")]
    assert scores[0] == scores[1]
    for split in ("dev", "test", "2020test"):
        runs = [
            [line.split() for line in (Path(b) / f"{split}.trec").read_text().splitlines()]
            for b in ("faiss", "torch")
        ]
        assert len(runs[0]) == len(runs[1]) > 0
        np.testing.assert_allclose([float(r[4]) for r in runs[0]], [float(r[4]) for r in runs[1]], rtol=1e-5)
        # The same documents per query; two may swap only when their scores are within float rounding
        # (the backends' matrix products round differently, and BLAS kernels differ between CPUs).
        ranked = [{}, {}]
        for run, by_query in zip(runs, ranked):
            for qid, _, doc, _, score, _ in run:
                by_query.setdefault(qid, []).append((doc, float(score)))
        assert ranked[0].keys() == ranked[1].keys()
        for qid, a in ranked[0].items():
            b = [doc for doc, _ in ranked[1][qid]]
            assert sorted(doc for doc, _ in a) == sorted(b)
            pos = {doc: i for i, doc in enumerate(b)}
            for i, (x, sx) in enumerate(a):
                for y, sy in a[i + 1 :]:
                    if pos[y] < pos[x]:
                        assert abs(sx - sy) <= 1e-5 * abs(sx), (split, qid, x, y)
    # Hard negatives: the same documents; two may swap only when their best segment scores are within
    # float rounding (the two backends' matrix products round differently; on this fixture rows of
    # different documents score within 1 ulp of each other).
    import torch

    from SeDR.core.runtime import resolve_precision
    from SeDR.data import preprocess_folder
    from SeDR.modeling import load_model
    from SeDR.retrieval import embedding_files
    from SeDR.retrieval.encoding import encode_queries

    emb = embedding_files.load_segment_embeddings("faiss")
    model = load_model("./data/star", model_class="STAR_MaxP", max_seg_num=4)
    cpu = torch.device("cpu")
    q = encode_queries(
        model, preprocess_folder.queries("./data/preprocess", "train"), 32, 32, cpu, resolve_precision(cpu)
    )
    seg = q @ np.asarray(emb.vectors).T  # (queries, rows)
    best = np.full((len(q), int(emb.doc_ids.max()) + 1), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, np.asarray(emb.doc_ids), seg.T)
    hard = [json.loads(Path(f"{b}.json").read_text()) for b in ("faiss", "torch")]
    assert hard[0].keys() == hard[1].keys()
    for key, a in hard[0].items():
        b = hard[1][key]
        assert sorted(a) == sorted(b)
        pos = {d: i for i, d in enumerate(b)}
        for i, x in enumerate(a):
            for y in a[i + 1 :]:
                if pos[y] < pos[x]:  # swapped: only a near-tie may swap
                    assert abs(best[int(key), x] - best[int(key), y]) <= 1e-5 * abs(best[int(key), x])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_stable_topk_on_tensors_with_many_ties(dtype):
    """The torch backend's top-k on its own, float16 included (GPU ``--faiss_fp16`` scores; its tied rows
    are redone in slices, so this also covers more than one slice)."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(-3, 4, (40, 300), generator=g).to(dtype)  # (queries, rows), ~43 ties per value
    for k in (1, 5, 60, 299, 300):
        val, col = exact_search.stable_topk(scores, k)
        for i, row in enumerate(scores.float().numpy()):
            ref = np.lexsort((np.arange(len(row)), -row))[:k]
            assert col[i].tolist() == ref.tolist(), (k, i)
            assert val[i].float().tolist() == row[ref].tolist()


def test_vectors_copied_to_a_device_in_blocks(monkeypatch):
    monkeypatch.setattr(exact_search, "ADD_BATCH_ROWS", 7)  # several blocks
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    out = exact_search._rows_on(x, torch.device("cpu"), torch.float16)  # the GPU path's copy, here on CPU
    assert out.dtype == torch.float16 and torch.equal(out, torch.from_numpy(x).half())


# ------------------------------------------------------------------ one pass, memory settings, fp16, k caps


def test_a_search_call_scans_each_row_block_once_whatever_the_number_of_queries():
    """Blocks are the outer loop: every query of a call is scored against a block before the next one."""
    rng = np.random.default_rng(3)
    vectors, queries = tie_data("integer", rng, n=700)
    queries = np.concatenate([queries] * 80)  # 2,400 queries: three kernel batches of at most 1,024
    seen = []
    settings = exact_search.SearchSettings(block_rows=128, after_block=lambda lo, hi: seen.append((lo, hi)))
    blocks = [(lo, min(lo + 128, 700)) for lo in range(0, 700, 128)]
    for make in (
        lambda: exact_search.TorchFlatIndex(vectors, chunk_rows=48, settings=settings),
        lambda: exact_search.FaissFlatIndex(vectors, show_progress=False, settings=settings),
    ):
        index = make()
        for n in (1, 30, 2400):
            seen.clear()
            s, r = index.search(queries[:n], 50)
            assert seen == blocks  # one pass
            np.testing.assert_array_equal(r, brute_force_topk(vectors, queries[:n], 50)[1])
        # Queries beyond the query block take one more pass each.
        seen.clear()
        limited = exact_search.SearchSettings(
            block_rows=128, query_block=1000, after_block=settings.after_block
        )
        index.settings = limited
        r = exact_search.search(index, queries, 50, show_progress=False)[1]
        assert seen == blocks * 3
        np.testing.assert_array_equal(r, brute_force_topk(vectors, queries, 50)[1])
        index.settings = settings


def test_sharded_search_builds_its_shards_once_and_scans_each_once(monkeypatch):
    vectors, queries = tie_data("duplicated", np.random.default_rng(4), n=500)
    made = []
    seen = []
    settings = exact_search.SearchSettings(block_rows=64, after_block=lambda lo, hi: seen.append((lo, hi)))

    def shard(v, offset):
        made.append(offset)
        return exact_search.TorchFlatIndex(v, chunk_rows=32, settings=settings, row_offset=offset)

    index = exact_search.ShardedCpuIndex(vectors, 3, shard)
    for _ in range(2):
        seen.clear()
        np.testing.assert_array_equal(index.search(queries, 40)[1], brute_force_topk(vectors, queries, 40)[1])
        covered = sorted(seen)
        assert covered[0][0] == 0 and covered[-1][1] == 500
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))  # every row once, in file offsets
    assert made == [0, 166, 333]  # built once, not per call


def test_block_and_query_block_sizes_change_no_float_result():
    """Gaussian vectors: blocks that follow the chunk grid give bit-identical scores and rows."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, 64)).astype(np.float32)
    queries = rng.standard_normal((1300, 64)).astype(np.float32)
    ref = exact_search.TorchFlatIndex(vectors, chunk_rows=256).search(queries, 100)
    for block, query_block in ((512, 1300), (256, 700), (3000, 1024)):
        settings = exact_search.SearchSettings(block_rows=block, query_block=query_block)
        got = exact_search.search(
            exact_search.TorchFlatIndex(vectors, chunk_rows=256, settings=settings), queries, 100, None, False
        )
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
    whole = exact_search.FaissFlatIndex(vectors, show_progress=False).search(queries, 100)
    blocked = exact_search.FaissFlatIndex(
        vectors, show_progress=False, settings=exact_search.SearchSettings(block_rows=1024)
    ).search(queries, 100)
    np.testing.assert_array_equal(blocked[1], whole[1])
    np.testing.assert_array_equal(blocked[0], whole[0])


def test_search_threads_are_set_during_a_search_and_restored():
    vectors, queries = tie_data("integer", np.random.default_rng(6))
    before = torch.get_num_threads()
    seen = []
    settings = exact_search.SearchSettings(
        threads=1, after_block=lambda lo, hi: seen.append(torch.get_num_threads())
    )
    exact_search.TorchFlatIndex(vectors, settings=settings).search(queries, 5)
    assert seen == [1] and torch.get_num_threads() == before
    seen.clear()
    exact_search.TorchFlatIndex(
        vectors, settings=exact_search.SearchSettings(after_block=settings.after_block)
    ).search(queries, 5)
    assert seen == [before]  # 0 keeps the process's own count


def layer_normed_rows(n, direction, rng, shared):
    """Rows like the model's vectors: a LayerNorm over a strong shared direction plus noise."""
    x = torch.from_numpy(shared * direction + rng.standard_normal((n, len(direction))).astype(np.float32))
    return torch.nn.functional.layer_norm(x, (len(direction),)).numpy()


def test_fp16_storage_keeps_float32_scores_and_the_fp32_top_100():
    rng = np.random.default_rng(7)
    direction = rng.standard_normal(768).astype(np.float32)
    rows = layer_normed_rows(20000, direction, rng, shared=3.0)
    queries = layer_normed_rows(64, direction, rng, shared=3.0)
    s32, r32 = exact_search.TorchFlatIndex(rows).search(queries, 100)
    half = exact_search.TorchFlatIndex(rows, storage=torch.float16)
    s16, r16 = half.search(queries, 100)
    assert half.vectors.dtype == torch.float16 and s16.dtype == np.float32
    overlap = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(r32, r16)])
    assert overlap >= 0.999, overlap
    np.testing.assert_allclose(s16, s32, rtol=0, atol=0.1)  # scores near 600: float16 steps are 0.5 there
    # What rounding the scores themselves to float16 did: a handful of distinct scores, a worse top 100.
    rounded = torch.from_numpy(queries).half().float() @ torch.from_numpy(rows).half().float().T
    r_old = exact_search.stable_topk(rounded.half(), 100)[1].numpy()
    old_overlap = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(r32, r_old)])
    assert old_overlap < 0.99, old_overlap


class KLimitedIndex:
    """A faiss-gpu stand-in: a flat index that refuses k above 2048 as faiss-gpu does."""

    def __init__(self, index):
        self.index, self.asked = index, []

    @property
    def ntotal(self):
        return self.index.ntotal

    def search(self, q, k):
        self.asked.append(k)
        if k > 2048:
            raise RuntimeError(f"k {k} exceeds the GPU maximum 2048")
        return self.index.search(q, k)


class KLimitedGpuFaiss(FakeGpuFaiss):
    def index_cpu_to_gpu(self, res, gpu, index, co):
        self.calls.append(("single", gpu, co.useFloat16))
        self.gpu_index = KLimitedIndex(self.real.clone_index(index))
        return self.gpu_index


def test_every_faiss_gpu_call_is_capped_at_its_k_limit(monkeypatch):
    fake = KLimitedGpuFaiss(n_gpus=1)
    monkeypatch.setattr(exact_search, "_faiss", lambda: fake)
    rng = np.random.default_rng(8)
    vectors = rng.integers(-1, 2, size=(3000, 4)).astype(np.float32)  # scores in a few values: wide ties
    queries = rng.integers(-1, 2, size=(5, 4)).astype(np.float32)
    index = exact_search.build_index(vectors, [0], backend="faiss", show_progress=False)
    s, r = index.search(queries, 2048)  # k + 1 and the widening loop would both ask more than 2048
    assert max(fake.gpu_index.asked) <= 2048 and index.max_k == 2048
    ref_s, ref_r = brute_force_topk(vectors, queries, 2048)
    np.testing.assert_array_equal(s, ref_s)  # the right scores; at the cut, faiss's choice among tied rows
    above = ref_s > ref_s[:, -1:]
    np.testing.assert_array_equal(np.where(above, r, -1), np.where(above, ref_r, -1))
    s, r = index.search(queries, 1000)  # within the limit the tie at the cut is resolved as everywhere
    np.testing.assert_array_equal(r, brute_force_topk(vectors, queries, 1000)[1])
    with pytest.raises(ValueError, match="at most 2048 rows"):
        index.search(queries, 2049)
