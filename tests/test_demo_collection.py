"""The demo's man-pages collection: unique descriptions, SEE ALSO labels, splits,
file formats, the snapshot."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re

import pytest

from SeDR.core.constants import CORPUS_FILE, SPLIT_FILES
from SeDR.demo import collection as mc

# --------------------------------------------------------------------------------------------
# Collection: duplicates, SEE ALSO resolution, labels
# --------------------------------------------------------------------------------------------


def _page(name, section, description, see_also=(), names=None, body=None):
    return mc.Page(
        name=name,
        section=section,
        names=tuple(names or [name]),
        description=description,
        body=body or f"DESCRIPTION\nbody of {name}",
        see_also=tuple(see_also),
        notice="",
    )


def test_pages_sharing_a_description_are_excluded():
    pages = [_page("a", "2", "Do X."), _page("b", "3", "do  x"), _page("c", "3", "do y", [("a", "2")])]
    col = mc.collection_from_pages(pages)
    assert [d.url for d in col.documents] == ["man:c(3)"]
    assert col.documents[0].see_also == ()  # a(2) is not a document


@pytest.fixture(scope="module")
def letters():
    """Four documents; a symlink and a ``.so`` stub as aliases; two pages sharing a description."""
    see = [
        ("beta_alias", "2"),
        ("epsilon", "3"),
        ("delta", "7"),
        ("dup1", "5"),
        ("alpha", "2"),
        ("nothere", "1"),
    ]
    body = (
        "DESCRIPTION\nText of alpha.\nSEE ALSO\n"
        "beta_alias(2), epsilon(3), delta(7), dup1(5), alpha(2), nothere(1)"
    )
    pages = [
        _page("delta", "7", "fourth letter", [("gamma_old", "3")]),
        _page("alpha", "2", "first letter", see, body=body),
        _page("beta", "2", "second letter"),
        _page("gamma", "3", "third letter", names=["gamma", "epsilon"]),
        _page("dup1", "5", "same description"),
        _page("dup2", "5", "Same description."),
    ]
    aliases = {("beta_alias", "2"): "man:beta(2)", ("gamma_old", "3"): "man:gamma(3)"}
    return mc.collection_from_pages(pages, aliases, header={"source": {"packages": {"manpages": "9.9-1"}}})


def test_numbering_and_see_also_resolution(letters):
    by_url = {d.url: d for d in letters.documents}
    # numbered in (section, name) order
    assert [(d.docid, d.url) for d in letters.documents] == [
        ("D1", "man:alpha(2)"),
        ("D2", "man:beta(2)"),
        ("D3", "man:gamma(3)"),
        ("D4", "man:delta(7)"),
    ]
    alpha = by_url["man:alpha(2)"]
    # alias, NAME-line name and plain reference resolve; self, excluded and unknown pages do not
    assert alpha.see_also == (2, 3, 4)
    assert by_url["man:delta(7)"].see_also == (3,)  # through the .so alias
    assert (alpha.title, alpha.query, alpha.qid) == ("alpha", "first letter", mc.QID_BASE + 1)
    assert by_url["man:gamma(3)"].title == "gamma, epsilon"
    assert letters.header["source"] == {"packages": {"manpages": "9.9-1"}}
    assert letters.header["format"] == mc.SNAPSHOT_FORMAT and letters.header["documents"] == 4


def test_graded_qrels_on_test_splits_binary_elsewhere(letters, tmp_path):
    docs = [
        dataclasses.replace(d, split={1: "test", 4: "2020test", 2: "dev"}.get(d.number, "train"))
        for d in letters.documents
    ]
    col = mc.Collection(letters.header, tuple(docs))
    assert col.qrels("test") == [(100001, "D1", 3), (100001, "D2", 1), (100001, "D3", 1), (100001, "D4", 1)]
    assert col.qrels("2020test") == [(100004, "D4", 3), (100004, "D3", 1)]
    assert col.qrels("dev") == [(100002, "D2", 1)]
    assert col.qrels("train") == [(100003, "D3", 1)]
    mc.write_msmarco_files(col, tmp_path)
    assert (tmp_path / "2019qrels-docs.txt").read_text() == (
        "100001 Q0 D1 3\n100001 Q0 D2 1\n100001 Q0 D3 1\n100001 Q0 D4 1\n"
    )
    assert (tmp_path / "msmarco-docdev-qrels.tsv").read_text() == "100002 0 D2 1\n"
    assert (tmp_path / "msmarco-docdev-queries.tsv").read_text() == "100002\tsecond letter\n"
    assert (tmp_path / CORPUS_FILE).read_text().split("\n")[0] == (
        "D1\tman:alpha(2)\talpha\tDESCRIPTION Text of alpha. SEE ALSO beta_alias(2), epsilon(3), delta(7), "
        "dup1(5), alpha(2), nothere(1)"
    )


def test_splits_are_seeded_and_stable():
    urls = [f"man:p{i}(3)" for i in range(400)]
    a = mc.assign_splits(urls, seed=1)
    assert a == mc.assign_splits(list(reversed(urls)), seed=1)  # input order does not matter
    assert a != mc.assign_splits(urls, seed=2)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "dev", "test", "2020test")}
    assert counts == {
        "train": 400 - mc.DEV_QUERIES - mc.TEST_QUERIES,
        "dev": mc.DEV_QUERIES,
        "test": mc.TEST_QUERIES // 2,
        "2020test": mc.TEST_QUERIES - mc.TEST_QUERIES // 2,
    }
    # a page keeps its split when other pages are removed, unless it moves up into a smaller split
    b = mc.assign_splits(urls[:300], seed=1)
    assert all(b[u] == "dev" for u in urls[:300] if a[u] == "dev")


def test_tsv_fields_are_sanitised():
    doc = mc.Document(
        number=7,
        url="man:x(1)",
        title="x,\ty",
        body="line one\n\tline two\r\n",
        query="q\tq\n",
        split="train",
        see_also=(),
        notice="",
    )
    col = mc.Collection({}, (doc,))
    assert mc.tsv_field(doc.body) == "line one line two"
    assert col.queries("train") == [(100007, "q\tq\n")]


# --------------------------------------------------------------------------------------------
# The shipped snapshot and the written files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshot():
    return mc.load_snapshot(mc.SNAPSHOT_PATH)


def test_shipped_snapshot_size_and_shape(snapshot):
    docs = snapshot.documents
    n = len(docs)
    assert 950 <= n <= 1100
    assert [d.number for d in docs] == list(range(1, n + 1))
    assert len({d.url for d in docs}) == n
    assert len({mc.description_key(d.query) for d in docs}) == n  # the rule: no shared description
    # Length proxy: > 300 whitespace words. Measured on this snapshot with the GPT-2/RoBERTa byte-level BPE,
    # 99% of such documents exceed 512 tokens (65% of all documents do); 61% of documents pass the proxy.
    words = [len(d.title.split()) + len(d.body.split()) for d in docs]
    assert sum(w > 300 for w in words) / n > 0.55
    sizes = {s: len(snapshot.split_documents(s)) for s in SPLIT_FILES}
    assert sizes == {"train": n - 300, "dev": 150, "test": 75, "2020test": 75}
    assert sum(bool(d.see_also) for d in docs) / n > 0.9
    assert all(1 <= t <= n and t != d.number for d in docs for t in d.see_also)
    assert snapshot.header["source"]["packages"].keys() == {"manpages", "manpages-dev"}
    assert "licence" in snapshot.header
    assert sum(bool(d.notice) for d in docs) / n > 0.99
    assert mc.SNAPSHOT_PATH.stat().st_size < 2_500_000


def test_licence_file_keeps_debian_copyright():
    text = (mc.DATA_DIR / mc.LICENSE_FILE).read_text()
    for needle in (
        "License: Linux-man-pages-copyleft",
        "Permission is granted to make and distribute verbatim",
        "License: BSD-3-clause",
        "Upstream-Name: man-pages",
    ):
        assert needle in text


def test_snapshot_round_trip_is_byte_identical(snapshot, tmp_path):
    a = mc.write_snapshot(snapshot, tmp_path / "a.jsonl.gz")
    b = mc.write_snapshot(mc.load_snapshot(a), tmp_path / "b.jsonl.gz")
    assert a.read_bytes() == b.read_bytes()
    assert mc.load_snapshot(b) == snapshot
    assert gzip.decompress(a.read_bytes()) == gzip.decompress(mc.SNAPSHOT_PATH.read_bytes())


def test_bad_snapshots_name_the_file_and_line(snapshot, tmp_path):
    missing = tmp_path / "none.jsonl.gz"
    with pytest.raises(mc.MissingInputError, match="none.jsonl.gz.*build_manpage_snapshot"):
        mc.load_snapshot(missing)
    bad = tmp_path / "bad.jsonl.gz"
    lines = gzip.decompress(mc.SNAPSHOT_PATH.read_bytes()).decode().split("\n")
    bad.write_bytes(gzip.compress("\n".join(lines[:3] + ['{"docid": "D3"}']).encode()))
    with pytest.raises(mc.DataFormatError, match=r"bad.jsonl.gz:4: bad document record"):
        mc.load_snapshot(bad)


def test_written_files_follow_the_msmarco_formats(tmp_path, snapshot, capsys):
    assert mc.main(["--out", str(tmp_path)]) == 0
    assert "documents: " in capsys.readouterr().out
    names = {CORPUS_FILE} | {f for pair in SPLIT_FILES.values() for f in pair}
    assert {p.name for p in tmp_path.iterdir()} == names and len(names) == 9
    corpus = {}
    for line in (tmp_path / CORPUS_FILE).read_text(encoding="utf-8").split("\n")[:-1]:
        assert line.count("\t") == 3
        docid, url, title, body = line.split("\t")
        assert re.fullmatch(r"D\d+", docid) and url.startswith("man:") and title and body
        corpus[docid] = url
    assert len(corpus) == len(snapshot.documents)
    owner_of = {}
    seen_qids = set()
    for split, (qfile, rfile) in SPLIT_FILES.items():
        queries = {}
        for line in (tmp_path / qfile).read_text(encoding="utf-8").split("\n")[:-1]:
            assert line.count("\t") == 1
            qid, text = line.split("\t")
            queries[int(qid)] = text
        assert not seen_qids & queries.keys()  # each query in exactly one split
        seen_qids |= queries.keys()
        judged = set()
        for line in (tmp_path / rfile).read_text().split("\n")[:-1]:
            qid, it, docid, rel = line.split(" ")
            assert docid in corpus and int(qid) in queries
            judged.add(int(qid))
            if split in mc.TREC_SPLITS:
                assert it == "Q0" and rel in ("1", "3")
            else:
                assert it == "0" and rel == "1"
            if rel != "1" or split not in mc.TREC_SPLITS:
                owner_of.setdefault(docid, []).append(int(qid))
        assert judged == queries.keys()
    # every document is the own page of exactly one query, over all splits
    assert sorted(owner_of) == sorted(corpus) and all(len(v) == 1 for v in owner_of.values())


def test_select_collection_keeps_pages_and_drops_queries(snapshot):
    sub = mc.select_collection(snapshot, train_queries=5, docs_per_split=None, seed=1)
    assert len(sub.documents) == len(snapshot.documents)
    assert len(sub.queries("train")) == 5 and len(sub.queries("dev")) == len(snapshot.queries("dev"))
    assert sum(d.split == mc.UNUSED_SPLIT for d in sub.documents) == len(snapshot.queries("train")) - 5
    assert sub.documents != mc.select_collection(snapshot, 5, None, seed=2).documents
    small = mc.select_collection(snapshot, None, {"train": 4, "dev": 2}, seed=1)
    numbers = {d.number for d in small.documents}
    assert len(numbers) == 6 and all(set(d.see_also) <= numbers for d in small.documents)
    assert [d.split for d in small.documents].count("dev") == 2


def test_beir_files_hold_the_msmarco_files_data_in_the_same_order(tmp_path):
    """Same pages, queries and labels as write_msmarco_files, in the same order, under the BEIR ids."""
    col = mc.select_collection(mc.load_snapshot(), 5, {"train": 8, "dev": 3, "test": 2, "2020test": 2}, 2022)
    ms = mc.write_msmarco_files(col, tmp_path / "ms")
    beir = mc.write_beir_files(col, tmp_path / "beir")
    assert sorted(beir) == [
        "corpus.jsonl",
        "qrels/2020test.tsv",
        "qrels/dev.tsv",
        "qrels/test.tsv",
        "qrels/train.tsv",
        "queries.jsonl",
    ]
    docs, queries = mc.beir_id_maps(col)
    corpus = [json.loads(line) for line in beir["corpus.jsonl"].read_text(encoding="utf-8").splitlines()]
    tsv = [line.split("\t") for line in ms[CORPUS_FILE].read_text(encoding="utf-8").splitlines()]
    assert [(docs[d], u, t, b) for d, u, t, b in tsv] == [
        (r["_id"], r["url"], r["title"], r["text"]) for r in corpus
    ]
    assert corpus[0]["_id"] == corpus[0]["url"] and corpus[0]["_id"].startswith("man:")
    written = [json.loads(line) for line in beir["queries.jsonl"].read_text(encoding="utf-8").splitlines()]
    for split, (qfile, rfile) in SPLIT_FILES.items():
        ms_queries = [line.split("\t") for line in ms[qfile].read_text(encoding="utf-8").splitlines()]
        mine = [(r["_id"], r["text"]) for r in written if r["_id"] in {queries[q] for q, _ in ms_queries}]
        assert mine == [(queries[q], t) for q, t in ms_queries]  # same relative order: same offsets
        lines = beir[f"qrels/{split}.tsv"].read_text(encoding="utf-8").splitlines()
        assert lines[0] == "query-id\tcorpus-id\tscore"
        ms_qrels = [line.split() for line in ms[rfile].read_text(encoding="utf-8").splitlines()]
        assert [line.split("\t") for line in lines[1:]] == [
            [queries[q], docs[d], r] for q, _, d, r in ms_qrels
        ]
    assert len(written) == 5 + 3 + 2 + 2  # the unused training pages' queries are not written
