"""The Retriever API and its two commands against the pipeline: same rankings as SeDR/inference.py's
run files, index folders that round-trip and are never written half, bad document files named by
file and line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, cwd, user_error

from SeDR import Retriever
from SeDR import inference as inference_script
from SeDR import train as train_script
from SeDR.api.retriever import _tokenizer_source
from SeDR.cli import index as index_cli
from SeDR.cli import search as search_cli
from SeDR.core.errors import DataFormatError, SeDRInputError
from SeDR.data.segmentation import SegmentSpec
from SeDR.data.tokenizer_record import TOKENIZER_FILES

SHAPE = ["--max_query_length", "16", "--max_seg_length", "64", "--max_seg_num", "4"]
TRAIN = [
    *SHAPE,
    "--max_bsize",
    "6",
    "--preprocess_dir",
    "./data/preprocess",
    "--hardneg_path",
    "./data/hard_negative.json",
    "--init_path",
    "./data/star",
    "--output_dir",
    "./data/models",
    "--logging_dir",
    "./data/log",
    "--hardneg_topk",
    "100",
    "--learning",
    "1e-3",
    "--warmup_steps",
    "0",
    "--optimizer_str",
    "adamw",
    "--num_train_epochs",
    "1",
    "--cache_size",
    "5",
]
CORPUS = "data/msmarco-docs.tsv"


@pytest.fixture(scope="module")
def trained(base_root, tmp_path_factory):
    """SeDR and SeDR_MaxP trained for one epoch with (64, 4) segments;
    inference of both and of STAR as STAR_MaxP."""
    root = tmp_path_factory.mktemp("retriever") / "root"
    shutil.copytree(base_root[0], root)
    models = {"STAR_MaxP": root / "data" / "star"}
    with cwd(root):
        for cls in ("SeDR", "SeDR_MaxP"):
            (models[cls],) = [p.resolve() for p in train_script.main(["--model_class", cls, *TRAIN])]
        for cls, path in models.items():
            inference_script.main(
                [
                    "--model_class",
                    cls,
                    *SHAPE,
                    "--model_path",
                    str(path),
                    "--output_dir",
                    f"./data/evaluate/{cls}",
                ]
            )
    return root, models


def run_file(path) -> dict[str, list[tuple[str, float]]]:
    """A TREC run as ``{qid: [(docid, score), ...]}`` in rank order."""
    run: dict[str, list] = {}
    for line in Path(path).read_text().splitlines():
        qid, _, doc, rank, score, _ = line.split()
        run.setdefault(qid, []).append((doc, float(score)))
        assert int(rank) == len(run[qid])
    return run


def query_texts(root, name="msmarco-docdev-queries.tsv") -> dict[str, str]:
    return dict(line.split("\t", 1) for line in (root / "data" / name).read_text().splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("model_class", ["SeDR", "SeDR_MaxP", "STAR_MaxP"])
def test_api_rankings_equal_the_inference_run_files(trained, model_class):
    root, models = trained
    # Trained checkpoints bring their segment shape and query length; the STAR folder records none.
    shape = (
        {} if model_class != "STAR_MaxP" else {"max_seg_length": 64, "max_seg_num": 4, "max_query_length": 16}
    )
    r = Retriever.from_pretrained(models[model_class], **shape)
    assert (r.spec, r.max_query_length, r.model.model_class_name) == (SegmentSpec(64, 4), 16, model_class)
    index = r.index(root / CORPUS, show_progress=False)
    evaluated = root / "data" / "evaluate" / model_class
    # the same forward passes as SeDR/inference.py: the same vectors, row for row
    np.testing.assert_array_equal(
        index.embeddings.doc_ids, np.fromfile(evaluated / "passages-id.memmap", np.int32)
    )
    np.testing.assert_array_equal(
        index.embeddings.vectors,
        np.fromfile(evaluated / "passages.memmap", np.float32).reshape(index.num_rows, -1),
    )
    for split, queries_file, k in (
        ("dev", "msmarco-docdev-queries.tsv", 101),
        ("test", "msmarco-test2019-queries.tsv", 100),
    ):
        expected = run_file(evaluated / f"{split}.trec")
        texts = query_texts(root, queries_file)
        hits = r.search(index, [texts[q] for q in expected], k=k, show_progress=False)
        for (qid, ranked), got in zip(expected.items(), hits):
            assert [h.doc_id for h in got] == [d for d, _ in ranked], qid
            np.testing.assert_allclose([h.score for h in got], [s for _, s in ranked], rtol=0, atol=1e-5)


def _docs(n=12):
    """Documents of 1 to 3 segments of (32, 3), distinct word sequences
    (no two segments alike, so no score ties)."""
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
    return [(f"doc-{i}", " ".join(rng.choice(words, 4 + 9 * i))) for i in range(n)]


@pytest.fixture(scope="module")
def star(base_root):
    return Retriever.from_pretrained(
        base_root[0] / "data" / "star", max_seg_length=32, max_seg_num=3, max_query_length=16
    )


def test_index_save_load_round_trip_and_brute_force_search(star, tmp_path):
    docs = _docs()
    index = star.index(docs, show_progress=False)
    index.save(tmp_path / "saved")
    loaded = star.load_index(tmp_path / "saved")
    assert loaded.ids == index.ids == [d for d, _ in docs]
    assert loaded.info == index.info and loaded.info["model_class"] == "STAR_MaxP"
    np.testing.assert_array_equal(loaded.embeddings.vectors, index.embeddings.vectors)
    np.testing.assert_array_equal(loaded.embeddings.doc_ids, index.embeddings.doc_ids)
    assert [loaded.text(i) for i in range(len(docs))] == [t for _, t in docs]
    # search = brute force: each document scored by its best segment, best_segment = the argmax
    queries = ["alpha gamma", "omega sigma kappa", "zeta"]
    qv = star.encode_queries(queries, show_progress=False)
    scores = qv @ np.asarray(loaded.embeddings.vectors).T  # (3, rows)
    for q, hits in enumerate(star.search(loaded, queries, k=5, show_progress=False)):
        best = [
            (scores[q, a:b].max(), d, int(scores[q, a:b].argmax()))
            for d, (a, b) in enumerate(zip(loaded.first_row[:-1], loaded.first_row[1:]))
        ]
        best.sort(key=lambda x: -x[0])
        assert [(h.doc_id, h.best_segment) for h in hits] == [(docs[d][0], s) for _, d, s in best[:5]]
        np.testing.assert_allclose([h.score for h in hits], [v for v, _, _ in best[:5]], atol=1e-5)
    # the segment texts of a document are consecutive pieces of its (lower-cased) text
    d = int(np.argmax(np.diff(loaded.first_row)))
    pieces = [star.segment_text(loaded, docs[d][0], b) for b in range(int(np.diff(loaded.first_row)[d]))]
    assert len(pieces) == 3 and all(pieces) and docs[d][1].lower().startswith("".join(pieces))


def test_streaming_input_gives_the_same_index_as_a_list(star, tmp_path):
    docs = _docs()
    star.index(docs, out=tmp_path / "list", show_progress=False)
    star.index(
        (t for _, t in docs),
        ids=(d for d, _ in docs),
        out=tmp_path / "stream",
        batch_size=100,
        show_progress=False,
    )
    for name in (
        "passages.memmap",
        "passages-id.memmap",
        "doc-ids.jsonl",
        "texts.jsonl",
        "texts-offsets.npy",
    ):
        assert (tmp_path / "list" / name).read_bytes() == (tmp_path / "stream" / name).read_bytes(), name


def _left_behind(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


@pytest.mark.parametrize(
    "name, content, line, message",
    [
        ("docs.jsonl", '{"id": 1, "text": "a b"}\n\n{"id": 2, "text": "c"\n', 3, "not a JSON object"),
        ("docs.jsonl", '{"id": 1, "text": "a b"}\n{"id": 2}\n', 2, '"id" and "text"'),
        (
            "docs.jsonl",
            '{"id": 1, "text": "a b"}\n{"id": "1", "text": "c"}\n',
            2,
            "already appeared on line 1",
        ),
        ("docs.tsv", "D1\tu\tt\tbody\nD2\tu\tbody\n", 2, "expected 4 tab-separated fields"),
        ("docs.tsv", "D1\tu\tt\tbody\nD2\tu\tt\tb\nD1\tu\tt\tb\n", 3, "already appeared on line 1"),
    ],
)
def test_malformed_lines_are_named_and_nothing_is_written(
    base_root, tmp_path, capsys, name, content, line, message
):
    docs = tmp_path / "in" / name
    docs.parent.mkdir()
    docs.write_text(content)
    out = tmp_path / "out" / "index"
    out.parent.mkdir()
    msg = user_error(capsys, index_cli.main, [str(base_root[0] / "data" / "star"), str(docs), str(out)])
    assert msg.startswith(f"error: {docs}:{line}: ") and message in msg, msg
    assert _left_behind(out.parent) == []


def test_a_failing_stream_leaves_no_index_and_no_temporary_folder(star, tmp_path):
    def docs():
        yield from (t for _, t in _docs(6))
        raise DataFormatError("feed.txt", 7, "broken record")

    with pytest.raises(DataFormatError, match="feed.txt:7"):
        star.index(docs(), out=tmp_path / "index", batch_size=4, show_progress=False)
    with pytest.raises(SeDRInputError, match="appears twice"):
        star.index([("a", "x y"), ("b", "z"), ("a", "w")], out=tmp_path / "index", show_progress=False)
    assert _left_behind(tmp_path) == []


@pytest.mark.slow
def test_an_existing_index_is_refused_and_overwrite_keeps_a_backup(base_root, tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, (_, t) in enumerate(_docs(4))))
    out = tmp_path / "index"
    argv = [str(base_root[0] / "data" / "star"), str(docs), str(out), "--max_seg_length", "32"]
    index_cli.main(argv)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "exists and is not empty" in user_error(capsys, index_cli.main, argv)
    index_cli.main([*argv, "--overwrite"])
    (backup,) = tmp_path.glob("index.bak-*")
    assert {p.name: p.read_bytes() for p in backup.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["docs.jsonl", "index", backup.name])


@pytest.mark.slow
def test_another_models_index_is_refused(trained, star, tmp_path):
    _, models = trained
    index = star.index(_docs(3), out=tmp_path / "index", show_progress=False)
    sedr = Retriever.from_pretrained(models["SeDR"])
    with pytest.raises(SeDRInputError, match="built by another model.*model_fingerprint"):
        sedr.load_index(tmp_path / "index")
    with pytest.raises(SeDRInputError, match="seg_length 32 \\(index\\) vs 512"):  # the default shape
        Retriever.from_pretrained(models["STAR_MaxP"], max_seg_num=3).search(index, "alpha")


def test_txt_folder_ids_are_relative_paths_and_bad_bytes_name_the_file(star, tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.txt").write_text("beta gamma")
    (tmp_path / "docs" / "sub" / "a.txt").write_text("alpha delta")
    (tmp_path / "docs" / "notes.md").write_text("not a document")
    index = star.index(tmp_path / "docs", show_progress=False)
    assert index.ids == ["b", "sub/a"] and index.text(1) == "alpha delta"
    (tmp_path / "docs" / "c.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DataFormatError, match=r"c\.txt: bytes that are not UTF-8"):
        star.index(tmp_path / "docs", show_progress=False)


def _python(*args, cwd_path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_index_and_search_commands_list_the_inference_top10(trained):
    root, models = trained
    model = str(models["SeDR"])
    expected = run_file(root / "data" / "evaluate" / "SeDR" / "dev.trec")
    qid = next(iter(expected))
    query = query_texts(root)[qid]
    out = root / "cli-index"
    with cwd(root):
        index_cli.main([model, CORPUS, str(out)])  # in-process; the search below runs as the real command
    printed = _python("-m", "SeDR.search", model, str(out), query, "--k", "10", cwd_path=root)
    rows = [line.split() for line in printed.splitlines()[2:] if line.strip()]
    assert [row[1] for row in rows] == [d for d, _ in expected[qid][:10]]
    assert all(len(row) > 4 for row in rows)  # each hit shows the first words of its best segment


def test_help_and_a_light_package_import(capsys):
    for main in (index_cli.main, search_cli.main):
        with pytest.raises(SystemExit) as exc:
            main(["-h"])
        assert exc.value.code == 0
    assert "MODEL DOCS OUT" in capsys.readouterr().out
    code = (
        "import sys, SeDR, SeDR.cli.flags; heavy = {'torch', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    _python("-c", code, cwd_path=ROOT)
    assert (
        Retriever is sys.modules["SeDR.api.retriever"].Retriever
    )  # `from SeDR import Retriever` (top of this file)


def test_the_tokenizer_is_found_by_every_file_the_record_accepts(tmp_path):
    """One list of tokenizer files: a sentencepiece-only folder (spm.model, spiece.model) counts too."""
    assert {"spm.model", "spiece.model"} <= set(TOKENIZER_FILES)
    for name in TOKENIZER_FILES:
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_text("")
        assert _tokenizer_source(folder, {}) == str(folder)
    assert _tokenizer_source(tmp_path, {}) == "roberta-base"  # no file: preprocessing's default


def _small_index(base_root, tmp_path, *extra) -> tuple[list[str], Path]:
    """``python -m SeDR.index`` of four documents with the STAR folder at (32, 3); its argv and folder."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, (_, t) in enumerate(_docs(4))))
    out = tmp_path / "index"
    argv = [str(base_root[0] / "data" / "star"), str(docs), str(out), "--max_seg_length", "32", *extra]
    return argv, out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_search_refuses_an_empty_query(base_root, tmp_path, capsys):
    argv, out = _small_index(base_root, tmp_path)
    index_cli.main(argv)
    before = _files(tmp_path)
    msg = user_error(capsys, search_cli.main, [argv[0], str(out), "alpha beta", "  "])
    assert msg == (
        "error: QUERY 2 of 2 is empty or only spaces: there is nothing to rank the documents by; "
        "give every query some words"
    )
    assert capsys.readouterr().out == "" and _files(tmp_path) == before


