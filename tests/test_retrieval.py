"""Retrieval oracles of SPEC §11 (T12, T13, T14), index search vs brute force, hard negatives,
the faiss GPU fallback and the segment-embedding memmaps."""

import json
import logging

import numpy as np
import pytest
import torch

from SeDR import retrieval
from SeDR.errors import DataFormatError, MissingInputError

# ------------------------------------------------------------------------------------ T12 / T14


def test_unique_docs_t12():
    # segment hits map to docs [7,7,3,9,3,1] -> unique docs [7,3,9,1], best rows/scores = first hits.
    row_doc_ids = np.array([1, 3, 3, 7, 7, 9])
    rows = np.array([3, 4, 1, 5, 2, 0])
    scores = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0], dtype=np.float32)
    docs, best_rows, best = retrieval.unique_docs(rows, row_doc_ids, scores)
    assert docs.tolist() == [7, 3, 9, 1] and best_rows.tolist() == [3, 1, 5, 0]
    assert best.tolist() == [9.0, 7.0, 6.0, 4.0]
    assert retrieval.unique_docs(rows, row_doc_ids, scores, k_docs=2)[0].tolist() == [7, 3]
    # faiss pads missing hits with -1: they are dropped, not mapped to the last row
    docs, _, _ = retrieval.unique_docs(np.array([3, 1, -1, -1]), row_doc_ids, k_docs=101)
    assert docs.tolist() == [7, 3]


def test_first_row_t14(tmp_path):
    first = retrieval.first_row_index(np.array([0, 0, 0, 1, 2, 2], dtype=np.int32))
    assert first.tolist() == [0, 3, 4, 6]
    assert list(range(first[2], first[3])) == [4, 5]  # rows of doc 2
    for bad in ([0, 0, 2, 2], [1, 1, 2], [0, 1, 1, 0]):  # gap, not starting at 0, out of order
        with pytest.raises(ValueError, match="contiguously"):
            retrieval.first_row_index(np.array(bad))
    ids = np.array([0, 0, 1, 2, 2, 2])
    assert retrieval.load_or_build_first_row(tmp_path, ids).tolist() == [0, 2, 3, 6]
    assert (tmp_path / "pid2embids.pkl").exists()
    assert retrieval.load_or_build_first_row(tmp_path, ids).tolist() == [0, 2, 3, 6]  # from the cache
    # a cache for another row count is rebuilt, not trusted
    assert retrieval.load_or_build_first_row(tmp_path, np.array([0, 1])).tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------ T13 (ADORE)


def adore_fixture():
    """6 docs a..f = offsets 0..5 with 2 rows each; hits in rank order give unique docs a,b,c,d,e."""
    row_doc_ids = np.repeat(np.arange(6), 2)  # rows 2d, 2d+1 belong to doc d
    rows = np.array([1, 2, 1, 5, 4, 7, 6, 9, 3, 8])  # docs a(1) b(2) a c(5) c d(7) d e(9) b e
    return row_doc_ids, rows


def test_adore_positive_is_first_relevant_retrieved_t13():
    row_doc_ids, rows = adore_fixture()
    first_row = retrieval.first_row_index(row_doc_ids)
    vectors = np.zeros((12, 2), dtype=np.float32)
    t = retrieval.adore_targets(rows, row_doc_ids, relevant=[3, 1], query_vec=np.ones(2), vectors=vectors,
                                first_row=first_row)
    # unique docs [a,b,c,d,e] with best rows [1,2,5,7,9]; b (doc 1) is the first relevant -> row 2;
    # negatives: best rows of a, c, e (relevant d excluded).
    assert t.positive_row == 2 and t.negative_rows.tolist() == [1, 5, 9]
    assert t.positive_retrieved and t.rr_at_100 == 0.5 and t.recall_at_100 == 1.0


