"""One-line user errors (SeDR/core/errors.py): a Hugging Face model id where a model folder is expected
gets the download command, from every command that takes a model folder, before anything is written."""

from __future__ import annotations

import pytest
from conftest import cwd, load_script, run_preprocess, user_error

from SeDR import adore_train, inference, testing, train
from SeDR.api.retriever import Retriever
from SeDR.cli import index as index_cli
from SeDR.cli import search as search_cli
from SeDR.core.errors import HUB_ID, NotDownloadedError, check_model_folder
from SeDR.demo import __main__ as demo_cli
from SeDR.tools import export_original

SHAPE = ["--max_query_length", "32", "--max_seg_length", "64", "--max_seg_num", "4"]
TRAIN = ["--model_class", "SeDR", *SHAPE, "--hardneg_path", "./hn.json", "--output_dir", "./models"]
LONGFORMER_SHAPE = ["--max_query_length", "32", "--max_doc_length", "128", "--max_seg_num", "4"]
ADORE = ["--pembed_dir", "./emb", "--model_save_dir", "./adore", "--log_dir", "./log"]
ADORE += ["--preprocess_dir", "./data/preprocess"]


def _commands(hub_id: str) -> dict:
    """Each command that takes a model folder: (its main, argv with ``hub_id`` for the folder)."""
    star2star = load_script("SeDR_Longformer/Star2Star_Longformer.py").main
    return {
        "SeDR/train.py": (train.main, [*TRAIN, "--init_path", hub_id]),
        "SeDR/inference.py": (inference.main, ["--model_class", "SeDR", *SHAPE, "--model_path", hub_id]),
        "SeDR/adore_train.py": (adore_train.main, [*ADORE, "--init_path", hub_id]),
        "SeDR_preprocess.py": (run_preprocess, ["--data_path", "./data", "--model_name_or_path", hub_id]),
        "SeDR_Longformer/Star2Star_Longformer.py": (
            star2star,
            ["--star_path", hub_id, "--output_path", "./lf"],
        ),
        "SeDR_Longformer/train.py": (
            load_script("SeDR_Longformer/train.py").main,
            [
                *LONGFORMER_SHAPE,
                "--hardneg_path",
                "./hn.json",
                "--output_dir",
                "./models",
                "--init_path",
                hub_id,
            ],
        ),
        "SeDR_Longformer/inference.py": (
            load_script("SeDR_Longformer/inference.py").main,
            [*LONGFORMER_SHAPE, "--model_path", hub_id],
        ),
        "python -m SeDR.index": (index_cli.main, [hub_id, "./data/msmarco-docs.tsv", "./index"]),
        "python -m SeDR.search": (search_cli.main, [hub_id, "./index", "a query"]),
        "python -m SeDR.export_original": (export_original.main, [hub_id, "./exported"]),
        "python -m SeDR.demo": (demo_cli.main, ["--model", hub_id, "--out", "./demo"]),
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The nine MS MARCO-format input files under ./data, so that preprocessing gets to its tokenizer."""
    root = tmp_path_factory.mktemp("hub-ids")
    testing.make_msmarco_data(root / "data", n_docs=5, n_train=2, n_dev=2, n_test=2)
    return root


def _tree(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("hub_id", ["bert-base-uncased", "answerdotai/ModernBERT-base"])
@pytest.mark.parametrize("command", list(_commands("x")))
def test_a_hugging_face_id_gets_the_download_command(workdir, capsys, command, hub_id):
    before = _tree(workdir)
    with cwd(workdir):
        main, argv = _commands(hub_id)[command]
        line = user_error(capsys, main, argv)
    assert line == (
        f"error: {hub_id}: no such folder. If it is a Hugging Face model id, download it first with "
        f"`hf download {hub_id} --local-dir DIR` (on a machine with internet access) and pass DIR instead"
    )
    assert _tree(workdir) == before  # refused before anything was written


def test_the_retriever_and_the_tokenizer_flag_refuse_it_too(workdir, star_dir, capsys):
    before = _tree(workdir)
    with cwd(workdir):
        with pytest.raises(NotDownloadedError, match="hf download roberta-large --local-dir DIR"):
            Retriever.from_pretrained("roberta-large")
        argv = [str(star_dir), "./data/msmarco-docs.tsv", "./index", "--tokenizer", "bert-base-uncased"]
        assert "hf download bert-base-uncased --local-dir DIR" in user_error(capsys, index_cli.main, argv)
    assert _tree(workdir) == before


def test_only_a_missing_path_shaped_like_an_id_is_refused(tmp_path):
    assert all(HUB_ID.fullmatch(s) for s in ("roberta-base", "BAAI/bge-base-en-v1.5", "xlm_roberta.v2"))
    assert not any(HUB_ID.fullmatch(s) for s in ("./data/star", "/abs/model", "a/b/c", "data/star/", ""))
    check_model_folder(tmp_path)  # an existing folder
    (tmp_path / "roberta-base").mkdir()
    with cwd(tmp_path):
        check_model_folder("roberta-base")  # a local folder of that name wins
        check_model_folder("./data/star")  # not an id: the command's own "missing config.json" line follows
        with pytest.raises(NotDownloadedError):
            check_model_folder("bert-base-uncased")
