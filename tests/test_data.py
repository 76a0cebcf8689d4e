"""Data layer: the worked examples of docs/segmentation.md (segment counts, rows, fuse matrix), the
query view of docs/data.md#query-view, collation and the readers."""

import json

import numpy as np
import pytest
import torch

from SeDR.data import collation, preprocess_folder, segmentation
from SeDR.data.batches import SegmentBatch
from SeDR.data.sampling import TrainItem
from SeDR.data.segmentation import SegmentSpec

SHAPE_512_4 = SegmentSpec(512, 4)


def test_spec_shapes():
    assert (
        SHAPE_512_4.content_len,
        SHAPE_512_4.num_placeholders,
        SHAPE_512_4.row_len,
        SHAPE_512_4.ignore_len,
    ) == (500, 3, 505, 50)
    one = SegmentSpec(512, 1)
    assert (one.content_len, one.num_placeholders, one.row_len) == (510, 0, 512)
    # STAR_Multi with K = 4: budget 512 - 2 - 3 = 507 content tokens (docs/models.md#star-multi).
    assert SegmentSpec(512, 1, extra_reserve=3).content_len == 507


@pytest.mark.parametrize(
    "n,s,ranges",
    [
        (30, 1, [(0, 30)]),
        (520, 1, [(0, 500)]),
        (549, 1, [(0, 500)]),
        (550, 2, [(0, 500), (500, 550)]),
        (1300, 3, [(0, 500), (500, 1000), (1000, 1300)]),
        (1520, 3, [(0, 500), (500, 1000), (1000, 1500)]),
        (2048, 4, [(0, 500), (500, 1000), (1000, 1500), (1500, 2000)]),
    ],
)
def test_segment_count_and_ranges(n, s, ranges):
    assert segmentation.num_segments(n, SHAPE_512_4) == s
    doc = np.arange(100, 100 + n)
    batch = segmentation.collate_documents([doc], [0], SHAPE_512_4)
    assert batch.seg_counts.tolist() == [s]
    for r, (a, b) in enumerate(ranges):
        row = batch.input_ids[r]
        assert row[1 : 1 + b - a].tolist() == doc[a:b].tolist()
        assert row[1 + b - a].item() == 2  # EOS right after the content


def test_inference_formula_agrees_for_every_length():
    """docs/segmentation.md#segment-count: the inference formula (untruncated n, cap at M)
    gives the same s for every n."""
    spec = SHAPE_512_4
    L, M, g = spec.content_len, spec.max_seg_num, spec.ignore_len
    n = np.arange(1, 2049)
    s_inf = -(-n // L)
    over = s_inf > M
    short = (~over) & (s_inf > 1) & (n - (s_inf - 1) * L < g)
    s_inf = np.where(over, M, np.where(short, s_inf - 1, s_inf))
    assert (segmentation.num_segments(n, spec) == s_inf).all()
    assert segmentation.num_segments(1300, SegmentSpec(512, 1)) == 1


def test_rows_of_a_1300_token_document_after_a_2_segment_document():
    x = np.arange(1000, 2300)  # content ids x0..x1299
    first = np.arange(5, 5 + 600)  # a 2-segment document (600 tokens)
    b = segmentation.collate_documents([first, x], [7, 9], SHAPE_512_4)
    assert b.input_ids.shape == (5, 505)
    assert b.seg_counts.tolist() == [2, 3]
    seg0, seg2 = b.input_ids[2], b.input_ids[4]
    assert seg0[0] == 0 and seg0[1:501].tolist() == x[:500].tolist() and seg0[501] == 2
    assert seg0[502:].tolist() == [1, 1, 1]
    assert b.attention_mask[2, :502].all() and b.attention_mask[2, 502:].tolist() == [1, 1, 0]
    assert seg2[0] == 0 and seg2[1:301].tolist() == x[1000:].tolist() and seg2[301] == 2
    assert (seg2[302:] == 1).all()
    assert b.attention_mask[4, 302:502].sum() == 0 and b.attention_mask[4, 502:].tolist() == [1, 1, 0]
    assert b.fuse_mat.tolist() == [[1, 0, 0], [0, 0, 0], [3, 4, 2], [2, 4, 2], [2, 3, 2]]
    assert b.attention_mask[:, 502:].tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]]
    assert b.seg_sep.tolist() == [0, 2, 5]
    assert b.segment_types().tolist() == [0, 1, 0, 1, 2]
    assert b.doc_offsets.tolist() == [7, 9]


