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
