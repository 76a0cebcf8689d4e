"""Your own collection end to end (docs/own-collection.md): the man pages in the BEIR layout against the
same pages in MS MARCO's files, string ids in run files, and the docs page's commands.

Scripts resolve ``./...`` against the working directory, so each route runs inside its own folder.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, cwd, run_preprocess, user_error

from SeDR import inference as inference_script
from SeDR import train as train_script
from SeDR.cli import evaluate as evaluate_command
from SeDR.demo import collection as mc

SEGMENTS = ["--max_query_length", "16", "--max_seg_length", "64", "--max_seg_num", "2"]
# A small cut of the man pages: every split present, SEE ALSO labels on the TREC-style splits.
CUT = {"train": 10, "dev": 5, "test": 4, "2020test": 4}
CLASSES = ("SeDR", "STAR_MaxP")


def _train_argv(model_class: str) -> list[str]:
    return [
        "--model_class",
        model_class,
        *SEGMENTS,
        "--max_bsize",
        "6",
        "--preprocess_dir",
        "./preprocess",
        "--hardneg_path",
        "./hard_negative.json",
        "--init_path",
        "./star",
        "--output_dir",
        "./models",
        "--logging_dir",
        "./log",
        "--num_train_epochs",
        "1",
        "--hardneg_topk",
        "5",
        "--cache_size",
        "4",
        "--seed",
        "7",
    ]


def _run_route(root: Path, preprocess_argv: list[str]) -> None:
    """Preprocess, hard negatives (untrained STAR_MaxP), train SeDR and STAR_MaxP, evaluate both."""
    with cwd(root):
        run_preprocess(preprocess_argv)
        inference_script.main(
            ["--model_class", "STAR_MaxP", *SEGMENTS[:4], "--max_seg_num", "1", "--model_path", "./star"]
            + ["--preprocess_dir", "./preprocess", "--gen_hardneg", "--hardneg_path", "./hard_negative.json"]
            + ["--output_dir", "./evaluate/hardneg"]
        )
        for model_class in CLASSES:
            train_script.main(_train_argv(model_class))
            inference_script.main(
                [
                    "--model_class",
                    model_class,
                    *SEGMENTS,
                    "--model_path",
                    f"./models/epoch-1-64-2-6-{model_class}",
                ]
                + ["--preprocess_dir", "./preprocess", "--output_dir", f"./evaluate/{model_class}"]
            )


@pytest.fixture(scope="module")
def two_routes(tmp_path_factory, star_dir, tokenizer_dir):
    """The same man-page cut written as MS MARCO files and in the BEIR layout, each run through the
    README's steps with the same seed."""
    base = tmp_path_factory.mktemp("own-collection")
    collection = mc.select_collection(mc.load_snapshot(), None, CUT, mc.DEFAULT_SEED)
    ms, beir = base / "msmarco", base / "beir"
    for root in (ms, beir):
        shutil.copytree(star_dir, root / "star")
    mc.write_msmarco_files(collection, ms / "data")
    mc.write_beir_files(collection, beir / "files")
    common = ["--model_name_or_path", str(tokenizer_dir), "--max_seq_length", "512", "--threads", "1"]
    _run_route(ms, ["--data_path", "./data", "--output_dir", "./preprocess", *common])
    _run_route(
        beir,
        ["--corpus", "./files/corpus.jsonl", "--output_dir", "./preprocess", *common]
        + [f"--split={s}=./files/queries.jsonl" for s in CUT],
    )
    return collection, ms, beir