def test_adore_fallback_positive_t13():
    row_doc_ids, rows = adore_fixture()
    first_row = retrieval.first_row_index(row_doc_ids)
    vectors = np.zeros((12, 2), dtype=np.float32)
    vectors[10] = [1.0, 0.0]  # doc 5 (f), never retrieved: q·E = 1 for row 10, 3 for row 11
    vectors[11] = [0.0, 3.0]
    q = np.array([1.0, 1.0], dtype=np.float32)
    t = retrieval.adore_targets(rows, row_doc_ids, relevant=[5, 0], query_vec=q, vectors=vectors,
                                first_row=first_row, metric_cut=3)
    # doc 0 is relevant and retrieved at rank 1 -> positive = its best row 1, not the fallback.
    assert t.positive_row == 1
    t = retrieval.adore_targets(rows, row_doc_ids, relevant=[5], query_vec=q, vectors=vectors,
                                first_row=first_row, metric_cut=3)
    # no relevant doc in the first 3 unique docs: argmax over all rows of relevant[0] = doc 5 -> row 11;
    # negatives = all metric_cut documents' best rows.
    assert t.positive_row == 11 and t.negative_rows.tolist() == [1, 2, 5]
    assert not t.positive_retrieved and t.rr_at_100 == 0.0 and t.recall_at_100 == 0.0


def test_adore_loss_matches_hand_cross_entropy():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    q = torch.tensor([[2.0, 1.0]], requires_grad=True)
    t = retrieval.AdoreTargets(0, np.array([1, 2]), True, 1.0, 1.0)
    loss = retrieval.adore_loss(q, [t], vectors, nominal_batch_size=32)
    # logits = (2, 1, 3), CE with target 0 = log(e^2 + e^1 + e^3) - 2; divided by the nominal 32.
    expected = (np.log(np.exp(2) + np.exp(1) + np.exp(3)) - 2) / 32
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


# ------------------------------------------------------------------------------------ hard negatives (§6)


def test_select_hard_negatives_skips_relevant_dedups_and_caps():
    row_doc_ids = np.array([0, 0, 1, 2, 3, 4, 5])
    rows = np.array([2, 0, 1, 3, 4, 5, 6, -1, -1])  # docs 1,0,0,2,3,4,5 then two missing hits
    assert retrieval.select_hard_negatives(rows, row_doc_ids, relevant={0}, keep=300) == [1, 2, 3, 4, 5]
    assert retrieval.select_hard_negatives(rows, row_doc_ids, relevant=[2], keep=3) == [1, 0, 3]
    assert retrieval.select_hard_negatives(np.full(4, -1), row_doc_ids, relevant=[]) == []


def test_hard_negatives_file_roundtrip(tmp_path):
    path = tmp_path / "sub" / "hard_negative.json"
    retrieval.write_hard_negatives(path, {3: [5, 1], 0: [np.int64(2)]})
    assert json.loads(path.read_text()) == {"3": [5, 1], "0": [2]}  # decimal-string keys, int lists
    assert retrieval.load_hard_negatives(path) == {3: [5, 1], 0: [2]}
    assert [p.name for p in path.parent.iterdir()] == ["hard_negative.json"]  # no temp file left
    with pytest.raises(MissingInputError):
        retrieval.load_hard_negatives(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataFormatError):
        retrieval.load_hard_negatives(tmp_path / "bad.json")


def test_hard_negatives_for_queries_small_corpus():
    # 3 docs (4 rows) but 1024 hits asked: faiss returns -1 for the missing ones.
    vectors = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    row_doc_ids = np.array([0, 0, 1, 2])
    index = retrieval.FaissFlatIndex(vectors, show_progress=False)
    queries = np.array([[1.0, 0.1], [0.0, 1.0]], dtype=np.float32)
    out = retrieval.hard_negatives_for_queries(index, row_doc_ids, queries, [7, 8], {7: [1]}, keep=300,
                                               show_progress=False)
    # q7 scores rows: 1, .1, 1.1, -1 -> rows 2,0,1,3 -> docs 1,0,0,2; doc 1 relevant -> [0, 2]
    # q8 scores rows: 0, 1, 1, 0 -> docs {0,1} first (tie), then doc 0/2; q8 has no qrels
    assert out[7] == [0, 2]
    assert sorted(out[8]) == [0, 1, 2]


