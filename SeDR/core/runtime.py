"""Device, precision, seeding, process group and logging: one explicit switch each, with a CPU fallback.

``--fp16``/``--bf16``/``--tf32`` and ``--faiss_gpus`` on a machine without a GPU log one warning and
run fp32 / CPU search (never crash). Scores, masks and losses stay fp32 inside the models.
Every precision clips the (partially accumulated) gradients after every micro-step, as the fp32
original did; under a GradScaler the clip acts on the scaled gradients with the same coefficient
(docs/precision.md#clipping).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from SeDR.core.constants import DEFAULT_DDP_TIMEOUT
from SeDR.core.errors import SeDRInputError

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


def rng_state(device: torch.device | None = None) -> dict:
    """Python, numpy and torch CPU generator states, for an exact resume, plus the generator of the GPU
    ``device`` when one is given (the one device a training process uses: a resume on a machine
    with fewer GPUs still finds it); ``None``: every visible GPU's."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device is None and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore :func:`rng_state`. A saved GPU state goes to ``device`` (a list of per-GPU states,
    as :func:`rng_state` without a device wrote, to the GPUs that are still visible)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if saved is None or not torch.cuda.is_available():
        if saved is not None:
            logger.warning(
                "the saved state holds a GPU random state and this run has no GPU: dropout differs"
            )
        return
    if isinstance(saved, torch.Tensor):
        if device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(saved, device)
        return
    if device is not None and device.type == "cuda":  # a per-GPU list: this process's GPU
        index = torch.cuda.current_device() if device.index is None else device.index
        if index < len(saved):
            torch.cuda.set_rng_state(saved[index], device)
        return
    for i, s in enumerate(saved[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(s, i)


def resolve_device(no_cuda: bool = False, local_rank: int = -1) -> torch.device:
    if no_cuda or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", max(local_rank, 0))


@dataclass
class Precision:
    """Autocast context, grad scaler and TF32 switch for the chosen precision on the chosen device."""

    device: torch.device
    dtype: torch.dtype | None  # None = fp32
    scaler: torch.amp.GradScaler | None
    tf32: bool = False  # fp32 matmuls on TF32 tensor cores (set by resolve_precision on a GPU)
    # The scaler's scale as a float, read once per optimizer step (it only changes in update()):
    # clipping every micro-step needs it, and reading the scaler's tensor there would sync each time.
    _scale: float | None = field(default=None, repr=False)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def name(self) -> str:
        name = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]
        return name + (" (TF32 matmuls)" if self.tf32 else "")

    def scale(self) -> float:
        """The GradScaler's current scale (1 without one), synchronising at most once per optimizer step."""
        if self.scaler is None:
            return 1.0
        if self._scale is None:
            self._scale = self.scaler.get_scale()
        return self._scale

    def load_scaler_state(self, state: dict) -> None:
        self.scaler.load_state_dict(state)
        self._scale = None

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
        norm = torch.nn.utils.get_total_norm([p.grad for p in params]) / self.scale()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """One optimizer step; False when the scaler skipped it (inf/nan gradients), so the caller
        leaves the learning-rate schedule where it is."""
        if self.scaler is None:
            optimizer.step()
            return True
        before = self.scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        self._scale = self.scaler.get_scale()  # the one sync per optimizer step
        return self._scale >= before  # a skipped step always backs the scale off


def resolve_precision(
    device: torch.device, fp16: bool = False, bf16: bool = False, training: bool = True, tf32: bool = False
) -> Precision:
    """fp16 → autocast + GradScaler on CUDA; bf16 → autocast; on CPU both warn once and give fp32.

    ``tf32`` lets the fp32 matmuls and convolutions of this process use TF32 tensor cores (CUDA only;
    on a CPU one warning, no effect). Off, torch's default, the fp32 products are full fp32 as in
    the paper's runs (docs/precision.md#tf32).
    """
    if tf32:
        tf32 = allow_tf32(device)
    if not (fp16 or bf16):
        return Precision(device, None, None, tf32)
    flag = "--fp16" if fp16 else "--bf16"
    if device.type != "cuda":
        logger.warning("%s needs a CUDA GPU; none is in use, so this run is fp32", flag)
        return Precision(device, None, None, tf32)
    if bf16:
        if not torch.cuda.is_bf16_supported():
            logger.warning("--bf16: this GPU has no bfloat16 support; running fp32")
            return Precision(device, None, None, tf32)
        return Precision(device, torch.bfloat16, None, tf32)
    scaler = torch.amp.GradScaler("cuda") if training else None
    return Precision(device, torch.float16, scaler, tf32)


def allow_tf32(device: torch.device) -> bool:
    """Switch fp32 matmuls and cuDNN convolutions to TF32 on a CUDA device; True if it took effect."""
    if device.type != "cuda":
        logger.warning("--tf32 needs a CUDA GPU; none is in use, so this run is plain fp32")
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        logger.warning("--tf32: %s has no TF32 tensor cores (before Ampere); fp32 as usual", device)
        return False
    return True


def loader_workers(flag: int | None, device: torch.device) -> int:
    """``--num_workers``: as given, else 2 collating processes on a GPU (collation would otherwise
    leave the GPU idle, docs/training.md#collation-workers) and none on a CPU, where they would
    take cores from the model."""
    if flag is not None:
        return int(flag)
    return 2 if device.type == "cuda" else 0


def env_rank(local_rank: int | None = None) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, -1, 1) otherwise.

    ``local_rank`` is ``--local_rank``/``--local-rank`` when given (``torch.distributed.launch``
    passes it; torchrun sets ``LOCAL_RANK``). It must agree with ``LOCAL_RANK`` when both are set;
    without a process group it picks the GPU of a single process.
    """
    env = os.environ.get("LOCAL_RANK")
    if local_rank is not None and local_rank >= 0 and env is not None and int(env) != local_rank:
        raise SeDRInputError(
            f"--local_rank {local_rank} disagrees with LOCAL_RANK={env} set by the launcher; drop the flag"
        )
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, -1 if local_rank is None else local_rank, 1
    mine = int(env) if env is not None else (local_rank if local_rank is not None and local_rank >= 0 else 0)
    return int(os.environ.get("RANK", 0)), mine, world


def start_distributed(device: torch.device, world_size: int, timeout_s: float = DEFAULT_DDP_TIMEOUT) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPUs); ``timeout_s`` bounds every collective wait."""
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )


def stop_distributed(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