@pytest.mark.parametrize(
    "s,rows,valid",
    [
        (1, [[0, 0, 0]], [[0, 0, 0]]),
        (2, [[1, 0, 0], [0, 0, 0]], [[1, 0, 0]] * 2),
        (3, [[1, 2, 0], [0, 2, 0], [0, 1, 0]], [[1, 1, 0]] * 3),
        (4, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]], [[1, 1, 1]] * 4),
    ],
)
def test_fuse_tables(s, rows, valid):
    table, mask = segmentation.fuse_table(s, 3)
    assert table.tolist() == rows and mask.tolist() == valid


def test_single_segment_spec_has_no_placeholders_or_fuse():
    b = segmentation.collate_documents([np.arange(10, 1310)], [0], SegmentSpec(512, 1))
    assert b.fuse_mat is None and b.input_ids.shape == (1, 512)
    assert b.input_ids[0, 511] == 2 and b.attention_mask[0].sum() == 512


def test_compact_rows_keep_content_and_placeholders():
    docs = [np.arange(10, 40), np.arange(10, 50)]
    full = segmentation.collate_documents(docs, [0, 1], SegmentSpec(64, 4))
    small = segmentation.collate_documents(docs, [0, 1], SegmentSpec(64, 4), compact=True)
    assert full.input_ids.shape[1] == 57 and small.input_ids.shape[1] == 40 + 2 + 3
    c = small.input_ids.shape[1] - 3
    assert torch.equal(small.input_ids[:, :c], full.input_ids[:, :c])
    assert torch.equal(small.input_ids[:, -3:], full.input_ids[:, -3:])
    assert torch.equal(small.attention_mask[:, -3:], full.attention_mask[:, -3:])
    assert torch.equal(small.fuse_mat, full.fuse_mat)


def test_query_truncation():
    t = np.arange(40)
    assert collation.truncate_query(t, 32).tolist() == list(range(31)) + [39]
    assert collation.truncate_query(np.arange(20), 32).tolist() == list(range(20))
    assert collation.truncate_query(np.arange(64), 64).tolist() == list(range(64))
    qb = collation.collate_queries([np.arange(40), np.arange(5)], [3, 4], 32)
    assert qb.input_ids.shape == (2, 32) and qb.attention_mask[1].tolist() == [1] * 5 + [0] * 27
    assert (qb.input_ids[1, 5:] == 1).all()
    qb = collation.collate_queries([np.arange(40), np.arange(5)], [3, 4], 32, pad_to_max_length=False)
    assert qb.input_ids.shape == (2, 32)
    assert collation.collate_queries([np.arange(5)], [0], 32, pad_to_max_length=False).input_ids.shape == (
        1,
        5,
    )