def test_index_refuses_another_tokenizer_and_search_compares_the_index_record(
    base_root, tmp_path, tokenizer, capsys
):
    from SeDR import testing

    other = testing.train_tokenizer(tmp_path / "other", texts=["zulu yankee xray whiskey " * 40] * 20)
    argv, out = _small_index(base_root, tmp_path, "--tokenizer", str(other))
    msg = user_error(capsys, index_cli.main, argv)
    assert msg.startswith(f"error: --tokenizer {other} (") and f"is not the tokenizer of {argv[0]} (" in msg
    assert msg.endswith(
        "its ids would mean other tokens to the model; leave --tokenizer out to use the model's"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "other"]  # nothing written
    index_cli.main(argv[:-2])  # the model's own tokenizer
    meta = json.loads((out / "passages-meta.json").read_text())
    record = meta["info"]["tokenizer_record"]
    assert record["vocab_size"] == len(tokenizer) and record["special_ids"] == {
        "cls_id": 0,
        "eos_id": 2,
        "pad_id": 1,
    }
    # an index whose record names another vocabulary (as one built with another tokenizer would)
    record["vocab_sha256"] = "0" * 64
    (out / "passages-meta.json").write_text(json.dumps(meta, indent=1))
    before = _files(tmp_path)
    msg = user_error(capsys, search_cli.main, [argv[0], str(out), "alpha"])
    assert (
        msg.startswith(f"error: {out} was built with the tokenizer ")
        and "(vocabulary sha256 000000000000)" in msg
    )
    assert msg.endswith(
        "queries would be other ids than the documents; search with the index's tokenizer "
        "(--tokenizer) or rebuild the index"
    )
    assert _files(tmp_path) == before


