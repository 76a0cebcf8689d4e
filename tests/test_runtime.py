"""Process settings of SeDR.core.runtime: the local rank from a launcher's flag or environment, the
collating workers, per-device random states and the TF32 switch on a machine without a GPU."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from SeDR.cli import flags
from SeDR.core.errors import SeDRInputError
from SeDR.core.runtime import env_rank, loader_workers, resolve_precision, rng_state, set_rng_state

CPU = torch.device("cpu")
TRAIN = "--max_query_length 32 --max_seg_length 512 --max_seg_num 4 --init_path m --hardneg_path h".split()


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
