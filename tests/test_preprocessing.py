"""The preprocess outputs (docs/data.md#preprocess-outputs), end to end on the synthetic MS MARCO folder,
against a per-line computation with the pure-Python 2.8 reference tokenizer; idempotence,
atomicity and the bad-input policy."""

import errno
import importlib.util
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from SeDR.core.constants import CORPUS_FILE, SPLIT_FILES
from SeDR.core.errors import SeDRInputError
from SeDR.data import preprocess_folder
from SeDR.data import preprocessing as prep
from SeDR.data.tokenization import StarTokenizer
from SeDR.testing.reference_tokenizer import ReferenceRobertaTokenizer

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(max_seq_length=300, max_query_length=12, max_doc_character=2000)


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("sedr_preprocess_script", ROOT / "SeDR_preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ref(tokenizer_dir):
    return ReferenceRobertaTokenizer.from_star(StarTokenizer.from_pretrained(str(tokenizer_dir)))


@pytest.fixture(scope="module")
def small_settings(tokenizer_dir):
    return prep.Settings(str(tokenizer_dir), **SMALL)


@pytest.fixture(scope="module")
def out_one(tmp_path_factory, msmarco, small_settings):
    out = tmp_path_factory.mktemp("prep1") / "preprocess"
    assert prep.preprocess(msmarco.data_dir, out, small_settings, threads=1) is True
    return out


def expected_outputs(data_dir: Path, ref, max_seq_length, max_query_length, max_doc_character):
    """Everything the preprocess folder holds, computed line by line with plain Python and the reference."""
    docs, pid2offset = [], {}
    for i, line in enumerate((data_dir / CORPUS_FILE).read_text(encoding="utf-8").splitlines()):
        did, url, title, body = line.split("\t")
        text = (url.rstrip() + "</s>" + title.rstrip() + "</s>" + body.rstrip())[:max_doc_character]
        docs.append(ref.encode(text, add_special_tokens=False, max_length=max_seq_length))
        pid2offset[int(did[1:])] = i
    splits = {}
    for split, (qfile, rfile) in SPLIT_FILES.items():
        qrel_lines = [ln.split() for ln in (data_dir / rfile).read_text().splitlines()]
        judged = {int(q) for q, *_ in qrel_lines}
        kept = [
            (int(q), t)
            for q, t in (ln.split("\t") for ln in (data_dir / qfile).read_text().splitlines())
            if int(q) in judged
        ]
        qid2offset = {q: i for i, (q, _) in enumerate(kept)}
        splits[split] = dict(
            ids=[ref.encode(t, add_special_tokens=True, max_length=max_query_length) for _, t in kept],
            qid2offset=qid2offset,
            qrel=[f"{qid2offset[int(q)]}\t0\t{pid2offset[int(d[1:])]}\t{r}" for q, _, d, r in qrel_lines],
        )
    return docs, pid2offset, splits


def check_rows(memmap_path, lengths_path, meta_path, expected, width):
    n = len(expected)
    assert json.loads(meta_path.read_text()) == {"type": "int32", "total_number": n, "embedding_size": width}
    assert memmap_path.stat().st_size == n * width * 4
    rows = np.fromfile(memmap_path, dtype=np.int32).reshape(n, width)
    lengths = np.load(lengths_path)
    assert lengths.dtype == np.int32 and lengths.shape == (n,)
    for i, ids in enumerate(expected):
        assert lengths[i] == len(ids) <= width
        assert rows[i, : len(ids)].tolist() == ids
        assert not rows[i, len(ids) :].any()  # padded with 0, not <pad>


def load_pickle(path):
    with open(path, "rb") as f:
        mapping = pickle.load(f)
    assert type(mapping) is dict and all(type(k) is int and type(v) is int for k, v in mapping.items())
    return mapping


def test_every_output_file_matches_a_per_line_computation(out_one, msmarco, ref):
    docs, pid2offset, splits = expected_outputs(msmarco.data_dir, ref, **SMALL)
    assert sorted(p.name for p in out_one.iterdir()) == sorted(prep.output_files() + [prep.PREPROCESS_RECORD])
    # The settings bite: some documents are cut to 300 tokens, some queries to 12 (CLS/EOS kept).
    assert any(len(d) == 300 for d in docs) and any(len(d) < 300 for d in docs)
    assert any(len(q) == 12 for s in splits.values() for q in s["ids"])
    check_rows(
        out_one / "passages.memmap", out_one / "passages_length.npy", out_one / "passages_meta", docs, 300
    )
    assert (
        load_pickle(out_one / "pid2offset.pickle")
        == pid2offset
        == {d: i for i, d in enumerate(msmarco.doc_ids)}
    )
    for split, want in splits.items():
        check_rows(
            out_one / f"{split}-query.memmap",
            out_one / f"{split}-query_length.npy",
            out_one / f"{split}-query_meta",
            want["ids"],
            12,
        )
        assert all(ids[0] == 0 and ids[-1] == 2 for ids in want["ids"])
        assert load_pickle(out_one / f"{split}-qid2offset.pickle") == want["qid2offset"]
        assert (out_one / f"{split}-qrel.tsv").read_text().splitlines() == want["qrel"]
    # Query offsets follow the query file; unjudged TREC queries are dropped; rel 0 lines are kept.
    judged = {q for q, _, _ in msmarco.qrels["test"]}
    order = [q for q, _ in msmarco.queries["test"] if q in judged]
    assert list(load_pickle(out_one / "test-qid2offset.pickle")) == order and len(order) == len(judged)
    assert len(order) < len(msmarco.queries["test"])
    assert (
        sum(line.endswith("\t0") for line in (out_one / "test-qrel.tsv").read_text().splitlines())
        == sum(r == 0 for _, _, r in msmarco.qrels["test"])
        > 0
    )


def test_the_data_layer_reads_the_output(out_one, ref, msmarco):
    docs, _, splits = expected_outputs(msmarco.data_dir, ref, **SMALL)
    cache = preprocess_folder.passages(out_one)
    assert len(cache) == len(docs) and [cache[i].tolist() for i in (0, 7, 39)] == [
        docs[i] for i in (0, 7, 39)
    ]
    assert preprocess_folder.queries(out_one, "dev")[3].tolist() == splits["dev"]["ids"][3]
    rel = preprocess_folder.load_rel(out_one / "test-qrel.tsv")
    # relevant lines only: the test qrels' rel = 0 lines are judged non-relevant, no positives
    assert sum(len(v) for v in rel.values()) == sum(1 for *_, r in msmarco.qrels["test"] if r >= 1)
    assert 0 < sum(1 for *_, r in msmarco.qrels["test"] if r < 1)


def test_two_threads_write_identical_bytes(out_one, tmp_path, msmarco, small_settings):
    out2 = tmp_path / "preprocess"
    assert prep.preprocess(msmarco.data_dir, out2, small_settings, threads=2)
    names = sorted(p.name for p in out_one.iterdir())
    assert names == sorted(p.name for p in out2.iterdir())
    for name in names:
        assert (out_one / name).read_bytes() == (out2 / name).read_bytes(), name
    assert not list(tmp_path.glob("*incomplete*")) and not list(msmarco.data_dir.glob("*split*"))


def test_rerun_on_complete_output_does_nothing(out_one, msmarco, small_settings, caplog):
    before = {p.name: p.stat().st_mtime_ns for p in out_one.iterdir()}
    with caplog.at_level(logging.INFO, logger="SeDR.data.preprocessing"):
        assert prep.preprocess(msmarco.data_dir, out_one, small_settings, threads=1) is False
    assert "already complete" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out_one.iterdir()} == before


