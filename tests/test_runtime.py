"""Runtime switches (SeDR/core/runtime.py): the one logging setup and seeding."""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from SeDR.cli import index as index_cli
from SeDR.core.runtime import seed_everything, setup_logging
from SeDR.modeling import checkpoint


@pytest.fixture
def logging_levels():
    """Put back the levels a test's setup_logging changes (they are process-wide)."""
    names = ("", "faiss.loader", checkpoint.__name__, "x.noisy")
    saved = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)


def test_rank_and_quiet_loggers(logging_levels):
    setup_logging(rank=1, quiet=("x.noisy",))
    assert logging.getLogger().level == logging.WARNING  # other ranks: warnings only
    setup_logging(quiet=("x.noisy",))
    assert logging.getLogger().level == logging.INFO
    assert not logging.getLogger("x.noisy").isEnabledFor(logging.INFO)
    assert logging.getLogger("x.noisy").isEnabledFor(logging.WARNING)
    assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)


def test_the_retriever_commands_quiet_the_checkpoint_loader(logging_levels, tmp_path):
    """``python -m SeDR.index`` / ``search`` (and the demo) drop the loader's renamed-tensor lines."""
    with pytest.raises(SystemExit):
        index_cli.main(["./no-model", str(tmp_path / "docs.tsv"), str(tmp_path / "out")])
    assert not logging.getLogger(checkpoint.__name__).isEnabledFor(logging.INFO)


def test_only_the_runtime_configures_logging():
    """Every script and tool calls setup_logging; none calls logging.basicConfig itself."""
    calls = []
    for path in [*ROOT.glob("SeDR/**/*.py"), *ROOT.glob("tools/*.py"), *ROOT.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "basicConfig":
                calls.append(str(Path(path).relative_to(ROOT)))
    assert calls == ["SeDR/core/runtime.py"]


def test_seed_everything_seeds_every_generator_with_the_seed():
    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    assert first == (random.random(), np.random.rand(), torch.rand(1).item())
