"""Session fixtures: a tokenizer trained on the fly, a tiny STAR checkpoint, MS MARCO-format data.

Everything is generated offline; nothing is downloaded. Tests that modify a fixture's files
copy it first (``copy_tree``).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from SeDR import synthetic

# huggingface_hub reads HF_HOME once, at import: point it at a private cache before anything imports it,
# so that ``from_pretrained("roberta-base")`` in the README commands resolves to the tiny tokenizer.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="sedr-test-hf-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE tokenizer folder with RoBERTa's special-token ids."""
    return synthetic.train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="session")
def hf_home(tokenizer_dir):
    """The process's HF_HOME, whose hub cache now resolves ``roberta-base`` to the tiny tokenizer."""
    home = os.environ["HF_HOME"]
    synthetic.install_in_hf_cache(tokenizer_dir, home, "roberta-base")
    return home


@pytest.fixture(scope="session")
def star_dir(tmp_path_factory, tokenizer, tokenizer_dir):
    """A tiny randomly initialised checkpoint in the released STAR layout."""
    return synthetic.make_star_checkpoint(tmp_path_factory.mktemp("star"), vocab_size=len(tokenizer),
                                          tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="session")
def msmarco(tmp_path_factory):
    """A small MS MARCO-format ``data`` folder (the nine files of SPEC §1.1)."""
    return synthetic.make_msmarco_data(tmp_path_factory.mktemp("msmarco") / "data")


def copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst
