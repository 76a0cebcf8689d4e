"""Mixed precision in training: per-micro-step clipping under a GradScaler equals fp32, and a step the
scaler skips leaves the weights, the learning rate and the step count where they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from SeDR import train as train_script
from SeDR.cli import train as cli_train
from SeDR.core.runtime import Precision
from SeDR.training.loop import Trainer
from SeDR.training.optimizers import Lamb, linear_schedule_with_warmup

CPU = torch.device("cpu")
SCALE = 2.0**12


def fixed_scaler(scale: float = SCALE) -> torch.amp.GradScaler:
    """A CPU GradScaler whose scale never grows during a test."""
    return torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=10**9)


def toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def micro_batches(k: int = 3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 6, generator=g), torch.randn(4, 3, generator=g) * 20) for _ in range(k)]


def accumulate_and_step(precision: Precision, optimizer_cls, clip: str = "micro", max_norm: float = 0.5):
    """k micro-steps and one optimizer step; ``clip="micro"`` is the trainer's per-micro-step clip,
    ``"once"`` the old single clip after unscaling; returns the parameters and the first clip's norm."""
    model = toy_model()
    opt = optimizer_cls(model.parameters(), lr=0.1)
    batches = micro_batches()
    norms = []
    for x, y in batches:
        loss = torch.nn.functional.mse_loss(model(x), y) / len(batches)
        precision.backward(loss)
        if clip == "micro":
            norms.append(float(precision.clip_(model.parameters(), max_norm)))
    if clip == "once":
        precision.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    assert precision.step(opt)
    return [p.detach().clone() for p in model.parameters()], norms


def plain_fp32(optimizer_cls, max_norm: float = 0.5):
    """The original's loop with torch's own clip after every micro-step."""
    model = toy_model()
    opt = optimizer_cls(model.parameters(), lr=0.1)
    batches = micro_batches()
    for x, y in batches:
        (torch.nn.functional.mse_loss(model(x), y) / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("optimizer_cls", [torch.optim.SGD, Lamb])
def test_scaled_per_micro_step_clipping_equals_fp32(optimizer_cls):
    reference = plain_fp32(optimizer_cls)
    fp32, norms = accumulate_and_step(Precision(CPU, None, None), optimizer_cls)
    assert min(norms) > 0.5  # the clip engages at every micro-step
    for a, b in zip(fp32, reference):
        assert torch.equal(a, b)  # fp32 path: exactly torch's clip_grad_norm_
    scaled, scaled_norms = accumulate_and_step(Precision(CPU, None, fixed_scaler()), optimizer_cls)
    assert scaled_norms == pytest.approx(norms, rel=1e-6)  # the unscaled norms are reported
    for a, b in zip(scaled, reference):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    if optimizer_cls is torch.optim.SGD:  # the old single clip after unscaling trains differently
        once, _ = accumulate_and_step(Precision(CPU, None, fixed_scaler()), optimizer_cls, clip="once")
        assert max(float((a - b).abs().max()) for a, b in zip(once, reference)) > 1e-3


def test_inf_gradient_step_is_skipped_without_moving_the_schedule():
    model = toy_model()
    trainer = Trainer.__new__(Trainer)  # only the optimizer-step part of the loop
    trainer.precision = Precision(CPU, None, fixed_scaler())
    trainer.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer.scheduler = linear_schedule_with_warmup(trainer.optimizer, 0, 10)
    trainer.global_step = trainer.skipped_steps = 0
    before = [p.detach().clone() for p in model.parameters()]
    lr = trainer.scheduler.get_last_lr()
    x = torch.randn(4, 6)
    x[0, 0] = float("inf")
    trainer.precision.backward(model(x).sum())
    norm = trainer.precision.clip_(model.parameters(), 1.0)
    assert not torch.isfinite(norm)  # inf/nan survives the clip, so the scaler sees it
    trainer._optimizer_step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert trainer.scheduler.get_last_lr() == lr and trainer.scheduler.last_epoch == 0
    assert (trainer.global_step, trainer.skipped_steps) == (0, 1)
    assert trainer.precision.scaler.get_scale() == SCALE / 2
    # A finite step afterwards is taken and moves the schedule by one.
    trainer.precision.backward(model(torch.randn(4, 6)).sum())
    trainer.precision.clip_(model.parameters(), 1.0)
    trainer._optimizer_step()
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert trainer.scheduler.last_epoch == 1 and trainer.scheduler.get_last_lr()[0] < lr[0]
    assert (trainer.global_step, trainer.skipped_steps) == (1, 1)


def test_the_scale_is_read_once_per_optimizer_step(monkeypatch):
    """Clipping every micro-step needs the scale; reading the scaler's tensor is a host sync on a GPU,
    so the float is read after each update only (the scale changes nowhere else)."""
    precision = Precision(CPU, None, torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=1))
    reads = []
    real = precision.scaler.get_scale
    monkeypatch.setattr(precision.scaler, "get_scale", lambda: reads.append(1) or real())
    model = toy_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        for x, y in micro_batches(4):  # four micro-steps, four clips
            precision.backward(torch.nn.functional.mse_loss(model(x), y))
            precision.clip_(model.parameters(), 0.5)
        assert precision.step(opt)
        opt.zero_grad(set_to_none=True)
        assert precision.scale() == SCALE * 2 ** (step + 1)  # growth_interval 1: doubles after each step
    assert len(reads) == 1 + 3  # the first clip, then once after each update
    precision.load_scaler_state(torch.amp.GradScaler("cpu", init_scale=8.0).state_dict())
    assert precision.scale() == 8.0  # a resumed scaler's scale is read again