def test_train_collator_masks_and_caps(tmp_path):
    # Hand-made preprocess folder: 4 docs, 2 queries.
    lengths = np.array([1300, 40, 2048, 600], dtype=np.int32)
    ids = np.zeros((4, 2048), dtype=np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = 10 + i
    ids.tofile(tmp_path / "passages.memmap")
    np.save(tmp_path / "passages_length.npy", lengths)
    (tmp_path / "passages_meta").write_text(
        json.dumps({"type": "int32", "total_number": 4, "embedding_size": 2048})
    )
    q = np.zeros((2, 64), dtype=np.int32)
    q[:, :5] = [0, 7, 8, 9, 2]
    q.tofile(tmp_path / "train-query.memmap")
    np.save(tmp_path / "train-query_length.npy", np.array([5, 5]))
    (tmp_path / "train-query_meta").write_text(
        json.dumps({"type": "int32", "total_number": 2, "embedding_size": 64})
    )
    (tmp_path / "train-qrel.tsv").write_text("0\t0\t0\t1\n1\t0\t1\t1\n1\t0\t2\t1\n")
    rel = preprocess_folder.load_rel(tmp_path / "train-qrel.tsv")
    assert rel == {0: [0], 1: [1, 2]}
    pc, qc = preprocess_folder.passages(tmp_path), preprocess_folder.queries(tmp_path, "train")
    assert pc[1].tolist() == [11] * 40
    coll = collation.TrainCollator(pc, qc, rel, SHAPE_512_4, max_query_length=32, max_bsize=5)
    batch = coll([TrainItem(0, 0, (2,)), TrainItem(1, 1, (3,))])
    assert batch.positives.seg_counts.tolist() == [3, 1]
    # Hard negatives: doc 2 has 4 segments, doc 3 has 2; budget 5 → caps [min(4, 5-1)=4, 1].
    assert batch.negatives.seg_counts.tolist() == [4, 1]
    assert batch.rel_pair_mask.tolist() == [[0, 1], [1, 0]]
    assert batch.hard_pair_mask.tolist() == [[1, 1], [0, 1]]  # doc 2 is relevant to query 1
    assert batch.queries.input_ids.shape == (2, 32)


def test_missing_preprocess_names_the_file(tmp_path):
    from SeDR.core.errors import MissingInputError

    with pytest.raises(MissingInputError, match="passages_meta"):
        preprocess_folder.passages(tmp_path)


# --------------------------------------------------------------------------------------------
# Row groups: rows of a pass bucketed by real width (docs/segmentation.md#row-groups)
# --------------------------------------------------------------------------------------------


def test_collate_row_groups_match_the_compact_rows():
    """``row_groups=True`` implies ``compact``; the groups are the plan of the rows' real widths (c + 2)."""
    rng = np.random.default_rng(1)
    spec = SegmentSpec(64, 4)  # L = 57, P = 3
    docs = [rng.integers(5, 300, size=n) for n in (8, 130, 20, 57, 70)]
    small = segmentation.collate_documents(docs, range(5), spec, compact=True)
    grouped = segmentation.collate_documents(docs, range(5), spec, row_groups=True, group_overhead=0)
    for name in ("input_ids", "attention_mask", "fuse_mat", "seg_counts"):
        assert torch.equal(getattr(grouped, name), getattr(small, name)), name
    assert small.row_groups is None
    g = grouped.row_groups
    # L = 52, g = 15: 8 -> [8]; 130 -> [52, 52, 26]; 20 -> [20]; 57 -> [52] (tail 5 dropped); 70 -> [52, 18].
    real = small.attention_mask[:, :-3].sum(1).tolist()  # CLS + content + EOS of each row
    assert real == [10, 54, 54, 28, 22, 54, 54, 20]
    # No overhead: one group per distinct width, rows of a group in batch order.
    assert g.rows.tolist() == [0, 7, 4, 3, 1, 2, 5, 6]
    assert g.sizes == (1, 1, 1, 1, 4) and g.widths == (10, 20, 22, 28, 54)
    assert g.num_placeholders == 3
    # One group is no grouping at all.
    same = [np.arange(5, 40)] * 3
    assert segmentation.collate_documents(same, range(3), spec, row_groups=True).row_groups is None


def test_segment_batch_to_moves_row_groups():
    docs = [np.arange(5, 15), np.arange(5, 130)]
    b = segmentation.collate_documents(docs, [0, 1], SegmentSpec(64, 4), row_groups=True, group_overhead=0)
    moved = b.to("meta")
    assert moved.row_groups.rows.device.type == "meta" and moved.input_ids.device.type == "meta"
    assert moved.row_groups.sizes == b.row_groups.sizes and moved.row_groups.widths == b.row_groups.widths
    # Constructors without the new field keep working (default None).
    assert (
        SegmentBatch(b.input_ids, b.attention_mask, b.seg_counts, b.fuse_mat, b.doc_offsets, 4).row_groups
        is None
    )


def test_a_training_batch_crosses_processes_by_value():
    """A collating worker hands batches to the trainer pickled as DataLoader pickles them; the
    tensors travel as bytes in the stream (not as one shared-memory file each) and come back equal."""
    import dataclasses
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers torch's shared-memory reductions, as a DataLoader)

    from SeDR.data.batches import TrainBatch

    spec = SegmentSpec(20, 3)
    rng = np.random.default_rng(0)
    docs = [rng.integers(5, 90, size=n) for n in (7, 30, 45)]
    batch = TrainBatch(
        queries=collation.collate_queries([np.array([0, 9, 8, 2])] * 3, [0, 1, 2], 6),
        positives=segmentation.collate_documents(docs, [0, 1, 2], spec, row_groups=True, group_overhead=0),
        negatives=segmentation.collate_documents(docs[::-1], [2, 1, 0], spec),
        rel_pair_mask=1 - torch.eye(3),
        hard_pair_mask=torch.ones(3, 3),
    )
    buf = io.BytesIO()
    ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(batch)
    assert len(buf.getvalue()) > batch.positives.input_ids.numel() * 8  # the ids are in the stream
    back = pickle.loads(buf.getvalue())

    def same(a, b):
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if isinstance(x, torch.Tensor):
                assert torch.equal(x, y) and x.dtype == y.dtype, f.name
            elif dataclasses.is_dataclass(x):
                same(x, y)
            else:
                assert x == y, f.name

    same(batch, back)
    assert back.positives.row_groups is not None and back.negatives.row_groups is None
