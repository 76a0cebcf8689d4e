"""Hard-negative selection and the hard_negative.json file."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from SeDR.core.errors import DataFormatError, MissingInputError
from SeDR.retrieval import exact_search, hard_negatives


def test_select_hard_negatives_skips_relevant_dedups_and_caps():
    row_doc_ids = np.array([0, 0, 1, 2, 3, 4, 5])
    rows = np.array([2, 0, 1, 3, 4, 5, 6, -1, -1])  # docs 1,0,0,2,3,4,5 then two missing hits
    assert hard_negatives.select_hard_negatives(rows, row_doc_ids, relevant={0}, keep=300) == [1, 2, 3, 4, 5]
    assert hard_negatives.select_hard_negatives(rows, row_doc_ids, relevant=[2], keep=3) == [1, 0, 3]
    assert hard_negatives.select_hard_negatives(np.full(4, -1), row_doc_ids, relevant=[]) == []


def test_hard_negatives_file_roundtrip(tmp_path):
    path = tmp_path / "sub" / "hard_negative.json"
    hard_negatives.write_hard_negatives(path, {3: [5, 1], 0: [np.int64(2)]})
    assert json.loads(path.read_text()) == {"3": [5, 1], "0": [2]}  # decimal-string keys, int lists
    assert hard_negatives.load_hard_negatives(path) == {3: [5, 1], 0: [2]}
    assert [p.name for p in path.parent.iterdir()] == ["hard_negative.json"]  # no temp file left
    with pytest.raises(MissingInputError):
        hard_negatives.load_hard_negatives(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataFormatError):
        hard_negatives.load_hard_negatives(tmp_path / "bad.json")


def test_hard_negatives_for_queries_small_corpus():
    # 3 docs (4 rows) but 1024 hits asked: faiss returns -1 for the missing ones.
    vectors = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    row_doc_ids = np.array([0, 0, 1, 2])
    index = exact_search.FaissFlatIndex(vectors, show_progress=False)
    queries = np.array([[1.0, 0.1], [0.0, 1.0]], dtype=np.float32)
    out = hard_negatives.hard_negatives_for_queries(
        index, row_doc_ids, queries, [7, 8], {7: [1]}, keep=300, show_progress=False
    )
    # q7 scores rows: 1, .1, 1.1, -1 -> rows 2,0,1,3 -> docs 1,0,0,2; doc 1 relevant -> [0, 2]
    # q8 scores rows: 0, 1, 1, 0 -> docs {0,1} first (tie), then doc 0/2; q8 has no qrels
    assert out[7] == [0, 2]
    assert sorted(out[8]) == [0, 1, 2]


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"0": [1, -1]}, "query 0, position 1: document offset -1 is outside 0..9"),
        ({"0": [1], "4": [10]}, "query 4, position 0: document offset 10 is outside 0..9"),
        ({"x": [1]}, "key 'x' is not a query offset"),
        ({"0": [1.5]}, "query 0: expected a list of integer document offsets"),
        ({"0": "1 2"}, "query 0: expected a list of integer document offsets"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_every_entry_is_checked_against_the_corpus(tmp_path, payload, message):
    path = tmp_path / "hard_negative.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DataFormatError, match=f"^{path}: " + re.escape(message)):
        hard_negatives.load_hard_negatives(path, num_docs=10)


def test_a_missing_file_is_one_line_with_the_command_that_writes_it(tmp_path):
    """Training checks the file before it claims its output folder, with the reader's own words."""
    path = tmp_path / "hard_negative.json"
    expected = f"missing input file {path}; generate it with `python SeDR/inference.py ... --gen_hardneg`"
    for check in (hard_negatives.require_hard_negative_file, hard_negatives.load_hard_negatives):
        with pytest.raises(MissingInputError) as err:
            check(path)
        assert str(err.value) == expected
    path.write_text("{}")
    assert hard_negatives.require_hard_negative_file(str(path)) == path


# ------------------------------------------------------------------ streamed generation, resume


def corpus(seed=0, n_docs=120, n_queries=53):
    """Documents of 1-5 rows with small-integer vectors (many tied scores), queries and their qrels."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, size=n_docs)
    row_doc_ids = np.repeat(np.arange(n_docs), counts).astype(np.int32)
    vectors = rng.integers(-2, 3, size=(len(row_doc_ids), 6)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(n_queries, 6)).astype(np.float32)
    rel = {
        q: sorted(set(rng.integers(0, n_docs, size=int(rng.integers(0, 4))).tolist()))
        for q in range(n_queries)
    }
    return vectors, row_doc_ids, queries, rel


def generate(path, vectors, row_doc_ids, queries, rel, block, calls=None, identity=None, **kw):
    index = exact_search.TorchFlatIndex(vectors, chunk_rows=50)

    def encode(a, b):
        if calls is not None:
            calls.append((a, b))
        return queries[a:b]

    return hard_negatives.generate_hard_negatives(
        index,
        row_doc_ids,
        encode,
        len(queries),
        rel,
        path,
        identity=identity or {"model": "m"},
        block_size=block,
        show_progress=False,
        **kw,
    )


def test_streamed_file_is_the_whole_dict_written_at_once(tmp_path):
    vectors, row_doc_ids, queries, rel = corpus()
    index = exact_search.TorchFlatIndex(vectors)
    whole = hard_negatives.hard_negatives_for_queries(
        index, row_doc_ids, queries, range(len(queries)), rel, hits=40, keep=25, show_progress=False
    )
    hard_negatives.write_hard_negatives(tmp_path / "ref.json", whole)
    for block in (1, 7, 53, 64):
        path = tmp_path / f"b{block}" / "hard_negative.json"
        summary = generate(path, vectors, row_doc_ids, queries, rel, block, hits=40, keep=25)
        assert path.read_bytes() == (tmp_path / "ref.json").read_bytes(), block
        assert os.listdir(path.parent) == ["hard_negative.json"]  # no block files, no temporary file
        assert summary.queries == 53 and summary.short == sum(len(v) < 25 for v in whole.values())


KILL_AFTER_TWO_BLOCKS = """
import os, sys
import test_hard_negatives as t
from SeDR.retrieval import hard_negatives
write = hard_negatives._Parts.write
done = []
def write_then_die(self, *a):
    write(self, *a)
    done.append(1)
    if len(done) == 2:
        os._exit(9)  # as a kill: no cleanup, no exception handlers
