"""A collection's files: corpus, queries and qrels layouts, string ids, and bad input as one line with the
file and line (docs/own-collection.md#file-formats)."""

from __future__ import annotations

import json

import pytest
from conftest import run_preprocess, user_error

from SeDR.core.errors import DataFormatError, SeDRInputError
from SeDR.data import collection_files as cf


def jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path):
    return jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"_id": "d/1", "title": "One", "text": "first document"},
            {"_id": "d#2", "text": "second", "url": "http://x/2", "title": "Two"},
            {"id": 3, "text": "third", "metadata": {"ignored": True}},
        ],
    )


def test_corpus_ids_in_file_order_and_text_joins_url_title_text(corpus):
    c = cf.scan_collection_corpus(corpus)
    assert c.ids == ["d/1", "d#2", "3"] and c.pid2offset == {"d/1": 0, "d#2": 1, "3": 2}
    texts = list(cf.range_texts("jsonl", str(corpus), c.line_starts[1], 2, (), 10_000, "</s>"))
    assert texts == ["http://x/2</s>Two</s>second", "third"]
    assert list(cf.range_texts("jsonl", str(corpus), 0, 1, (), 9, "</s>")) == ["One</s>fi"]  # character cut


def test_blank_lines_are_skipped_when_reading_a_range(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "a", "text": "x"}\n\n  \n{"_id": "b", "text": "y"}\n')
    c = cf.scan_collection_corpus(path)
    assert c.ids == ["a", "b"] and list(cf.range_texts("jsonl", str(path), 0, 2, (), 99, "|")) == ["x", "y"]


def test_txt_folder_ids_are_relative_paths(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "sub" / "b.txt").write_text("bee")
    (tmp_path / "docs" / "a.txt").write_text("ay")
    c = cf.scan_collection_corpus(tmp_path / "docs")
    assert c.layout == "txt" and c.ids == ["a", "sub/b"]
    assert list(cf.range_texts("txt", "", 0, 2, [str(p) for p in c.files], 99, "|")) == ["ay", "bee"]


