"""The tokenizer record: what preprocessing writes, how casing follows the tokenizer, and the scripts'
refusal of a preprocess folder made with another tokenizer than the model's."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import pytest

from SeDR import adore_train, inference, testing, train
from SeDR.core.constants import PREPROCESS_RECORD
from SeDR.core.errors import SeDRInputError
from SeDR.data.tokenization import StarTokenizer
from SeDR.data.tokenizer_record import (
    RECORD_FILE,
    RECORD_KEY,
    check_tokenizer_record,
    load_tokenizer,
    read_record,
)
from SeDR.modeling import build_model, save_pretrained
from SeDR.testing import families

BIG = 10**6


@pytest.fixture(scope="module")
def family_tokenizers():
    return {f: families.train_family_tokenizer(f) for f in ("bert", "xlm-roberta", "modernbert")}


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return families.make_backbone_folder(tmp_path_factory.mktemp("bert") / "bert", "bert")


def test_preprocessing_writes_the_record(base_root, tokenizer):
    root, _ = base_root
    assert RECORD_FILE == PREPROCESS_RECORD  # the record sits in preprocessing's settings file
    record = json.loads((root / "data" / "preprocess" / RECORD_FILE).read_text())[RECORD_KEY]
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode("utf-8")
    assert record == {
        "name_or_path": "roberta-base",
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "vocab_sha256": hashlib.sha256(vocab).hexdigest(),
        "special_ids": {"cls_id": 0, "eos_id": 2, "pad_id": 1},
        "lower_case": True,
        "roberta_emulation": True,
    }


@pytest.mark.parametrize("family,lower", [("bert", True), ("xlm-roberta", False), ("modernbert", False)])
def test_casing_follows_the_tokenizer_outside_the_roberta_emulation(family_tokenizers, family, lower):
    """Only the roberta-base emulation lower-cases and adds the query space; others encode as they do."""
    tok = family_tokenizers[family]
    star = StarTokenizer.from_tokenizer(tok)
    assert (star.roberta_emulation, star.lower_cases) == (False, lower)
    text = "Kalo Mine ruta"
    assert (star.encode_documents([text], BIG) == star.encode_documents([text.lower()], BIG)) is lower
    assert star.encode_documents([text], BIG)[0] == tok.encode(text, add_special_tokens=False)
    assert star.encode_queries([text], 64)[0] == [
        tok.cls_token_id,
        *tok.encode(text, add_special_tokens=False),
        tok.sep_token_id,
    ]


def test_roberta_emulation_is_recognised(tokenizer_dir):
    star, record = load_tokenizer(str(tokenizer_dir))
    assert star.roberta_emulation and record["lower_case"] and record["roberta_emulation"]


def _one_line_exit(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_scripts_refuse_a_folder_made_with_another_tokenizer(root, bert_folder, capsys):
    """The fixture's preprocess folder holds roberta-base ids; a BERT model must not read them."""
    common = ["--max_query_length", "16", "--max_seg_length", "64", "--max_seg_num", "4"]
    argv = [
        "--model_class",
        "SeDR",
        *common,
        "--preprocess_dir",
        "./data/preprocess",
        "--hardneg_path",
        "./data/hard_negative.json",
        "--init_path",
        str(bert_folder),
        "--output_dir",
        "./data/models",
    ]
    err = _one_line_exit(capsys, train.main, argv)
    assert "data/preprocess was tokenized with roberta-base (RobertaTokenizer" in err
    assert f"{bert_folder} has BertTokenizer of " in err and "CLS 2 separator 3 PAD 0" in err
    assert f"--model_name_or_path {bert_folder} --output_dir data/preprocess-bert" in err
    assert not list((root / "data" / "models").iterdir())  # stopped before anything was written
    err = _one_line_exit(
        capsys,
        inference.main,
        [
            "--model_class",
            "STAR_MaxP",
            *common[:4],
            "--max_seg_num",
            "1",
            "--model_path",
            str(bert_folder),
            "--gen_hardneg",
        ],
    )
    assert "was tokenized with roberta-base" in err and str(bert_folder) in err
    assert not (root / "data" / "evaluate").joinpath("bert-inf64-1").exists()


def test_adore_refuses_too(root, bert_folder, capsys, tmp_path):
    model = build_model("SeDR", bert_folder, max_seg_num=4)
    save_pretrained(model, tmp_path / "trained")
    err = _one_line_exit(
        capsys,
        adore_train.main,
        [
            "--init_path",
            str(tmp_path / "trained"),
            "--pembed_dir",
            str(tmp_path),
            "--preprocess_dir",
            "./data/preprocess",
            "--model_save_dir",
            str(tmp_path / "adore"),
            "--log_dir",
            str(tmp_path / "log"),
        ],
    )
    assert "was tokenized with roberta-base" in err and "BertTokenizer" in err


def test_folders_without_a_record(root, star_dir, bert_folder, caplog, tmp_path):
    """An original-code folder (no record) is read by a RoBERTa model with one warning, refused for others."""
    prep = tmp_path / "preprocess"
    shutil.copytree(root / "data" / "preprocess", prep)
    (prep / RECORD_FILE).unlink()  # as the original code leaves it
    star = build_model("STAR_MaxP", star_dir, max_seg_num=1)
    with caplog.at_level(logging.WARNING, logger="SeDR.data.tokenizer_record"):
        check_tokenizer_record(prep, star, star_dir)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "assuming roberta-base ids" in warnings[0]
    with pytest.raises(SeDRInputError, match="has no tokenizer record.*rerun preprocessing"):
        check_tokenizer_record(prep, build_model("SeDR", bert_folder, max_seg_num=4), bert_folder)


def test_a_model_without_tokenizer_files_is_compared_on_its_config(root, tmp_path):
    """The released STAR layout (config + weights only): vocabulary size and special ids must agree."""
    record = read_record(root / "data" / "preprocess")
    ok = testing.make_star_checkpoint(tmp_path / "ok", vocab_size=record["vocab_size"])
    check_tokenizer_record(root / "data" / "preprocess", build_model("STAR_MaxP", ok, max_seg_num=1), ok)
    bigger = testing.make_star_checkpoint(tmp_path / "bigger", vocab_size=record["vocab_size"] + 7)
    with pytest.raises(SeDRInputError, match=f"has a vocabulary of {record['vocab_size'] + 7} tokens"):
        check_tokenizer_record(
            root / "data" / "preprocess", build_model("STAR_MaxP", bigger, max_seg_num=1), bigger
        )
    multi = build_model(
        "STAR_Multi", ok, max_seg_num=1
    )  # grown by its K view tokens: still the same tokenizer
    check_tokenizer_record(root / "data" / "preprocess", multi, ok)
