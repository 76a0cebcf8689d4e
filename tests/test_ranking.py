"""Documents from segment hits: first hit per document, and index rankings equal brute-force MaxP."""

import numpy as np
import pytest

from SeDR.retrieval import exact_search, ranking


def test_unique_docs_keeps_each_documents_first_hit():
    # segment hits map to docs [7,7,3,9,3,1] -> unique docs [7,3,9,1], best rows/scores = first hits.
    row_doc_ids = np.array([1, 3, 3, 7, 7, 9])
    rows = np.array([3, 4, 1, 5, 2, 0])
    scores = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0], dtype=np.float32)
    docs, best_rows, best = ranking.unique_docs(rows, row_doc_ids, scores)
    assert docs.tolist() == [7, 3, 9, 1] and best_rows.tolist() == [3, 1, 5, 0]
    assert best.tolist() == [9.0, 7.0, 6.0, 4.0]
    assert ranking.unique_docs(rows, row_doc_ids, scores, k_docs=2)[0].tolist() == [7, 3]
    # faiss pads missing hits with -1: they are dropped, not mapped to the last row
    docs, _, _ = ranking.unique_docs(np.array([3, 1, -1, -1]), row_doc_ids, k_docs=101)
    assert docs.tolist() == [7, 3]


def brute_force_doc_ranking(vectors, row_doc_ids, q, k_docs):
    """MaxP document ranking: max over each document's segments, sorted descending."""
    seg = vectors @ q  # (S,)
    n_docs = row_doc_ids.max() + 1
    best = np.full(n_docs, -np.inf, dtype=np.float32)
    np.maximum.at(best, row_doc_ids, seg)
    order = np.argsort(-best, kind="stable")[:k_docs]
    return order.tolist(), best[order]


@pytest.mark.parametrize("kind", ["faiss", "torch"])
def test_index_document_ranking_equals_brute_force(random_corpus, kind):
    vectors, row_doc_ids, queries = random_corpus
    if kind == "faiss":
        index = exact_search.FaissFlatIndex(vectors, show_progress=False)
    else:
        index = exact_search.TorchFlatIndex(vectors, chunk_rows=97)  # several chunks to merge
    # every row is a hit (hits >= S), so the document ranking must be exact MaxP
    rankings = ranking.retrieve_documents(
        index,
        row_doc_ids,
        queries,
        range(100, 120),
        k_docs=50,
        hits=len(vectors) + 10,
        batch_size=7,
        show_progress=False,
    )
    for i, q in enumerate(queries):
        docs, best = brute_force_doc_ranking(vectors, row_doc_ids, q, 50)
        got = rankings[100 + i]
        assert [d for d, _ in got] == docs
        np.testing.assert_allclose([s for _, s in got], best, rtol=1e-5, atol=1e-5)


def test_original_ids_require_dense_offsets():
    with pytest.raises(ValueError):
        ranking.OriginalIds.from_maps({5: 0, 6: 2}, {})


def test_original_ids_keep_a_collections_string_ids(tmp_path):
    ids = ranking.OriginalIds.from_maps({"a/1": 1, "ü#2": 0}, {"s": {"q 1": 0}})
    assert [ids.doc(0), ids.doc(1)] == ["ü#2", "a/1"] and ids.query("s", 0) == "q 1"
    ranking.write_trec_run(tmp_path / "r.trec", {0: [(1, 2.0), (0, 1.0)]}, ids, "s", "tag")
    assert (tmp_path / "r.trec").read_text(encoding="utf-8").splitlines()[1] == "q 1 Q0 ü#2 2 1 tag"
    with pytest.raises(ValueError):
        ranking.OriginalIds.from_maps({"a": 0, "b": 0}, {})


