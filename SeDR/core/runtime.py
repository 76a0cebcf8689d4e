"""Device, precision, seeding and logging: one explicit switch each, with a CPU fallback.

``--fp16``/``--bf16`` and ``--faiss_gpus`` on a machine without a GPU log one warning and run
fp32 / CPU search (never crash). Scores, masks and losses stay fp32 inside the models.
Every precision clips the (partially accumulated) gradients after every micro-step, as the fp32
original did; under a GradScaler the clip acts on the scaled gradients with the same coefficient
(docs/precision.md#clipping).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def setup_logging(rank: int = 0, quiet: Sequence[str] = ()) -> None:
    """One format for every script; ranks other than 0 only log warnings, and so do the ``quiet`` loggers
    (a command names the ones whose INFO lines are noise for its users)."""
    level = logging.INFO if rank in (-1, 0) else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)  # also when a host (pytest, a notebook) configured handlers already
    for name in ("faiss.loader", *quiet):  # faiss's CPU-feature probing is noise everywhere
        logging.getLogger(name).setLevel(logging.WARNING)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, with the same seed on every rank."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, numpy and torch (and CUDA) generator states, for an exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(no_cuda: bool = False, local_rank: int = -1) -> torch.device:
    if no_cuda or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", max(local_rank, 0))


@dataclass
class Precision:
    """Autocast context and grad scaler for the chosen precision on the chosen device."""

    device: torch.device
    dtype: torch.dtype | None  # None = fp32
    scaler: torch.amp.GradScaler | None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def clip_(self, parameters, max_norm: float) -> torch.Tensor:
        """Clip the gradients to ``max_norm`` as unscaled fp32 gradients would be; returns the unscaled norm.

        With scale ``s`` the gradients are ``s·g``: their norm divided by ``s`` is ``||g||``
        (``s`` is a power of two, so exactly), and multiplying ``s·g`` by fp32's coefficient
        ``min(1, max_norm / (||g|| + 1e-6))`` equals unscale, clip, rescale. An inf/nan norm stays
        inf/nan (the gradients become nan), so the scaler still finds it and skips the step.
        """
        params = [p for p in parameters if p.grad is not None]
        scale = 1.0 if self.scaler is None else self.scaler.get_scale()
        norm = torch.nn.utils.get_total_norm([p.grad for p in params]) / scale
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """One optimizer step; False when the scaler skipped it (inf/nan gradients), so the caller
        leaves the learning-rate schedule where it is."""
        if self.scaler is None:
            optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= before  # a skipped step always backs the scale off


def resolve_precision(
    device: torch.device, fp16: bool = False, bf16: bool = False, training: bool = True
) -> Precision:
    """fp16 → autocast + GradScaler on CUDA; bf16 → autocast; on CPU both warn once and give fp32."""
    if not (fp16 or bf16):
        return Precision(device, None, None)
    flag = "--fp16" if fp16 else "--bf16"
    if device.type != "cuda":
        logger.warning("%s needs a CUDA GPU; none is in use, so this run is fp32", flag)
        return Precision(device, None, None)
    if bf16:
        if not torch.cuda.is_bf16_supported():
            logger.warning("--bf16: this GPU has no bfloat16 support; running fp32")
            return Precision(device, None, None)
        return Precision(device, torch.bfloat16, None)
    scaler = torch.amp.GradScaler("cuda") if training else None
    return Precision(device, torch.float16, scaler)


def env_rank() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, -1, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, -1, 1
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), world


def start_distributed(device: torch.device, world_size: int) -> None:
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)


def stop_distributed(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
