"""The README pipeline started from a folder of another family (docs/backbones.md, worked example):
``SeDR_preprocess.py --model_name_or_path FOLDER``, hard negatives with STAR_MaxP on the plain
encoder, ``train.py`` SeDR, ``inference.py`` SeDR, run from the working directory as the README does.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cwd, run_preprocess

from SeDR import inference, testing, train
from SeDR.cli import flags
from SeDR.data.tokenizer_record import read_record
from SeDR.testing import families

SMALL = ["--max_query_length", "16", "--max_seg_length", "64", "--max_bsize", "6"]


def readme_pipeline(root, folder, prep="./data/preprocess", hardneg="./data/hard_negative.json"):
    """The four README steps on ``folder``; returns the hard-negative run's output folder."""
    run_preprocess(
        [
            "--data_path",
            "./data",
            "--max_seq_length",
            "256",
            "--model_name_or_path",
            str(folder),
            "--output_dir",
            prep,
            "--threads",
            "1",
        ]
    )
    out = root / "data" / "evaluate" / f"{folder.name}-{prep.split('/')[-1]}"
    inference.main(
        [
            "--model_class",
            "STAR_MaxP",
            *SMALL,
            "--max_seg_num",
            "1",
            "--model_path",
            str(folder),
            "--faiss_gpus",
            "0",
            "--gen_hardneg",
            "--preprocess_dir",
            prep,
            "--hardneg_path",
            hardneg,
            "--output_dir",
            str(out),
        ]
    )
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbone-pipeline")
    testing.make_msmarco_data(root / "data", n_docs=20, n_train=12, n_dev=6, n_test=4, max_words=300, seed=5)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "modernbert", "deberta-v2"])
def test_sedr_from_a_family_folder(data_root, tmp_path, family):
    root = tmp_path / "root"
    shutil.copytree(data_root, root)
    folder = families.make_backbone_folder(root / "data" / family, family)
    with cwd(root):
        readme_pipeline(root, folder)
        record = read_record(root / "data" / "preprocess")
        assert record["roberta_emulation"] is False and record["lower_case"] is (family == "bert")
        saved = train.main(
            [
                "--model_class",
                "SeDR",
                *SMALL,
                "--max_seg_num",
                "4",
                "--preprocess_dir",
                "./data/preprocess",
                "--hardneg_path",
                "./data/hard_negative.json",
                "--init_path",
                str(folder),
                "--output_dir",
                "./data/models",
                "--logging_dir",
                "./data/log",
                "--num_train_epochs",
                "1",
            ]
        )
        cfg = json.loads((saved[-1] / "config.json").read_text())
        assert cfg["model_type"] == family and cfg["sedr_tokenizer"]["vocab_sha256"] == record["vocab_sha256"]
        inference.main(
            [
                "--model_class",
                "SeDR",
                *SMALL,
                "--max_seg_num",
                "4",
                "--model_path",
                str(saved[-1]),
                "--faiss_gpus",
                "0",
            ]
        )
    metrics = json.loads(
        (root / "data" / "evaluate" / f"{saved[-1].name}-inf64-4" / "metrics.json").read_text()
    )
    assert 0 < metrics["scores"]["dev_MRR@100"] <= 1 and not math.isnan(metrics["scores"]["test_nDCG@10"])


def test_bert_folder_without_vocab_txt_ranks_as_with_one(data_root, tmp_path):
    """transformers 5 saves a BERT tokenizer as tokenizer.json only; the same model and vocabulary as a
    vocab.txt folder give the same ids, the same special ids and exactly the same rankings."""
    root = tmp_path / "root"
    shutil.copytree(data_root, root)
    new = families.make_backbone_folder(root / "data" / "bert-new", "bert")
    assert not (new / "vocab.txt").exists()
    old = root / "data" / "bert-old"
    old.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(new / name, old / name)
    vocab = json.loads((new / "tokenizer.json").read_text())["model"]["vocab"]
    (old / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")
    (old / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    with cwd(root):
        runs = [
            readme_pipeline(root, f, f"./data/preprocess-{f.name}", f"./data/hard-{f.name}.json")
            for f in (new, old)
        ]
    prep_new, prep_old = root / "data" / "preprocess-bert-new", root / "data" / "preprocess-bert-old"
    for name in ("passages.memmap", "dev-query.memmap", "train-query.memmap"):
        assert np.array_equal(np.fromfile(prep_new / name, np.int32), np.fromfile(prep_old / name, np.int32))
    assert read_record(prep_new)["special_ids"] == {"cls_id": 2, "eos_id": 3, "pad_id": 0}
    for name in ("dev.trec", "test.trec"):  # qid Q0 doc rank score, the run tag (folder name) aside
        new_run, old_run = ([line.split()[:5] for line in (r / name).read_text().splitlines()] for r in runs)
        assert new_run == old_run and len(new_run) > 20
    assert (root / "data" / "hard-bert-new.json").read_text() == (
        root / "data" / "hard-bert-old.json"
    ).read_text()


def test_documented_commands_parse():
    """The commands of docs/backbones.md parse with the real parsers."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "backbones.md").read_text()
    parsers = {"SeDR/train.py": flags.build_train_parser, "SeDR/inference.py": flags.build_inference_parser}
    seen = {name: 0 for name in (*parsers, "SeDR_preprocess.py")}
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for words in map(shlex.split, block.splitlines()):
            if words[:1] == ["python"] and words[1] in seen:
                seen[words[1]] += 1
                if words[1] in parsers:
                    ns = parsers[words[1]]().parse_args(words[2:])
                    assert ns.preprocess_dir != "./data/preprocess"  # never the RoBERTa folder
    assert seen == {"SeDR/train.py": 1, "SeDR/inference.py": 2, "SeDR_preprocess.py": 1}