hard_negatives._Parts.write = write_then_die
t.generate(sys.argv[1], *t.corpus(), 10, hits=40, keep=25)
"""


def test_a_killed_run_resumes_and_writes_the_same_bytes(tmp_path):
    vectors, row_doc_ids, queries, rel = corpus()
    generate(tmp_path / "ref.json", vectors, row_doc_ids, queries, rel, 10, hits=40, keep=25)
    path = tmp_path / "hard_negative.json"
    path.write_text('{"0":[1]}')  # an earlier file: untouched by the killed run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_TWO_BLOCKS, str(path)], env=env, capture_output=True
    )
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    assert path.read_text() == '{"0":[1]}'
    parts = tmp_path / ".hard_negative.json.parts"
    assert sorted(p.name for p in parts.iterdir()) == [
        "block-000000000000.npz",
        "block-000000000010.npz",
        "manifest.json",
    ]
    calls = []
    summary = generate(path, vectors, row_doc_ids, queries, rel, 10, calls, hits=40, keep=25)
    assert summary.resumed_blocks == 2 and calls == [(20, 30), (30, 40), (40, 50), (50, 53)]
    assert path.read_bytes() == (tmp_path / "ref.json").read_bytes()
    assert not parts.exists()


def test_blocks_of_another_run_are_not_reused(tmp_path):
    vectors, row_doc_ids, queries, rel = corpus()
    path = tmp_path / "hard_negative.json"
    generate(tmp_path / "ref.json", vectors, row_doc_ids, queries, rel, 10, hits=40, keep=25)

    def stop_after_first(path):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(
            path, vectors, row_doc_ids, queries, rel, 10, hits=40, keep=25, before_write=stop_after_first
        )
    other = queries[::-1].copy()  # another model's query vectors, announced by another identity
    calls = []
    generate(path, vectors, row_doc_ids, other, rel, 10, calls, identity={"model": "other"}, hits=40, keep=25)
    assert len(calls) == 6  # every block searched again
    generate(tmp_path / "other.json", vectors, row_doc_ids, other, rel, 10, hits=40, keep=25)
    assert path.read_bytes() == (tmp_path / "other.json").read_bytes()


def test_exact_hard_negatives_are_the_best_documents_over_every_row(tmp_path):
    vectors, row_doc_ids, queries, rel = corpus(seed=1)
    path = tmp_path / "hard_negative.json"
    generate(path, vectors, row_doc_ids, queries, rel, 16, hits=8, keep=30, exact=True)
    got = json.loads(path.read_text())
    scores = queries.astype(np.float64) @ vectors.T.astype(np.float64)  # exact: small integers
    n_docs = int(row_doc_ids.max()) + 1
    missed = 0
    for q, s in enumerate(scores):
        best = np.full(n_docs, -np.inf)
        np.maximum.at(best, row_doc_ids, s)
        order = [d for d in np.lexsort((np.arange(n_docs), -best)).tolist() if d not in rel[q]][:30]
        assert got[str(q)] == order, q
        missed += len(
            set(order)
            - set(
                hard_negatives.hard_negative_array(np.argsort(-s, kind="stable")[:8], row_doc_ids, rel[q], 30)
            )
        )
    assert missed > 0  # 8 segment hits alone would have missed documents


def test_a_block_of_lists_at_once_equals_one_query_at_a_time():
    rng = np.random.default_rng(2)
    row_doc_ids = np.repeat(np.arange(40), rng.integers(1, 4, size=40))
    rows = rng.integers(-1, len(row_doc_ids), size=(30, 50))  # -1: a missing hit
    relevant = [rng.integers(0, 40, size=int(rng.integers(0, 5))).tolist() for _ in range(30)]
    lengths, docs = hard_negatives.hard_negative_block(rows, row_doc_ids, relevant, keep=12)
    ends = np.cumsum(lengths)
    for i in range(30):
        want = hard_negatives.select_hard_negatives(rows[i], row_doc_ids, relevant[i], keep=12)
        assert docs[ends[i] - lengths[i] : ends[i]].tolist() == want