@pytest.mark.slow
@pytest.mark.parametrize("model_class", CLASSES)
def test_beir_layout_gives_the_msmarco_routes_metrics_and_runs(two_routes, model_class):
    collection, ms, beir = two_routes
    doc_ids, query_ids = mc.beir_id_maps(collection)
    a = json.loads((ms / "evaluate" / model_class / "metrics.json").read_text())
    b = json.loads((beir / "evaluate" / model_class / "metrics.json").read_text())
    assert list(a["splits"]) == list(b["splits"]) == ["dev", "test", "2020test"]
    for split in a["splits"]:
        assert b["splits"][split] == pytest.approx(a["splits"][split], abs=1e-9, rel=0)
        assert a["splits"][split]["num_judged_queries"] == CUT[split]
        # the run files hold the same ranking, each in its own ids
        mapped = []
        for line in (ms / "evaluate" / model_class / f"{split}.trec").read_text().splitlines():
            qid, q0, docid, *rest = line.split()
            mapped.append(" ".join([query_ids[qid], q0, doc_ids[docid], *rest[:2]]))
        theirs = [
            " ".join(line.split()[:5])
            for line in (beir / "evaluate" / model_class / f"{split}.trec").read_text().splitlines()
        ]
        assert theirs == mapped and len(mapped) > 0
    assert a["scores"]["dev_MRR@100"] > 0  # a real ranking, not an empty one on both sides
    # same hard negatives and same trained weights: the routes differ in ids only
    assert (ms / "hard_negative.json").read_bytes() == (beir / "hard_negative.json").read_bytes()
    name = f"models/epoch-1-64-2-6-{model_class}/model.safetensors"
    assert (ms / name).read_bytes() == (beir / name).read_bytes()
    assert "train_split" not in json.loads((beir / name).with_name("training_args.json").read_text())


@pytest.mark.slow
def test_evaluate_command_equals_inference_on_both_routes(two_routes, capsys):
    _, ms, beir = two_routes
    for root, qrels in (
        (ms, {"dev": "data/msmarco-docdev-qrels.tsv", "test": "data/2019qrels-docs.txt"}),
        (beir, {"dev": "files/qrels/dev.tsv", "test": "files/qrels/test.tsv"}),
    ):
        folder = root / "evaluate" / "SeDR"
        stored = json.loads((folder / "metrics.json").read_text())
        for split, qrels_file in qrels.items():
            got = evaluate_command.main([str(folder / f"{split}.trec"), str(root / qrels_file)])
            assert got["splits"][split] == stored["splits"][split]  # exactly, not approximately
            assert json.loads((folder / f"{split}.trec.metrics.json").read_text())["splits"] == got["splits"]


# --------------------------------------------------------------------------------------------
# String ids: kept exactly, whitespace refused
# --------------------------------------------------------------------------------------------

ODD_IDS = ["a/b/1", "doc#2", "ünïcødé-3", "日本語/4", "plain5"]


def _odd_collection(folder: Path, doc_ids=ODD_IDS) -> Path:
    (folder / "qrels").mkdir(parents=True)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d, w in zip(doc_ids, words):
            f.write(
                json.dumps({"_id": d, "title": w.title(), "text": f"{w} " * 80}, ensure_ascii=False) + "\n"
            )
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for i, w in enumerate(words):
            f.write(json.dumps({"_id": f"q#{i}/ü", "text": f"what is {w}"}, ensure_ascii=False) + "\n")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q#{i}/ü\t{d}\t1\n" for i, d in enumerate(doc_ids)),
        encoding="utf-8",
    )
    return folder