def test_a_killed_index_build_leaves_nothing_the_next_build_keeps(base_root, tmp_path, caplog):
    import socket

    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout
    )
    argv, out = _small_index(base_root, tmp_path)
    orphan = tmp_path / f".index.tmp-{dead}"  # what `kill -9` during encoding leaves
    orphan.mkdir()
    (orphan / ".passages.memmap.tmp").write_bytes(b"\0" * 4096)
    (tmp_path / ".index.lock").write_text(
        json.dumps({"pid": dead, "host": socket.gethostname(), "started": "then"})
    )
    with caplog.at_level("WARNING"):
        index_cli.main(argv)
    assert any(f"removing {orphan}, left by an interrupted run" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "index"]
    assert (out / "doc-ids.jsonl").read_text().splitlines() == ['"0"', '"1"', '"2"', '"3"']


def test_index_messages_name_the_index_and_its_command(base_root, tmp_path, capsys):
    from SeDR.core.outputs import RunLock

    argv, out = _small_index(base_root, tmp_path)
    with RunLock(tmp_path, "index", output=out):  # another build of the same folder is running
        msg = user_error(capsys, index_cli.main, argv)
    assert msg.startswith(f"error: {out} is being written by process {os.getpid()}")  # not its parent
    index_cli.main(argv)
    emb = out / "passages.memmap"
    emb.write_bytes(emb.read_bytes()[:-4])
    msg = user_error(capsys, search_cli.main, [argv[0], str(out), "alpha"])
    assert msg.startswith(f"error: {emb}: ") and msg.endswith(
        "truncated; rebuild it with `python -m SeDR.index MODEL DOCS OUT --overwrite`"
    )


def test_a_faiss_index_that_refuses_k_above_2048_answers_k_600(base_root, tmp_path, monkeypatch, caplog):
    """A 4-segment index searched through a faiss-gpu stand-in (k <= 2048): the hit count stays within it."""
    import logging

    from test_exact_search import KLimitedGpuFaiss

    from SeDR.retrieval import embedding_files, exact_search

    r4 = Retriever.from_pretrained(
        base_root[0] / "data" / "star", max_seg_length=32, max_seg_num=4, max_query_length=16
    )
    n_docs = 700
    vecs = np.random.default_rng(0).standard_normal((4 * n_docs, r4.model.embedding_dim)).astype(np.float32)
    folder = tmp_path / "index"
    with embedding_files.SegmentEmbeddingWriter(
        folder, vecs.shape[1], info={**r4.identity, "num_docs": n_docs}
    ) as w:
        w.append(vecs, np.repeat(np.arange(n_docs), 4))
    (folder / "doc-ids.jsonl").write_text("".join(json.dumps(f"d{i}") + "\n" for i in range(n_docs)))
    qv = r4.encode_queries(["alpha beta"], show_progress=False)[0]
    best = (vecs @ qv).reshape(n_docs, 4).max(1)
    exact = [f"d{i}" for i in np.argsort(-best, kind="stable")]
    fake = KLimitedGpuFaiss(n_gpus=1)
    monkeypatch.setattr(exact_search, "_faiss", lambda: fake)
    with caplog.at_level(logging.WARNING, logger="SeDR.api.retriever"):
        hits = r4.search(
            r4.load_index(folder),
            ["alpha beta"],
            k=600,
            faiss_gpus=[0],
            search_backend="faiss",
            show_progress=False,
        )[0]
    assert max(fake.gpu_index.asked) == 2048 and len(fake.gpu_index.asked) >= 1
    assert 512 <= len(hits) <= 600 and [h.doc_id for h in hits[:512]] == exact[:512]  # (2048 - 1) // 4 + 1
    assert any("at most 2048" in r.getMessage() for r in caplog.records)
    torch_hits = r4.search(
        r4.load_index(folder), ["alpha beta"], k=600, search_backend="torch", show_progress=False
    )
    assert [h.doc_id for h in torch_hits[0]] == exact[:600]
