"""Hard-negative selection and the hard_negative.json file."""

import json
import re

import numpy as np
import pytest

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
