"""Session fixtures: a tokenizer trained on the fly, a tiny STAR checkpoint, MS MARCO-format data.

Everything is generated offline; nothing is downloaded. Tests that modify a fixture's files
copy it first (``copy_tree``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from SeDR import testing

ROOT = Path(__file__).resolve().parents[1]

# huggingface_hub reads HF_HOME once, at import: point it at a private cache before anything imports it,
# so that ``from_pretrained("roberta-base")`` in the README commands resolves to the tiny tokenizer.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="sedr-test-hf-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE tokenizer folder with RoBERTa's special-token ids."""
    return testing.train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="session")
def hf_home(tokenizer_dir):
    """The process's HF_HOME, whose hub cache now resolves ``roberta-base`` to the tiny tokenizer."""
    home = os.environ["HF_HOME"]
    testing.install_in_hf_cache(tokenizer_dir, home, "roberta-base")
    return home


@pytest.fixture(scope="session")
def star_dir(tmp_path_factory, tokenizer, tokenizer_dir):
    """A tiny randomly initialised checkpoint in the released STAR layout."""
    return testing.make_star_checkpoint(
        tmp_path_factory.mktemp("star"), vocab_size=len(tokenizer), tokenizer_dir=tokenizer_dir
    )


@pytest.fixture(scope="session")
def msmarco(tmp_path_factory):
    """A small MS MARCO-format ``data`` folder (the nine files of docs/data.md#input-files)."""
    return testing.make_msmarco_data(tmp_path_factory.mktemp("msmarco") / "data")


def copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


@contextlib.contextmanager
def cwd(path):
    """Run README-style commands, which resolve ``./data/...`` against the working directory."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_preprocess(argv):
    """``python SeDR_preprocess.py ARGV`` in-process (a top-level script, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        "sedr_preprocess_script_conftest", ROOT / "SeDR_preprocess.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


HARDNEG_CMD = (
    "--model_class STAR_MaxP --max_query_length 32 --max_seg_length 512 --max_seg_num 1 "
    "--model_path ./data/star --faiss_gpus 0 --gen_hardneg"
).split()


@pytest.fixture(scope="session")
def base_root(tmp_path_factory, hf_home, tokenizer, tokenizer_dir):
    """data/ (nine files) + data/star + data/preprocess + data/hard_negative.json,
    made by the README commands."""
    from SeDR import inference

    root = tmp_path_factory.mktemp("pipeline")
    corpus = testing.make_msmarco_data(
        root / "data", n_docs=30, n_train=24, n_dev=8, n_test=5, max_words=700, seed=3
    )
    testing.make_star_checkpoint(
        root / "data" / "star", vocab_size=len(tokenizer), tokenizer_dir=tokenizer_dir
    )
    with cwd(root):
        run_preprocess(["--data_path", "./data", "--max_seq_length", "2048"])
        inference.main(HARDNEG_CMD)
    return root, corpus


@pytest.fixture
def root(base_root, tmp_path):
    """A private copy of the pipeline fixture root, as the working directory."""
    src, _ = base_root
    dst = tmp_path / "root"
    shutil.copytree(src, dst)
    with cwd(dst):
        yield dst


@pytest.fixture(scope="module")
def random_corpus():
    """300 documents of 1..4 random 16-d segment vectors, and 20 random queries."""
    import numpy as np

    rng = np.random.default_rng(0)
    counts = rng.integers(1, 5, size=300)
    row_doc_ids = np.repeat(np.arange(300), counts).astype(np.int32)
    vectors = rng.standard_normal((len(row_doc_ids), 16)).astype(np.float32)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    return vectors, row_doc_ids, queries


def load_script(relative_path: str):
    """A script of the repository (e.g. ``SeDR_Longformer/train.py``) as a module, to call its ``main``."""
    path = ROOT / relative_path
    name = "script_" + relative_path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def user_error(capsys, main, argv) -> str:
    """Run a script's ``main(argv)``:
    it must stop with exit status 2 and one ``error:`` line, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="session")
def star(tokenizer_dir):
    """The tokenizer fixture as the pipeline's emulated transformers-2.8 tokenizer."""
    from SeDR.data.tokenization import StarTokenizer

    return StarTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="session")
def ref(star):
    """The slow transformers-2.8 reference over the same vocabulary."""
    from SeDR.testing.reference_tokenizer import ReferenceRobertaTokenizer

    return ReferenceRobertaTokenizer.from_star(star)
