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
