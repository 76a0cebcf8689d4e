"""Helpers shared by the bench scripts: a random STAR-format model, MS MARCO-like documents and
interleaved min-of-N timing.

Every script prints ratios of schemes timed side by side in one run: the repetitions are
interleaved (A, B, C, B, C, A, ...) and each scheme keeps its fastest repetition, so load from
other processes on the machine hits all schemes alike and inflates none of the minima for long.
Absolute times are printed for context only; they depend on the machine's load.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from SeDR import testing
from SeDR.data.segmentation import SegmentSpec
from SeDR.modeling import build_model

# Share of documents with 1, 2, 3, 4 segments at (512, 4): mean 2.25 segments per document and
# 30% within one segment, as in MS MARCO documents (about 2.2 segments/doc, ~30% within 512 tokens).
MSMARCO_SEGMENT_MIX = (0.30, 0.35, 0.15, 0.20)
VOCAB = 1000


def machine() -> str:
    """One line naming the machine: CPU, torch threads, load average."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"load average {load}"
    )


def msmarco_like_documents(
    n: int, spec: SegmentSpec, rng: np.random.Generator, mix: tuple[float, ...] = MSMARCO_SEGMENT_MIX
) -> list[np.ndarray]:
    """``n`` random token-id documents whose segment counts follow ``mix`` (stored tokens, no CLS/EOS)."""
    L, g, M = spec.content_len, spec.ignore_len, spec.max_seg_num
    p = np.asarray(mix[:M], dtype=float)
    docs = []
    for s in rng.choice(np.arange(1, M + 1), size=n, p=p / p.sum()):
        # A document with s segments: s-1 full pieces and a tail long enough not to be dropped;
        # documents with M segments are often truncated at L·M, so their tail is full more often.
        tail = L if s == M and rng.random() < 0.5 else int(rng.integers(g if s > 1 else 20, L + 1))
        docs.append(rng.integers(5, VOCAB, size=int((s - 1) * L + tail)))
    return docs


def random_models(
    classes: list[str],
    *,
    max_seg_num: int,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    vocab: int = VOCAB,
    **build_kwargs,
) -> dict[str, torch.nn.Module]:
    """One random STAR checkpoint loaded as each of ``classes``, all sharing the same weights."""
    with tempfile.TemporaryDirectory() as tmp:
        testing.make_star_checkpoint(
            tmp,
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate or 4 * hidden,
        )
        models = {c: build_model(c, tmp, max_seg_num=max_seg_num, **build_kwargs) for c in classes}
    first = next(iter(models.values()))
    for m in models.values():
        m.load_state_dict(first.state_dict())
    return {c: m.to(device=device, dtype=dtype) for c, m in models.items()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_min(
    schemes: dict[str, Callable[[], object] | list[Callable[[], object]]],
    reps: int,
    device: str = "cpu",
    warmup: int = 1,
) -> dict[str, float]:
    """Fastest of ``reps`` wall times of each scheme, repetitions interleaved in rotating order.

    A scheme given as a list of steps (e.g. one per forward pass) is timed step by step and its
    time is the sum of each step's minimum: a burst of load then spoils one step's repetition,
    not a whole run.
    """
    steps = {n: (f if isinstance(f, list) else [f]) for n, f in schemes.items()}
    names = list(steps)
    for _ in range(warmup):
        for n in names:
            for f in steps[n]:
                f()
    best = {n: [float("inf")] * len(steps[n]) for n in names}
    for rep in range(reps):
        k = rep % len(names)
        for n in names[k:] + names[:k]:
            for i, f in enumerate(steps[n]):
                sync(device)
                t0 = time.perf_counter()
                f()
                sync(device)
                best[n][i] = min(best[n][i], time.perf_counter() - t0)
    return {n: sum(b) for n, b in best.items()}


def set_threads(n: int) -> None:
    """``n`` torch threads (0 keeps torch's default). One thread makes ratios steadier on a loaded
    machine: no thread of a parallel region waits for a sibling that the scheduler has parked."""
    if n:
        torch.set_num_threads(n)


def dtype_arg(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
