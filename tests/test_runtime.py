"""Runtime switches (SeDR/core/runtime.py): the one logging setup, seeding, the local rank from a
launcher's flag or environment, the collating workers, per-device random states and the TF32 switch on a
machine without a GPU."""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from SeDR.cli import flags
from SeDR.cli import index as index_cli
from SeDR.core.errors import SeDRInputError
from SeDR.core.runtime import (
    env_rank,
    loader_workers,
    resolve_precision,
    rng_state,
    seed_everything,
    set_rng_state,
    setup_logging,
)
from SeDR.modeling import checkpoint

CPU = torch.device("cpu")
TRAIN = "--max_query_length 32 --max_seg_length 512 --max_seg_num 4 --init_path m --hardneg_path h".split()


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


@pytest.mark.parametrize("spelling", ["--local_rank=1", "--local-rank=1", "--local_rank 1", "--local-rank 1"])
def test_both_spellings_of_the_local_rank_flag_parse(monkeypatch, spelling):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    ns = flags.build_train_parser().parse_args([*TRAIN, *spelling.split()])
    assert ns.local_rank == 1
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert env_rank(ns.local_rank) == (0, 1, 1)  # a single process on GPU 1


def test_local_rank_from_the_launcher(monkeypatch):
    """torch.distributed.launch sets LOCAL_RANK and passes --local-rank; torchrun sets the variables."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_rank(1) == (3, 1, 4)
    assert env_rank(None) == (3, 1, 4)
    default = flags.build_train_parser().parse_args(TRAIN).local_rank  # read from LOCAL_RANK
    assert default == 1 and env_rank(default) == (3, 1, 4)
    with pytest.raises(SeDRInputError, match="--local_rank 2 disagrees with LOCAL_RANK=1"):
        env_rank(2)
    monkeypatch.delenv("LOCAL_RANK")
    assert env_rank(2) == (3, 2, 4)  # only the flag: it names the GPU


def test_without_a_launcher_one_process():
    assert env_rank(-1) == (0, -1, 1)


def test_collating_workers_default_to_the_device():
    assert loader_workers(None, CPU) == 0
    assert loader_workers(None, torch.device("cuda", 0)) == 2
    assert loader_workers(3, CPU) == 3 and loader_workers(0, torch.device("cuda", 0)) == 0


def test_random_states_round_trip_on_the_device_in_use():
    state = rng_state(CPU)
    assert "cuda" not in state  # a CPU process saves no GPU state
    a = (random.random(), float(np.random.rand()), torch.rand(3))
    set_rng_state(state, CPU)
    b = (random.random(), float(np.random.rand()), torch.rand(3))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


def test_a_saved_gpu_state_on_a_cpu_run_warns(caplog):
    state = dict(rng_state(CPU), cuda=[torch.zeros(16, dtype=torch.uint8)])  # an earlier, all-GPU layout
    with caplog.at_level(logging.WARNING):
        set_rng_state(state, CPU)
    assert "GPU random state" in caplog.text


def test_tf32_on_a_cpu_warns_and_stays_fp32(caplog):
    with caplog.at_level(logging.WARNING):
        precision = resolve_precision(CPU, tf32=True)
    assert not precision.tf32 and precision.name == "fp32"
    assert "--tf32 needs a CUDA GPU" in caplog.text
    assert not torch.backends.cuda.matmul.allow_tf32