@pytest.mark.slow
def test_ids_with_slash_hash_unicode_reach_the_run_files_exactly(
    tmp_path, star_dir, tokenizer_dir, capsys, caplog
):
    """A collection with odd ids and a training split that is not called train: hard negatives, training
    and evaluation of the other split, the ids exactly as written in the run files."""
    files = _odd_collection(tmp_path / "files")
    # queries 0-2 judged relevant, query 3 judged non-relevant only: no positive, not trained on
    (files / "qrels" / "learn.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"q#{i}/ü\t{d}\t1\n" for i, d in enumerate(ODD_IDS[:3]))
        + f"q#3/ü\t{ODD_IDS[0]}\t0\n",
        encoding="utf-8",
    )
    shutil.copytree(star_dir, tmp_path / "star")
    with cwd(tmp_path):
        run_preprocess(
            ["--corpus", "files/corpus.jsonl", "--split", "learn=files/queries.jsonl", "--output_dir", "pre"]
            + ["--split", "test=files/queries.jsonl", "--model_name_or_path", str(tokenizer_dir)]
            + ["--max_seq_length", "256", "--threads", "1"]
        )
        inference_script.main(
            ["--model_class", "STAR_MaxP", *SEGMENTS, "--model_path", "star", "--preprocess_dir", "pre"]
            + ["--output_dir", "out", "--gen_hardneg", "--hardneg_path", "hn.json", "--train_split", "learn"]
        )
        argv = _train_argv("STAR_MaxP")
        argv[argv.index("./preprocess")] = "pre"
        argv[argv.index("./hard_negative.json")] = "hn.json"
        with caplog.at_level(logging.INFO):
            (saved,) = train_script.main(argv + ["--train_split", "learn"])
    lines = (tmp_path / "out" / "test.trec").read_text(encoding="utf-8").splitlines()
    assert {line.split()[2] for line in lines} == set(ODD_IDS)
    assert {line.split()[0] for line in lines} == {f"q#{i}/ü" for i in range(5)}
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(metrics["splits"]) == ["test"] and metrics["splits"]["test"]["num_judged_queries"] == 5
    assert "| test | 5 |" in capsys.readouterr().out  # a collection's split under its own name
    assert sorted(json.loads((tmp_path / "hn.json").read_text())) == ["0", "1", "2", "3"]
    assert json.loads((tmp_path / saved / "training_args.json").read_text())["train_split"] == "learn"
    assert "1 of the 4 learn queries have no relevant document" in caplog.text  # query 3
    assert "queries 3 | documents 5" in caplog.text


def test_an_id_with_a_space_is_refused_with_its_file_and_line(tmp_path, capsys, tokenizer_dir):
    _odd_collection(tmp_path / "files", ["a/b/1", "doc 2", "c3", "d4", "e5"])
    line = user_error(
        capsys,
        run_preprocess,
        ["--corpus", str(tmp_path / "files/corpus.jsonl"), "--split", f"test={tmp_path}/files/queries.jsonl"]
        + ["--output_dir", str(tmp_path / "pre"), "--model_name_or_path", str(tokenizer_dir)],
    )
    assert f"{tmp_path}/files/corpus.jsonl:2:" in line and "'doc 2'" in line and "whitespace" in line
    assert not (tmp_path / "pre").exists()


# --------------------------------------------------------------------------------------------
# The docs page's commands, shortened
# --------------------------------------------------------------------------------------------

PAGE = ROOT / "docs" / "own-collection.md"
# The worked example on a few pages with the tiny test model instead of MiniLM: seconds, not minutes.
SHORTER = {
    "--train_queries 64": "--docs_per_split train=8,dev=4,test=3,2020test=3",
    "--max_seg_length 128": "--max_seg_length 64",
    "--num_train_epochs 2": "--num_train_epochs 1",
    "epoch-2-128-2-16-": "epoch-1-64-2-16-",
}


