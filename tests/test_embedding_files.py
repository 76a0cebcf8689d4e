"""Segment-embedding files: write/read, completion record, shards, and the row -> document index."""

import numpy as np
import pytest

from SeDR.core.errors import MissingInputError
from SeDR.retrieval import embedding_files


def test_first_row_index(tmp_path):
    first = embedding_files.first_row_index(np.array([0, 0, 0, 1, 2, 2], dtype=np.int32))
    assert first.tolist() == [0, 3, 4, 6]
    assert list(range(first[2], first[3])) == [4, 5]  # rows of doc 2
    for bad in ([0, 0, 2, 2], [1, 1, 2], [0, 1, 1, 0]):  # gap, not starting at 0, out of order
        with pytest.raises(ValueError, match="contiguously"):
            embedding_files.first_row_index(np.array(bad))
    ids = np.array([0, 0, 1, 2, 2, 2])
    assert embedding_files.load_or_build_first_row(tmp_path, ids).tolist() == [0, 2, 3, 6]
    assert (tmp_path / "pid2embids.pkl").exists()
    assert embedding_files.load_or_build_first_row(tmp_path, ids).tolist() == [0, 2, 3, 6]  # from the cache
    # a cache for another row count is rebuilt, not trusted
    assert embedding_files.load_or_build_first_row(tmp_path, np.array([0, 1])).tolist() == [0, 1, 2]


def test_embedding_memmap_write_read_and_completion(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((7, 4)).astype(np.float32)
    ids = np.array([0, 0, 1, 2, 2, 2, 3], dtype=np.int32)
    assert not embedding_files.embeddings_complete(tmp_path)
    with embedding_files.SegmentEmbeddingWriter(tmp_path, 4, info={"max_seg_num": 4}) as w:
        w.append(vecs[:3], ids[:3])
        w.append(vecs[3:], ids[3:])
    assert embedding_files.embeddings_complete(tmp_path, expect_info={"max_seg_num": 4})
    assert not embedding_files.embeddings_complete(tmp_path, expect_info={"max_seg_num": 1})
    emb = embedding_files.load_segment_embeddings(tmp_path)
    np.testing.assert_array_equal(emb.vectors, vecs)
    np.testing.assert_array_equal(emb.doc_ids, ids)
    assert (tmp_path / "passages.memmap").stat().st_size == 7 * 4 * 4  # raw float32 [S, d], original layout
    # a legacy folder (no completion record) opens only when asked with its dimension
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "passages.memmap").write_bytes(vecs.tobytes())
    (legacy / "passages-id.memmap").write_bytes(ids.tobytes())
    with pytest.raises(MissingInputError, match="incomplete"):
        embedding_files.load_segment_embeddings(legacy)
    np.testing.assert_array_equal(embedding_files.load_segment_embeddings(legacy, legacy_dim=4).vectors, vecs)


def test_interrupted_encoding_leaves_no_partial_file_under_a_final_name(tmp_path):
    vecs = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(RuntimeError), embedding_files.SegmentEmbeddingWriter(tmp_path / "fresh", 3) as w:
        w.append(vecs, np.array([0, 1]))
        raise RuntimeError("killed")
    assert list((tmp_path / "fresh").iterdir()) == []  # temporary files gone, nothing under a final name
    with embedding_files.SegmentEmbeddingWriter(tmp_path, 3) as w:
        w.append(vecs, np.array([0, 1]))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with (
        pytest.raises(RuntimeError),
        embedding_files.SegmentEmbeddingWriter(tmp_path, 3, info={"new": 1}) as w,
    ):
        w.append(2 * vecs, np.array([0, 1]))
        assert (tmp_path / "passages.memmap").read_bytes() == before["passages.memmap"]  # old files untouched
        raise RuntimeError("killed")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert embedding_files.embeddings_complete(tmp_path)  # the earlier complete encoding, as it was


def test_concat_embedding_shards(tmp_path):
    rng = np.random.default_rng(2)
    vecs = rng.standard_normal((5, 2)).astype(np.float32)
    ids = np.array([0, 0, 1, 2, 2])
    for name, sl in (("shard0", slice(0, 3)), ("shard1", slice(3, 5))):
        with embedding_files.SegmentEmbeddingWriter(tmp_path, 2, prefix=name) as w:
            w.append(vecs[sl], ids[sl])
    emb = embedding_files.concat_embedding_shards(tmp_path, ["shard0", "shard1"], rows_per_chunk=2)
    np.testing.assert_array_equal(emb.vectors, vecs)
    assert embedding_files.first_row_index(emb.doc_ids).tolist() == [0, 2, 3, 5]