def test_folder_of_the_original_is_accepted_and_other_settings_refused(
    out_one, tmp_path, msmarco, small_settings
):
    original = shutil.copytree(out_one, tmp_path / "preprocess")
    (original / prep.PREPROCESS_RECORD).unlink()  # the original writes no settings file
    assert prep.missing_outputs(original) == []
    assert prep.preprocess(msmarco.data_dir, original, small_settings) is False
    other = prep.Settings(small_settings.model_name_or_path, 200, 12, 2000)
    with pytest.raises(SeDRInputError, match="max_seq_length=300 instead of 200"):
        prep.preprocess(msmarco.data_dir, original, other)
    with pytest.raises(SeDRInputError, match="max_doc_character=2000 instead of 999"):
        prep.preprocess(
            msmarco.data_dir, out_one, prep.Settings(small_settings.model_name_or_path, 300, 12, 999)
        )
    (original / "dev-qrel.tsv").unlink()
    assert prep.missing_outputs(original) == ["dev-qrel.tsv"]
    with pytest.raises(SeDRInputError, match="incomplete"):
        prep.preprocess(msmarco.data_dir, original, small_settings)


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, msmarco, small_settings, monkeypatch):
    out = tmp_path / "preprocess"
    stale = tmp_path / "preprocess.incomplete-999999999"  # left by a killed run (no such pid)
    stale.mkdir()
    (stale / "passages.memmap").write_bytes(b"\0" * 8)
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = prep.write_split
    monkeypatch.setattr(prep, "write_split", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        prep.preprocess(msmarco.data_dir, out, small_settings, threads=1)
    assert calls == ["train", "dev"]  # the documents had been written
    assert list(tmp_path.iterdir()) == []  # no output, no temporary or stale folder
    monkeypatch.setattr(prep, "write_split", real)
    assert prep.preprocess(msmarco.data_dir, out, small_settings, threads=1)
    assert prep.missing_outputs(out) == []


def error_lines(capsys) -> list[str]:
    """The ``error:`` lines on stderr (progress bars also write there); never a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


def _corrupt(path, line_no, new_line: bytes):
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = new_line
    path.write_bytes(b"\n".join(lines))


def _line(path, line_no) -> bytes:
    return path.read_bytes().split(b"\n")[line_no - 1]


BAD_INPUTS = {
    "corpus_fields": (CORPUS_FILE, 5, lambda raw: raw.rsplit(b"\t", 1)[0], "expected 4 tab-separated fields"),
    "corpus_doc_id": (CORPUS_FILE, 7, lambda raw: raw[1:], "is not 'D' followed by digits"),
    "corpus_utf8": (CORPUS_FILE, 3, lambda raw: raw[:40] + b"\xff\xfe" + raw[40:], "not UTF-8 at byte 40"),
    "corpus_duplicate": (CORPUS_FILE, 9, None, "already appeared on line 2"),
    "qrels_unknown_doc": (
        "msmarco-docdev-qrels.tsv",
        2,
        lambda raw: raw.replace(b" D", b" D99999999"),
        "is not in the corpus",
    ),
    "qrels_fields": ("2020qrels-docs.txt", 4, lambda raw: raw + b" extra", "expected 4 whitespace-separated"),
    "query_fields": (
        "msmarco-doctrain-queries.tsv",
        6,
        lambda raw: raw.replace(b"\t", b" "),
        "expected 2 tab-separated fields",
    ),
    "qrels_relevance": (
        "2019qrels-docs.txt",
        3,
        lambda raw: raw.rsplit(b" ", 1)[0] + b" high",
        "relevance 'high' is not an integer",
    ),
    "corpus_id_too_long": (
        CORPUS_FILE,
        4,
        lambda raw: b"D" + b"9" * 24 + raw[raw.index(b"\t") :],
        "more digits than a 64-bit id can hold",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_naming_file_and_line(case, tmp_path, msmarco, hf_home, script, capsys):
    data = shutil.copytree(msmarco.data_dir, tmp_path / "data")
    name, line_no, edit, message = BAD_INPUTS[case]
    if edit is None:  # duplicate: line 9 repeats line 2's id
        raw = _line(data / name, 9)
        _corrupt(data / name, 9, _line(data / name, 2).split(b"\t")[0] + raw[raw.index(b"\t") :])
    else:
        _corrupt(data / name, line_no, edit(_line(data / name, line_no)))
    with pytest.raises(SystemExit) as exc:
        script.main(["--data_path", str(data), "--threads", "1", "--max_seq_length", "64"])
    assert exc.value.code == 2
    err = error_lines(capsys)
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {data / name}:{line_no}: ") and message in err[0], err[0]
    assert not (data / "preprocess").exists()


def test_judged_query_missing_from_the_queries_file(tmp_path, msmarco, hf_home, script, capsys):
    data = shutil.copytree(msmarco.data_dir, tmp_path / "data")
    qid = msmarco.qrels["test"][0][0]
    qfile = data / SPLIT_FILES["test"][0]
    qfile.write_text(
        "".join(ln + "\n" for ln in qfile.read_text().splitlines() if not ln.startswith(f"{qid}\t"))
    )
    with pytest.raises(SystemExit):
        script.main(["--data_path", str(data), "--threads", "1"])
    err = error_lines(capsys)
    assert err == [
        f"error: {data / '2019qrels-docs.txt'}:1: query {qid} is judged here but missing from {qfile}"
    ]


def test_missing_input_names_the_download_script(tmp_path, msmarco, hf_home, script, capsys):
    data = shutil.copytree(msmarco.data_dir, tmp_path / "data")
    (data / "2020qrels-docs.txt").unlink()
    with pytest.raises(SystemExit) as exc:
        script.main(["--data_path", str(data)])
    (err,) = error_lines(capsys)
    assert exc.value.code == 2
    assert f"missing input file {data / '2020qrels-docs.txt'}" in err and "bash download_data.sh" in err


def test_empty_body_is_kept_with_a_warning(tmp_path, msmarco, tokenizer_dir, ref, caplog):
    data = shutil.copytree(msmarco.data_dir, tmp_path / "data")
    raw = _line(data / CORPUS_FILE, 4)
    _corrupt(data / CORPUS_FILE, 4, raw[: raw.rindex(b"\t") + 1] + b"  ")
    with caplog.at_level(logging.WARNING):
        prep.preprocess(data, tmp_path / "out", prep.Settings(str(tokenizer_dir), **SMALL))
    assert "1 documents have an empty body (first on line 4)" in caplog.text
    _, url, title, _ = raw.decode().split("\t")
    assert preprocess_folder.passages(tmp_path / "out")[3].tolist() == ref.encode(
        f"{url}</s>{title}</s>", False, 300
    )


def test_empty_training_query_is_kept_with_one_warning_naming_it(
    tmp_path, msmarco, tokenizer_dir, ref, script, caplog
):
    data = shutil.copytree(msmarco.data_dir, tmp_path / "data")
    qfile = data / SPLIT_FILES["train"][0]
    judged = {int(line.split()[0]) for line in (data / SPLIT_FILES["train"][1]).read_text().splitlines()}
    lines = qfile.read_text().splitlines()
    blank = [n for n, ln in enumerate(lines) if int(ln.split("\t")[0]) in judged][1:3]  # two judged queries
    for n, text in zip(blank, ("   ", "")):
        lines[n] = lines[n].split("\t")[0] + "\t" + text
    qfile.write_text("\n".join(lines) + "\n")
    inputs = {p.name: p.read_bytes() for p in data.iterdir()}
    flags = [f"--{k}={v}" for k, v in SMALL.items()]
    with caplog.at_level(logging.WARNING):  # exit status 0: main returns
        script.main(
            [
                "--data_path",
                str(data),
                "--output_dir",
                str(tmp_path / "out"),
                "--threads",
                "1",
                "--model_name_or_path",
                str(tokenizer_dir),
                *flags,
            ]
        )
    assert {p.name: p.read_bytes() for p in data.iterdir()} == inputs
    first_qid = int(lines[blank[0]].split("\t")[0])
    warnings = [r.getMessage() for r in caplog.records if "empty or only spaces" in r.getMessage()]
    assert warnings == [
        f"{qfile}: 2 judged queries are empty or only spaces (first: query {first_qid} on line "
        f"{blank[0] + 1}); they are kept and encoded as an empty text"
    ]
    offsets = load_pickle(tmp_path / "out" / "train-qid2offset.pickle")
    stored = preprocess_folder.queries(tmp_path / "out", "train")
    for n in blank:
        assert stored[offsets[int(lines[n].split("\t")[0])]].tolist() == ref.encode("", True, 12)


def test_a_second_run_into_the_same_folder_is_refused_by_its_lock(tmp_path, msmarco, hf_home, script, capsys):
    from SeDR.core.outputs import RunLock

    data = shutil.copytree(msmarco.data_dir, tmp_path / "data")
    out = data / "preprocess"
    with RunLock(data, "preprocess", output=out):  # what a running SeDR_preprocess.py holds
        with pytest.raises(SystemExit) as exc:
            script.main(["--data_path", str(data), "--threads", "1", "--max_seq_length", "64"])
        assert exc.value.code == 2
        (err,) = error_lines(capsys)
        assert err.startswith(f"error: {out} is being written by process {os.getpid()} on ")
        assert f"(lock {data / '.preprocess.lock'})" in err
        assert sorted(p.name for p in data.iterdir()) == sorted(
            [".preprocess.lock", *(p.name for p in msmarco.data_dir.iterdir())]
        )  # nothing written, nothing half-made
    script.main(["--data_path", str(data), "--threads", "1", "--max_seq_length", "64"])
    assert prep.missing_outputs(out) == [] and not (data / ".preprocess.lock").exists()


def test_readme_command_verbatim(tmp_path, msmarco, hf_home, script, ref, monkeypatch):
    """``python SeDR_preprocess.py --data_path ./data --max_seq_length 2048`` with roberta-base."""
    shutil.copytree(msmarco.data_dir, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    script.main(["--data_path", "./data", "--max_seq_length", "2048"])
    out = tmp_path / "data" / "preprocess"
    docs, _, splits = expected_outputs(tmp_path / "data", ref, 2048, 64, 10000)
    check_rows(out / "passages.memmap", out / "passages_length.npy", out / "passages_meta", docs, 2048)
    check_rows(
        out / "train-query.memmap",
        out / "train-query_length.npy",
        out / "train-query_meta",
        splits["train"]["ids"],
        64,
    )
    assert json.loads((out / prep.PREPROCESS_RECORD).read_text())["model_name_or_path"] == "roberta-base"
    assert sorted(os.listdir(tmp_path / "data")) == sorted(
        [CORPUS_FILE, "preprocess"] + [f for pair in SPLIT_FILES.values() for f in pair]
    )


def test_a_failing_worker_process_stops_the_run(tmp_path, msmarco, tokenizer_dir):
    index = prep.scan_corpus(msmarco.data_dir / CORPUS_FILE)
    index.path = tmp_path / "vanished.tsv"  # the workers cannot open it
    star = StarTokenizer.from_pretrained(str(tokenizer_dir))
    with pytest.raises(RuntimeError, match="tokenizer worker failed: FileNotFoundError"):
        prep.tokenize_corpus(star, index, tmp_path, prep.Settings(str(tokenizer_dir), **SMALL), threads=2)


def test_bert_wordpiece_tokenizer_end_to_end(tmp_path, msmarco):
    """A BERT tokenizer (the demo's kind): fields joined by ``[SEP]``, queries ``[CLS] … [SEP]``; every
    row equals transformers' own encoding of the same text (which treats ``[SEP]`` as special)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import AutoTokenizer

    lines = (msmarco.data_dir / CORPUS_FILE).read_text(encoding="utf-8").splitlines()
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(
        lines,
        vocab_size=400,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False,
    )
    folder = tmp_path / "bert"
    folder.mkdir()
    vocab = sorted(wp.get_vocab().items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("\n".join(tok for tok, _ in vocab) + "\n")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"})
    )
    hf = AutoTokenizer.from_pretrained(str(folder))
    sep, cls = hf.sep_token_id, hf.cls_token_id

    out = tmp_path / "preprocess"
    assert prep.preprocess(msmarco.data_dir, out, prep.Settings(str(folder), **SMALL), threads=2) is True
    docs = []
    for line in lines:
        _, url, title, body = line.split("\t")
        text = (url.rstrip() + "[SEP]" + title.rstrip() + "[SEP]" + body.rstrip())[
            : SMALL["max_doc_character"]
        ]
        docs.append(hf.encode(text, add_special_tokens=False)[: SMALL["max_seq_length"]])
    assert all(d.count(sep) == 2 and cls not in d for d in docs)
    check_rows(
        out / "passages.memmap",
        out / "passages_length.npy",
        out / "passages_meta",
        docs,
        SMALL["max_seq_length"],
    )
    qid2offset = load_pickle(out / "dev-qid2offset.pickle")
    texts = dict(msmarco.queries["dev"])
    want = [hf.encode(texts[q], truncation=True, max_length=SMALL["max_query_length"]) for q in qid2offset]
    assert all(w[0] == cls and w[-1] == sep for w in want)
    check_rows(
        out / "dev-query.memmap",
        out / "dev-query_length.npy",
        out / "dev-query_meta",
        want,
        SMALL["max_query_length"],
    )


def test_changed_raw_input_after_a_complete_run_is_refused(out_one, tmp_path, msmarco, small_settings):
    data = shutil.copytree(msmarco.data_dir, tmp_path / "data")
    out = shutil.copytree(out_one, tmp_path / "preprocess")
    record = json.loads((out / prep.PREPROCESS_RECORD).read_text())
    for name in record["inputs"]:  # the copies carry the same sizes and times
        os.utime(data / name, ns=(record["inputs"][name][1], record["inputs"][name][1]))
    assert prep.preprocess(data, out, small_settings) is False
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    qrels = data / "msmarco-docdev-qrels.tsv"
    qrels.write_text(qrels.read_text() + qrels.read_text().splitlines()[0] + "\n")
    with pytest.raises(
        SeDRInputError, match="made from other versions of its raw inputs: msmarco-docdev-qrels.tsv"
    ):
        prep.preprocess(data, out, small_settings)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_full_disk_stops_before_tokenising_and_leaves_nothing(
    tmp_path, msmarco, hf_home, script, capsys, monkeypatch
):
    def no_space(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(SystemExit) as exc:
        script.main(
            ["--data_path", str(msmarco.data_dir), "--threads", "1", "--output_dir", str(tmp_path / "pre")]
        )
    (err,) = error_lines(capsys)
    assert (
        exc.value.code == 2
        and "no space left on the device while writing" in err
        and "passages.memmap" in err
    )
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# A collection described by files (docs/own-collection.md#preprocess)
# --------------------------------------------------------------------------------------------


def msmarco_as_jsonl(data_dir: Path, path: Path) -> Path:
    """The synthetic corpus as a BEIR-style corpus.jsonl carrying url, title and text, ids kept (``D…``)."""
    with open(path, "w", encoding="utf-8") as f:
        for line in (data_dir / CORPUS_FILE).read_text(encoding="utf-8").splitlines():
            did, url, title, body = line.split("\t")
            f.write(json.dumps({"_id": did, "title": title, "text": body, "url": url}) + "\n")
    return path


def msmarco_splits(data_dir: Path) -> tuple:
    return tuple(prep.SplitSource(s, data_dir / q, data_dir / r) for s, (q, r) in SPLIT_FILES.items())


def assert_same_folder_but_string_ids(msmarco_out: Path, collection_out: Path) -> None:
    """Equal bytes everywhere, except the id maps (``D<n>`` / qid strings instead of ints) and the record."""
    names = sorted(p.name for p in msmarco_out.iterdir())
    assert names == sorted(p.name for p in collection_out.iterdir())
    for name in names:
        if name.endswith(".pickle"):
            ints = load_pickle(msmarco_out / name)
            strings = pickle.loads((collection_out / name).read_bytes())
            prefix = "D" if name == "pid2offset.pickle" else ""
            assert strings == {f"{prefix}{k}": v for k, v in ints.items()}, name
        elif name != prep.PREPROCESS_RECORD:
            assert (msmarco_out / name).read_bytes() == (collection_out / name).read_bytes(), name


def test_collection_files_give_the_msmarco_routes_bytes(out_one, tmp_path, msmarco, small_settings):
    """The synthetic MS MARCO data as corpus.jsonl + its own query/qrels files, 2 threads: the same rows,
    lengths and offset qrels as the MS MARCO route (1 thread), the ids kept as strings."""
    source = prep.CollectionSource(
        msmarco_as_jsonl(msmarco.data_dir, tmp_path / "c.jsonl"), msmarco_splits(msmarco.data_dir)
    )
    out = tmp_path / "pre"
    assert prep.preprocess_collection(source, out, small_settings, threads=2) is True
    assert_same_folder_but_string_ids(out_one, out)
    record = json.loads((out / prep.PREPROCESS_RECORD).read_text())
    assert record["splits"] == list(SPLIT_FILES) and preprocess_folder.recorded_splits(out) == list(
        SPLIT_FILES
    )
    assert record["collection"]["corpus"] == str((tmp_path / "c.jsonl").resolve())
    assert preprocess_folder.recorded_splits(out_one) is None  # an MS MARCO folder records no split names


def test_collection_rerun_is_a_no_op_and_other_inputs_are_refused(tmp_path, msmarco, small_settings, caplog):
    data = msmarco.data_dir
    corpus = msmarco_as_jsonl(data, tmp_path / "c.jsonl")
    source = prep.CollectionSource(corpus, msmarco_splits(data)[2:3])  # the test split alone
    out = tmp_path / "pre"
    assert prep.preprocess_collection(source, out, small_settings) is True
    assert sorted(p.name for p in out.iterdir()) == sorted(
        prep.output_files(["test"]) + [prep.PREPROCESS_RECORD]
    )
    with caplog.at_level(logging.INFO, logger="SeDR.data.preprocessing"):
        assert prep.preprocess_collection(source, out, small_settings) is False
    assert "already complete" in caplog.text
    renamed = prep.CollectionSource(
        corpus, (prep.SplitSource("eval", source.splits[0].queries, source.splits[0].qrels),)
    )
    with pytest.raises(SeDRInputError, match="was made from .* not from"):
        prep.preprocess_collection(renamed, out, small_settings)
    with pytest.raises(SeDRInputError, match="not from the MS MARCO files"):
        prep.preprocess(data, out, small_settings)
    os.utime(corpus, ns=(1, 1))
    with pytest.raises(SeDRInputError, match="other versions of its raw inputs"):
        prep.preprocess_collection(source, out, small_settings)


def test_txt_folder_corpus_rows_are_the_tokenizers_ids(tmp_path, tokenizer_dir, small_settings):
    star = StarTokenizer.from_pretrained(str(tokenizer_dir))
    texts = {"b/two": "Second document, in a sub-folder. " * 30, "a": "First!", "c#3": "Ünïcode döc"}
    for name, text in texts.items():
        (tmp_path / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "docs" / f"{name}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "q.tsv").write_text("q1\tfirst\n")
    (tmp_path / "r.txt").write_text("q1 0 a 1\n")
    out = tmp_path / "pre"
    source = prep.CollectionSource(
        tmp_path / "docs", (prep.SplitSource("s", tmp_path / "q.tsv", tmp_path / "r.txt"),)
    )
    prep.preprocess_collection(source, out, small_settings, threads=2)
    cache = preprocess_folder.passages(out)
    order = ["a", "b/two", "c#3"]  # sorted paths
    want = star.encode_documents([texts[k] for k in order], SMALL["max_seq_length"])
    assert [cache[i].tolist() for i in range(3)] == want
    assert pickle.loads((out / "pid2offset.pickle").read_bytes()) == {k: i for i, k in enumerate(order)}


def test_parse_split_and_split_names(tmp_path):
    s = prep.parse_split("test=beir/queries.jsonl")
    assert (s.name, s.queries, s.qrels) == ("test", Path("beir/queries.jsonl"), Path("beir/qrels/test.tsv"))
    s = prep.parse_split("dev=q.tsv:r/dev.txt")
    assert (s.queries, s.qrels) == (Path("q.tsv"), Path("r/dev.txt"))
    odd = tmp_path / "a:b.jsonl"
    odd.touch()
    assert prep.parse_split(f"x={odd}").queries == odd  # an existing path keeps its colon
    for bad in ("noequals", "=q.jsonl", "a b=q.jsonl", "../x=q.jsonl", "x="):
        with pytest.raises(SeDRInputError):
            prep.parse_split(bad)
    q = tmp_path / "q.tsv"
    q.write_text("q\tx\n")
    with pytest.raises(SeDRInputError, match="given twice: a"):
        prep.preprocess_collection(
            prep.CollectionSource(q, (prep.parse_split(f"a={q}"), prep.parse_split(f"a={q}"))), tmp_path / "o"
        )


def test_ir_datasets_source_gives_the_msmarco_routes_bytes(out_one, tmp_path, msmarco, small_settings):
    """A dataset registered from the synthetic MS MARCO files (offline), read through ir_datasets."""
    ir_datasets = pytest.importorskip("ir_datasets", reason="ir_datasets is optional and not installed")
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.datasets.msmarco_document import MsMarcoDocument
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    from SeDR.data.ir_datasets_files import IrDatasetsSource

    data, name = msmarco.data_dir, f"sedr-test-{os.getpid()}-{tmp_path.name}"
    ir_datasets.registry.register(
        name, Dataset(TsvDocs(LocalDownload(data / CORPUS_FILE), doc_cls=MsMarcoDocument))
    )
    for split, (qfile, rfile) in SPLIT_FILES.items():
        ir_datasets.registry.register(
            f"{name}/{split}",
            Dataset(TsvQueries(LocalDownload(data / qfile)), TrecQrels(LocalDownload(data / rfile), {})),
        )
    source = IrDatasetsSource.from_specs([name] + [f"{name}/{s}" for s in SPLIT_FILES])
    assert [s.name for s in source.splits] == list(SPLIT_FILES)
    out = tmp_path / "pre"
    assert prep.preprocess_collection(source, out, small_settings, threads=2) is True
    assert_same_folder_but_string_ids(out_one, out)
    assert (
        json.loads((out / prep.PREPROCESS_RECORD).read_text())["collection"]["ir_datasets"]["corpus"] == name
    )
    assert prep.preprocess_collection(source, out, small_settings) is False
    with pytest.raises(SeDRInputError, match="no such dataset id"):
        IrDatasetsSource.from_specs([f"{name}-nothere"])


def test_ir_datasets_absent_is_one_clear_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ir_datasets(module, *args, **kwargs):
        if module == "ir_datasets":
            raise ImportError("No module named 'ir_datasets'")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ir_datasets)
    from SeDR.data.ir_datasets_files import IrDatasetsSource

    with pytest.raises(SeDRInputError, match="ir_datasets is not installed .* pip install ir_datasets"):
        IrDatasetsSource.from_specs(["msmarco-document/trec-dl-2019"])