def page_commands() -> list[str]:
    """The ``python ...`` command lines of the page's worked example (continuation lines joined)."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split('<a id="worked-example"></a>', 1)[1].split("<a id=", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


@pytest.mark.slow
def test_the_pages_worked_example_runs_as_written_shortened(tmp_path, star_dir, capsys):
    lines = page_commands()
    assert (
        lines[1]
        == 'MODEL=$(python -c "from SeDR.demo.run import minilm_model_dir; print(minilm_model_dir())")'
    )
    mains = {
        ("-m", "SeDR.demo.collection"): mc.main,
        ("SeDR_preprocess.py",): run_preprocess,
        ("SeDR/inference.py",): inference_script.main,
        ("SeDR/train.py",): train_script.main,
        ("-m", "SeDR.evaluate"): evaluate_command.main,
    }
    ran = []
    with cwd(tmp_path):
        for line in lines[:1] + lines[2:]:
            for long, short in SHORTER.items():
                line = line.replace(long, short)
            words = shlex.split(line.replace('"$MODEL"', str(star_dir)))
            assert words[0] == "python", line
            key = tuple(words[1:3]) if words[1] == "-m" else (words[1],)
            mains[key](words[1 + len(key) :])
            ran.append(key)
    assert ran == list(mains)[:3] + [("SeDR/train.py",), ("SeDR/inference.py",), ("-m", "SeDR.evaluate")]
    out = capsys.readouterr().out
    assert "| test | 3 |" in out and "| split | queries | nDCG@10 | R@100 | MRR@10 |" in out
    stored = json.loads((tmp_path / "man/evaluate/SeDR/metrics.json").read_text())["splits"]["test"]
    again = json.loads((tmp_path / "man/evaluate/SeDR/test.trec.metrics.json").read_text())["splits"]["test"]
    assert again == stored and list(stored)[:3] == ["nDCG@10", "R@100", "MRR@10"]
    first = (tmp_path / "man/evaluate/SeDR/test.trec").read_text().split()
    assert first[0].startswith("q:") and first[2].startswith("man:")


# --------------------------------------------------------------------------------------------
# Flags: the training split, the evaluated splits and their measures
# --------------------------------------------------------------------------------------------


def test_train_split_stays_out_of_the_training_record_unless_given():
    """training_args.json is vars(args): the README's runs must record what they recorded before."""
    from SeDR.cli import flags

    argv = _train_argv("SeDR")
    assert "train_split" not in vars(flags.build_train_parser().parse_args(argv))
    assert flags.train_split(flags.build_train_parser().parse_args(argv)) == "train"
    ns = flags.build_train_parser().parse_args(argv + ["--train_split", "mine"])
    assert vars(ns)["train_split"] == "mine" == flags.train_split(ns)
    with pytest.raises(SystemExit):
        flags.build_train_parser().parse_args(argv + ["--train_split", "../x"])


def _plan(folder, *extra):
    from SeDR.cli import flags
    from SeDR.cli.inference import evaluation_plan

    args = flags.build_inference_parser().parse_args(["--model_path", "m", *extra])
    return evaluation_plan(folder, args)


def test_evaluation_plan_defaults_and_choices(tmp_path, caplog):
    from SeDR.core.errors import SeDRInputError
    from SeDR.retrieval.evaluation import default_measures

    collection = tmp_path / "collection"
    collection.mkdir()
    (collection / "preprocess_args.json").write_text(json.dumps({"splits": ["train", "valid", "test"]}))
    plan = _plan(collection)
    assert list(plan.measures) == ["valid", "test"] and plan.labels == {} and not plan.judged_only
    assert plan.measures["valid"].keys() == default_measures("valid").keys()
    assert list(_plan(collection, "--train_split", "valid").measures) == ["train", "test"]
    plan = _plan(collection, "--eval_splits", "test,train", "--metrics", "MRR@10,nDCG@5", "--judged_only")
    assert list(plan.measures) == ["test", "train"] and list(plan.measures["train"]) == ["MRR@10", "nDCG@5"]
    assert plan.judged_only
    with pytest.raises(
        SeDRInputError, match=r"--eval_splits: dev not in .* \(its splits: train, valid, test\)"
    ):
        _plan(collection, "--eval_splits", "dev")
    with pytest.raises(SeDRInputError, match="--metrics"):
        _plan(collection, "--metrics", "nonsense@")
    msmarco = (
        tmp_path / "msmarco"
    )  # an MS MARCO folder: today's splits, labels, and a warning per missing one
    msmarco.mkdir()
    for split in ("train", "dev", "test"):
        (msmarco / f"{split}-query_meta").write_text("{}")
    plan = _plan(msmarco)
    assert list(plan.measures) == ["dev", "test"] and plan.labels["test"] == "TREC-DL 2019"
    assert "no 2020test queries" in caplog.text