def test_read_ranked_run_orders_by_score_then_rank_then_file(tmp_path):
    path = tmp_path / "r.trec"
    path.write_text(
        "q2 Q0 x 1 5 t\n"
        "q1 Q0 c 3 2.5 t\n"
        "q1 Q0 a 9 9 t\n"
        "q1 Q0 b 2 2.5 t\n"  # ties with c: rank 2 before rank 3
        "q1 Q0 d 3 2.5 t\n"  # ties with c on score and rank: file order
        "\n"
    )
    assert ranking.read_ranked_run(path) == {
        "q2": [("x", 5.0)],
        "q1": [("a", 9.0), ("b", 2.5), ("c", 2.5), ("d", 2.5)],
    }
    # our own run files (scores strictly decreasing by rank) read back in their rank order
    ids = ranking.OriginalIds.from_maps({f"d{i}": i for i in range(4)}, {"s": {"q": 0}})
    rankings = {0: [(3, 1.0), (1, 1.0), (0, 1.0), (2, 0.5)]}
    ranking.write_trec_run(tmp_path / "own.trec", rankings, ids, "s")
    assert [d for d, _ in ranking.read_ranked_run(tmp_path / "own.trec")["q"]] == ["d3", "d1", "d0", "d2"]


def test_original_ids_are_arrays_by_offset():
    ids = ranking.OriginalIds.from_maps({501: 1, 77: 0}, {"dev": {9: 1, 4: 0}, "test": {"q-b": 0, "q-a": 1}})
    assert ids.doc_numbers.tolist() == [77, 501] and ids.doc(1) == "D501"
    assert (
        ids.query_ids["dev"].dtype == np.int64 and ids.query("dev", 0) == "4" and ids.query("dev", 1) == "9"
    )
    assert ids.query("test", 0) == "q-b" and ids.query("test", 1) == "q-a"
    with pytest.raises(ValueError):
        ranking.OriginalIds.from_maps({5: 0, 6: 0}, {})  # two ids on one offset


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 22])
def test_max_rows_per_document_across_chunks(chunk):
    row_doc_ids = np.repeat(np.arange(6), [2, 5, 1, 3, 4, 1])
    assert ranking.max_rows_per_document(row_doc_ids, chunk_rows=chunk) == 5
    assert ranking.max_rows_per_document(np.repeat([0], 9), chunk_rows=chunk) == 9
    assert ranking.max_rows_per_document(np.zeros(0, np.int32)) == 0


def integer_documents(seed, n_docs=80, most=12):
    """Documents of 1..``most`` rows with small-integer vectors: exact scores, many ties."""
    rng = np.random.default_rng(seed)
    row_doc_ids = np.repeat(np.arange(n_docs), rng.integers(1, most + 1, size=n_docs))
    vectors = rng.integers(-2, 3, size=(len(row_doc_ids), 5)).astype(np.float32)
    return vectors, row_doc_ids, rng.integers(-2, 3, size=(15, 5)).astype(np.float32)


def brute_force_exact(vectors, row_doc_ids, q, k_docs):
    """Every document by the max over all its rows; ties by document offset."""
    seg = vectors.astype(np.float64) @ q.astype(np.float64)
    best = np.full(row_doc_ids.max() + 1, -np.inf)
    np.maximum.at(best, row_doc_ids, seg)
    order = np.lexsort((np.arange(len(best)), -best))[:k_docs]
    return order.tolist(), best[order]


@pytest.mark.parametrize("kind", ["faiss", "torch"])
def test_exact_document_ranking_equals_brute_force_max_over_every_segment(kind):
    vectors, row_doc_ids, queries = integer_documents(0)
    make = {
        "faiss": lambda: exact_search.FaissFlatIndex(vectors, show_progress=False),
        "torch": lambda: exact_search.TorchFlatIndex(vectors, chunk_rows=64),
    }[kind]
    args = (row_doc_ids, queries, range(len(queries)), 30)
    exact = ranking.retrieve_documents(make(), *args, hits=20, exact=True, show_progress=False)
    shallow = ranking.retrieve_documents(make(), *args, hits=20, show_progress=False)
    for i, q in enumerate(queries):
        docs, best = brute_force_exact(vectors, row_doc_ids, q, 30)
        assert [d for d, _ in exact[i]] == docs
        assert [s for _, s in exact[i]] == best.tolist()
    assert any(len(shallow[i]) < 30 for i in shallow)  # 20 rows hold fewer than 30 documents
    # Where the default's depth covers every row, it is the exact ranking.
    deep = ranking.retrieve_documents(make(), *args, hits=len(vectors), show_progress=False)
    assert deep == exact
