"""``SeDR.retrieval.encoding.encode_corpus``: the row-grouped passes give the fixed-padding vectors."""

from __future__ import annotations

import numpy as np
import torch

from SeDR.core.runtime import Precision
from SeDR.data.segmentation import SegmentSpec
from SeDR.modeling import build_model
from SeDR.retrieval.encoding import collate_pass, encode_corpus


class Passages:
    """The two things ``encode_corpus`` reads of a ``TokenCache``: ``lengths`` and ``[i]``."""

    def __init__(self, docs):
        self.docs = docs
        self.lengths = np.array([len(d) for d in docs], dtype=np.int64)

    def __len__(self):
        return len(self.docs)

    def __getitem__(self, i):
        return self.docs[i]


def test_encode_corpus_row_groups_equal_fixed_padding(star_dir):
    rng = np.random.default_rng(2)
    spec = SegmentSpec(40, 4)  # L = 28, T = 33
    docs = [rng.integers(5, 390, size=int(n)) for n in rng.integers(3, 120, size=14)]
    passages = Passages(docs)
    model = build_model("SeDR", star_dir, max_seg_num=4)
    fp32 = Precision(torch.device("cpu"), None, None)

    def run(**kw):
        out = list(
            encode_corpus(model, passages, spec, 8, torch.device("cpu"), fp32, show_progress=False, **kw)
        )
        return np.concatenate([v for v, _ in out]), np.concatenate([d for _, d in out])

    groups_seen = []
    encode_segments = model.encode_segments

    def spy(batch):
        groups_seen.append(0 if batch.row_groups is None else len(batch.row_groups.sizes))
        return encode_segments(batch)

    model.encode_segments = spy
    grouped, grouped_ids = run(group_overhead=0)
    assert max(groups_seen) > 1  # the passes really were grouped
    fixed, fixed_ids = run(compact=False, row_groups=False)
    assert np.array_equal(grouped_ids, fixed_ids)
    assert np.allclose(grouped, fixed, atol=1e-5, rtol=0)
    # The defaults (what the scripts get) too; ``collate_pass`` builds the same batches.
    default, default_ids = run()
    assert np.array_equal(default_ids, fixed_ids) and np.allclose(default, fixed, atol=1e-5, rtol=0)
    first = collate_pass(model, docs[:3], [0, 1, 2], spec, group_overhead=0)
    assert first.row_groups is not None and first.row_groups.rows.numel() == int(first.seg_counts.sum())


def test_encode_corpus_with_collating_workers_gives_the_same_vectors(star_dir):
    rng = np.random.default_rng(5)
    spec = SegmentSpec(40, 4)
    passages = Passages([rng.integers(5, 390, size=int(n)) for n in rng.integers(3, 120, size=23)])
    model = build_model("SeDR", star_dir, max_seg_num=4)
    fp32 = Precision(torch.device("cpu"), None, None)
    passes = {}
    for workers in (0, 2):
        passes[workers] = list(
            encode_corpus(
                model, passages, spec, 8, torch.device("cpu"), fp32, show_progress=False, num_workers=workers
            )
        )
    assert len(passes[0]) == len(passes[2]) > 3  # one item per pass, in order
    for (v0, d0), (v2, d2) in zip(passes[0], passes[2]):
        assert np.array_equal(d0, d2) and np.array_equal(v0, v2)
    assert np.array_equal(
        np.concatenate([d for _, d in passes[0]]), np.repeat(np.arange(23), _rows(passages, spec))
    )


def _rows(passages, spec) -> np.ndarray:
    from SeDR.retrieval.encoding import corpus_segment_counts

    return corpus_segment_counts(passages, spec)