# ------------------------------------------------------------------------------------ search (§7.3)


def brute_force_doc_ranking(vectors, row_doc_ids, q, k_docs):
    """MaxP document ranking: max over each document's segments, sorted descending."""
    seg = vectors @ q  # (S,)
    n_docs = row_doc_ids.max() + 1
    best = np.full(n_docs, -np.inf, dtype=np.float32)
    np.maximum.at(best, row_doc_ids, seg)
    order = np.argsort(-best, kind="stable")[:k_docs]
    return order.tolist(), best[order]


@pytest.fixture(scope="module")
def random_corpus():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 5, size=300)  # 300 docs with 1..4 segments
    row_doc_ids = np.repeat(np.arange(300), counts).astype(np.int32)
    vectors = rng.standard_normal((len(row_doc_ids), 16)).astype(np.float32)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    return vectors, row_doc_ids, queries


@pytest.mark.parametrize("kind", ["faiss", "torch"])
def test_index_document_ranking_equals_brute_force(random_corpus, kind):
    vectors, row_doc_ids, queries = random_corpus
    if kind == "faiss":
        index = retrieval.FaissFlatIndex(vectors, show_progress=False)
    else:
        index = retrieval.TorchFlatIndex(vectors, chunk_rows=97)  # several chunks to merge
    # every row is a hit (hits >= S), so the document ranking must be exact MaxP
    rankings = retrieval.retrieve_documents(index, row_doc_ids, queries, range(100, 120), k_docs=50,
                                            hits=len(vectors) + 10, batch_size=7, show_progress=False)
    for i, q in enumerate(queries):
        docs, best = brute_force_doc_ranking(vectors, row_doc_ids, q, 50)
        got = rankings[100 + i]
        assert [d for d, _ in got] == docs
        np.testing.assert_allclose([s for _, s in got], best, rtol=1e-5, atol=1e-5)


def test_faiss_and_torch_search_agree_with_k_larger_than_corpus(random_corpus):
    vectors, _, queries = random_corpus
    k = len(vectors) + 3
    fs, fr = retrieval.search(retrieval.FaissFlatIndex(vectors, show_progress=False), queries, k, 8, False)
    ts, tr = retrieval.search(retrieval.TorchFlatIndex(vectors), queries, k, 8, False)
    assert fr.shape == tr.shape == (20, k)
    assert (fr[:, -3:] == -1).all() and (tr[:, -3:] == -1).all()
    np.testing.assert_array_equal(fr[:, :-3], tr[:, :-3])
    np.testing.assert_allclose(fs[:, :-3], ts[:, :-3], rtol=1e-5, atol=1e-5)


def test_faiss_gpus_fall_back_to_cpu_with_one_warning(random_corpus, caplog, monkeypatch):
    vectors, _, queries = random_corpus
    monkeypatch.setattr(retrieval, "faiss_gpu_available", lambda: False)  # as on a CPU machine
    with caplog.at_level(logging.WARNING, logger="SeDR.retrieval"):
        gpu = retrieval.FaissFlatIndex(vectors, gpu_ids=[0], show_progress=False)
        gs, gr = retrieval.search(gpu, queries, 64, show_progress=False)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "faiss-gpu" in warnings[0].getMessage()
    assert gpu.gpu_ids == []
    cs, cr = retrieval.search(retrieval.FaissFlatIndex(vectors, show_progress=False), queries, 64,
                              show_progress=False)
    np.testing.assert_array_equal(gr, cr)
    np.testing.assert_array_equal(gs, cs)


def test_resolve_faiss_gpus_without_request_is_silent(caplog):
    with caplog.at_level(logging.WARNING):
        assert retrieval.resolve_faiss_gpus(None) == [] and retrieval.resolve_faiss_gpus([]) == []
    assert not caplog.records


# ------------------------------------------------------------------------------------ embedding memmaps (§7.2)