TRAIN = [
    "--model_class",
    "SeDR",
    "--max_query_length",
    "16",
    "--max_seg_length",
    "64",
    "--max_seg_num",
    "4",
    "--max_bsize",
    "6",
    "--preprocess_dir",
    "./data/preprocess",
    "--hardneg_path",
    "./data/hard_negative.json",
    "--init_path",
    "./data/star",
    "--logging_dir",
    "./data/log",
    "--learning",
    "1e-3",
    "--warmup_steps",
    "0",
    "--hardneg_topk",
    "100",
    "--cache_size",
    "5",
    "--gradient_accumulation_steps",
    "2",
    "--max_grad_norm",
    "0.05",
    "--num_train_epochs",
    "1",
]


@pytest.mark.slow
def test_training_under_a_grad_scaler_equals_fp32(root, monkeypatch):
    """The real loop: a fixed-scale scaler gives the fp32 weights; an overflowing one skips steps,
    counts them, and the schedule's position equals the steps taken."""
    (fp32,) = train_script.main(TRAIN + ["--output_dir", "./fp32"])
    for name, scale in (("scaled", SCALE), ("overflow", 2.0**127)):
        monkeypatch.setattr(
            cli_train,
            "resolve_precision",
            lambda device, s=scale, **kw: Precision(device, None, fixed_scaler(s)),
        )
        train_script.main(TRAIN + ["--output_dir", f"./{name}"])
    a = load_file(str(fp32 / "model.safetensors"))
    b = load_file(str(Path("scaled") / fp32.name / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    steps = json.loads((fp32 / "train_history.json").read_text())[-1]
    over = json.loads((Path("overflow") / fp32.name / "train_history.json").read_text())[-1]
    assert steps["skipped_steps"] == 0 and over["skipped_steps"] >= 1
    assert over["optimizer_steps"] + over["skipped_steps"] == steps["optimizer_steps"]
    state = torch.load(Path("overflow") / fp32.name / "training_state.pt", weights_only=False)
    assert state["scheduler"]["last_epoch"] == state["global_step"] == over["optimizer_steps"]
    assert state["skipped_steps"] == over["skipped_steps"]
    assert state["scaler"]["scale"] == 2.0**127 * 0.5 ** over["skipped_steps"]