def test_tsv_corpus_reads_the_msmarco_layout_with_any_id(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("doc-α\thttp://u\tT\tbody \n")
    c = cf.scan_collection_corpus(path)
    assert c.ids == ["doc-α"] and list(cf.range_texts("tsv", str(path), 0, 1, (), 99, "</s>")) == [
        "http://u</s>T</s>body"
    ]


def _split(tmp_path, corpus, queries, qrels_text, qrels_name="qrels.tsv"):
    qpath = jsonl(tmp_path / "queries.jsonl", queries) if isinstance(queries, list) else queries
    rpath = tmp_path / qrels_name
    rpath.write_text(qrels_text, encoding="utf-8")
    c = cf.scan_collection_corpus(corpus)
    return cf.read_collection_split(qpath, rpath, c.pid2offset, corpus), qpath, rpath


QUERIES = [{"_id": "q2", "text": "two "}, {"_id": "unjudged", "text": ""}, {"_id": "q1", "text": "one"}]


def test_split_keeps_judged_queries_in_query_file_order_beir_and_trec_qrels(tmp_path, corpus):
    beir, _, _ = _split(
        tmp_path, corpus, QUERIES, "query-id\tcorpus-id\tscore\nq1\td/1\t1\nq2\t3\t0\nq2\td#2\t2\n"
    )
    assert beir.qids == ["q2", "q1"] and beir.texts == ["two", "one"]
    assert beir.qrels == [("q1", 0, "1"), ("q2", 2, "0"), ("q2", 1, "2")]
    trec, _, _ = _split(tmp_path, corpus, QUERIES, "q1 0 d/1 1\n\nq2 Q0 3 0\nq2 0 d#2 2\n", "t.txt")
    assert (trec.qids, trec.qrels) == (beir.qids, beir.qrels)


def test_tsv_queries(tmp_path, corpus):
    q = tmp_path / "q.tsv"
    q.write_text("q1\tone\nq2\ttwo\n")
    split, _, _ = _split(tmp_path, corpus, q, "q2 0 d/1 1\n")
    assert split.qids == ["q2"] and split.texts == ["two"]


@pytest.mark.parametrize(
    "queries, qrels, where, message",
    [
        (QUERIES, "q1 0 nothere 1\n", "qrels.tsv:1", "'nothere' is not in the corpus"),
        (QUERIES, "", "qrels.tsv", "no judgements"),
        (QUERIES, "query-id\tcorpus-id\tscore\n", "qrels.tsv", "no judgements"),
        (QUERIES, "q1 d/1 1\n", "qrels.tsv:1", "neither a TREC qrels line"),
        (QUERIES, "query-id corpus-id score\nq1 0 d/1 1\n", "qrels.tsv:2", "expected 3 whitespace-separated"),
        (QUERIES, "q1 0 d/1 1\nq1 0 d/1 2\n", "qrels.tsv:2", "already judged on line 1"),
        (QUERIES, "q1 0 d/1 high\n", "qrels.tsv:1", "relevance 'high' is not an integer"),
        (QUERIES, "q1 0 d/1 1\nq9 0 d/1 1\n", "qrels.tsv:2", "'q9' is judged here but missing"),
        (
            QUERIES + [{"_id": "q1", "text": "again"}],
            "q1 0 d/1 1\n",
            "queries.jsonl:4",
            "already appeared on line 3",
        ),
        (QUERIES, "unjudged 0 d/1 1\n", "queries.jsonl:2", "judged query 'unjudged' has no text"),
        ([{"_id": "q1"}], "q1 0 d/1 1\n", "queries.jsonl:1", "has no text"),
        ([{"text": "x"}], "q1 0 d/1 1\n", "queries.jsonl:1", 'no "_id"'),
        ([{"_id": "q 1", "text": "x"}], "q1 0 d/1 1\n", "queries.jsonl:1", "contains whitespace"),
    ],
)
def test_bad_split_input_names_file_and_line(tmp_path, corpus, queries, qrels, where, message):
    with pytest.raises(DataFormatError) as err:
        _split(tmp_path, corpus, queries, qrels)
    assert str(err.value).startswith(f"{tmp_path}/{where}: ") and message in str(err.value), err.value


def test_tsv_query_without_text_names_its_line(tmp_path, corpus):
    q = tmp_path / "q.tsv"
    q.write_text("q1\tone\nq2\n")
    with pytest.raises(DataFormatError, match=r"q\.tsv:2: judged query 'q2' has no text"):
        _split(tmp_path, corpus, q, "q2 0 d/1 1\n")


@pytest.mark.parametrize(
    "lines, where, message",
    [
        (['{"_id": "a", "text": "x"}', '{"_id": "a", "text": "y"}'], 2, "'a' already appeared on line 1"),
        (['{"_id": "a", "text": "x"}', "not json"], 2, "not a JSON object"),
        (['{"_id": "a"}'], 1, 'no "text"'),
        (['{"_id": "a", "text": 3}'], 1, '"text" must be a string'),
        (['{"_id": "a b", "text": "x"}'], 1, "'a b' contains whitespace"),
        (['{"_id": "a\\tb", "text": "x"}'], 1, "contains whitespace"),
        (['{"_id": "", "text": "x"}'], 1, "empty document id"),
        (['{"_id": null, "text": "x"}'], 1, "must be a string or an integer"),
    ],
)
def test_bad_corpus_lines_name_file_and_line(tmp_path, lines, where, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        cf.scan_collection_corpus(path)
    assert str(err.value).startswith(f"{path}:{where}: ") and message in str(err.value), err.value


def test_corpus_formats_and_empty_corpus(tmp_path):
    (tmp_path / "c.csv").touch()
    with pytest.raises(SeDRInputError, match="unknown corpus format '.csv'"):
        cf.scan_collection_corpus(tmp_path / "c.csv")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataFormatError, match="holds no documents"):
        cf.scan_collection_corpus(tmp_path / "e.jsonl")
    (tmp_path / "t.tsv").write_text("a\tb\tc\n")
    with pytest.raises(DataFormatError, match=r"t\.tsv:1: expected 4 tab-separated fields"):
        cf.scan_collection_corpus(tmp_path / "t.tsv")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "has space.txt").write_text("x")
    with pytest.raises(DataFormatError, match="'has space' contains whitespace"):
        cf.scan_collection_corpus(tmp_path / "docs")


def test_read_judgements_any_layout(tmp_path):
    p = tmp_path / "q.tsv"
    p.write_text("query-id\tcorpus-id\tscore\na\tx\t2\na\ty\t0\nb\tx\t1\n")
    assert cf.read_judgements(p) == {"a": {"x": 2, "y": 0}, "b": {"x": 1}}
    p.write_text("a 0 x 2\na 0 x 1\n")
    with pytest.raises(DataFormatError, match=r"q\.tsv:2: .*already judged on line 1"):
        cf.read_judgements(p)


def test_the_command_prints_one_line_for_a_bad_qrels_file(tmp_path, capsys, corpus, tokenizer_dir):
    """Through SeDR_preprocess.py: exit 2, one ``error:`` line with the file and line, nothing written."""
    jsonl(tmp_path / "queries.jsonl", QUERIES)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td/1\t1\nq1\tnope\t1\n")
    line = user_error(
        capsys,
        run_preprocess,
        [
            "--corpus",
            str(corpus),
            "--split",
            f"test={tmp_path}/queries.jsonl",
            "--output_dir",
            str(tmp_path / "pre"),
        ]
        + ["--model_name_or_path", str(tokenizer_dir)],
    )
    assert line == f"error: {tmp_path}/qrels/test.tsv:3: document 'nope' is not in the corpus {corpus}"
    assert not list(tmp_path.glob("pre*"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--corpus", "c.jsonl"], "a collection needs --corpus and at least one --split"),
        (["--ir_datasets", "x", "--corpus", "c.jsonl"], "--ir_datasets reads the corpus and splits"),
        (["--corpus", "c.jsonl", "--split", "test"], "expected NAME=QUERIES[:QRELS]"),
        (["--corpus", "c.jsonl", "--split", "test=nothere.jsonl"], "missing input file c.jsonl"),
    ],
)
def test_collection_flags_are_checked(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert message in user_error(capsys, run_preprocess, argv + ["--output_dir", "pre"])