def test_embedding_memmap_write_read_and_completion(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((7, 4)).astype(np.float32)
    ids = np.array([0, 0, 1, 2, 2, 2, 3], dtype=np.int32)
    assert not retrieval.embeddings_complete(tmp_path)
    with retrieval.SegmentEmbeddingWriter(tmp_path, 4, info={"max_seg_num": 4}) as w:
        w.append(vecs[:3], ids[:3])
        w.append(vecs[3:], ids[3:])
    assert retrieval.embeddings_complete(tmp_path, expect_info={"max_seg_num": 4})
    assert not retrieval.embeddings_complete(tmp_path, expect_info={"max_seg_num": 1})
    emb = retrieval.load_segment_embeddings(tmp_path)
    np.testing.assert_array_equal(emb.vectors, vecs)
    np.testing.assert_array_equal(emb.doc_ids, ids)
    assert (tmp_path / "passages.memmap").stat().st_size == 7 * 4 * 4  # raw float32 [S, d], original layout
    # a legacy folder (no completion record) opens only when asked with its dimension
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "passages.memmap").write_bytes(vecs.tobytes())
    (legacy / "passages-id.memmap").write_bytes(ids.tobytes())
    with pytest.raises(MissingInputError, match="incomplete"):
        retrieval.load_segment_embeddings(legacy)
    np.testing.assert_array_equal(retrieval.load_segment_embeddings(legacy, legacy_dim=4).vectors, vecs)


def test_interrupted_encoding_is_not_complete(tmp_path):
    vecs = np.ones((2, 3), dtype=np.float32)
    with retrieval.SegmentEmbeddingWriter(tmp_path, 3) as w:
        w.append(vecs, np.array([0, 1]))
    assert retrieval.embeddings_complete(tmp_path)
    with pytest.raises(RuntimeError), retrieval.SegmentEmbeddingWriter(tmp_path, 3) as w:
        w.append(vecs, np.array([0, 1]))
        raise RuntimeError("killed")
    assert not retrieval.embeddings_complete(tmp_path)  # the old record was removed when writing began
    with pytest.raises(MissingInputError):
        retrieval.load_segment_embeddings(tmp_path)
    with retrieval.SegmentEmbeddingWriter(tmp_path, 3) as w, pytest.raises(ValueError, match="non-decreasing"):
        w.append(vecs, np.array([1, 0]))


def test_concat_embedding_shards(tmp_path):
    rng = np.random.default_rng(2)
    vecs = rng.standard_normal((5, 2)).astype(np.float32)
    ids = np.array([0, 0, 1, 2, 2])
    for name, sl in (("shard0", slice(0, 3)), ("shard1", slice(3, 5))):
        with retrieval.SegmentEmbeddingWriter(tmp_path, 2, prefix=name) as w:
            w.append(vecs[sl], ids[sl])
    emb = retrieval.concat_embedding_shards(tmp_path, ["shard0", "shard1"], rows_per_chunk=2)
    np.testing.assert_array_equal(emb.vectors, vecs)
    assert retrieval.first_row_index(emb.doc_ids).tolist() == [0, 2, 3, 5]


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
    monkeypatch.setattr(retrieval, "_faiss", lambda: fake)
    cpu = retrieval.search(retrieval.build_index(vectors, None, show_progress=False), queries, 32, show_progress=False)
    one = retrieval.build_index(vectors, [1], fp16=True, show_progress=False)
    both = retrieval.build_index(vectors, [0, 1], show_progress=False)
    assert fake.calls == [("single", 1, True), ("sharded", [0, 1], False, True)]
    assert fake.temp_memory == [512 * 1024 * 1024, 200 * 1024 * 1024, 200 * 1024 * 1024]  # SPEC §7.3
    for index in (one, both):
        assert index.ntotal == len(vectors)
        np.testing.assert_array_equal(retrieval.search(index, queries, 32, show_progress=False)[1], cpu[1])
    with pytest.raises(ValueError, match="GPUs 0..1"):
        retrieval.build_index(vectors, [2], show_progress=False)
