"""Optimiser and schedule against the worked numbers of docs/training.md#lamb and #schedule-horizon, and the
no-decay rule of docs/training.md#weight-decay-groups."""

import math

import pytest
import torch

from SeDR.training.optimizers import (
    CPU_FOREACH_VALUES,
    Lamb,
    TransformersAdamW,
    build_optimizer,
    linear_schedule_with_warmup,
    linear_warmup_decay,
    parameter_groups,
    sum_of_squares_norms,
    total_training_steps,
)

# ------------------------------------------------------------------------------------ schedule horizon


def test_total_training_steps():
    # 367,013 * 25 * 4 / (17 * 4) = 36,701,300 / 68 = 539,725 exactly.
    assert total_training_steps(367_013, 25, 4, 17, 4) == 539_725
    # Longformer omits M: 367,013 * 25 / (7 * 4) = 9,175,325 / 28 = 327,690.18 -> 327,690.
    assert total_training_steps(367_013, 25, 1, 7, 4) == 327_690
    # A float epoch count (the original's type) gives the same floor.
    assert total_training_steps(367_013, 25.0, 4, 17, 4) == 539_725


@pytest.mark.parametrize(
    "t,lr", [(0, 0.0), (500, 2.5e-5), (1000, 5e-5), (270_362.5, 2.5e-5), (539_725, 0.0), (600_000, 0.0)]
)
def test_schedule_values(t, lr):
    # t < 1000: 5e-5 * t / 1000; else 5e-5 * (539,725 - t) / 538,725 (270,362.5 is the midpoint).
    assert 5e-5 * linear_warmup_decay(t, 1000, 539_725) == pytest.approx(lr, abs=1e-15)


def test_scheduler_matches_transformers_and_first_update_uses_lr_zero():
    from transformers import get_linear_schedule_with_warmup

    def opt():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-5)

    ours_opt, hf_opt = opt(), opt()
    ours = linear_schedule_with_warmup(ours_opt, 7, 30)
    hf = get_linear_schedule_with_warmup(hf_opt, 7, 30)
    assert ours_opt.param_groups[0]["lr"] == 0.0  # the first optimizer step runs with t = 0
    for _ in range(35):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(hf_opt.param_groups[0]["lr"], abs=1e-18)
        ours_opt.step(), hf_opt.step()
        ours.step(), hf.step()
    # the scheduler state round-trips (resume)
    again = linear_schedule_with_warmup(opt(), 7, 30)
    again.load_state_dict(ours.state_dict())
    assert again.last_epoch == ours.last_epoch == 35


# ------------------------------------------------------------------------------------ one LAMB step by hand


def lamb_step(p, g, lr=1e-3, wd=0.01, **kw):
    p = torch.nn.Parameter(torch.tensor(p, dtype=torch.float64))
    opt = Lamb([p], lr=lr, weight_decay=wd, eps=1e-8, **kw)
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
    return p.detach()


def test_lamb_one_step():
    # m = (0.1, 0), v = (0.001, 0), u = (0.1/(sqrt(0.001)+1e-8) + 0.03, 0.04) = (3.1922767, 0.04),
    # |u| = 3.1925273, ratio = 5 / 3.1925273 = 1.5661573, p - 1e-3 * ratio * u.
    new = lamb_step([3.0, 4.0], [1.0, 0.0])
    assert new.tolist() == pytest.approx([2.9950004, 3.9999374], abs=1e-6)


def test_lamb_zero_weight_norm_uses_ratio_one():
    # p = 0: w = 0 -> ratio 1, the update is lr * m/(sqrt(v)+eps) = 1e-3 * 0.1/(0.0316227766+1e-8).
    new = lamb_step([0.0, 0.0], [1.0, 0.0])
    assert new.tolist() == pytest.approx([-1e-3 * 0.1 / (math.sqrt(0.001) + 1e-8), 0.0], abs=1e-12)


def test_lamb_zero_update_norm_is_finite_noop():
    new = lamb_step([3.0, 4.0], [0.0, 0.0], wd=0.0)
    assert torch.isfinite(new).all() and new.tolist() == [3.0, 4.0]


def test_lamb_weight_norm_clamped_at_10():
    # |p| = 50 -> w = 10; u = (3.1622774 + 0.3, 0.4); ratio = 10 / |u|.
    u = torch.tensor([0.1 / (math.sqrt(0.001) + 1e-8) + 0.3, 0.4], dtype=torch.float64)
    expected = torch.tensor([30.0, 40.0], dtype=torch.float64) - 1e-3 * (10 / u.norm()) * u
    assert torch.allclose(lamb_step([30.0, 40.0], [1.0, 0.0]), expected, atol=1e-12)


def test_lamb_matches_reference_over_several_steps_and_skips_gradless():
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64))
    frozen = torch.nn.Parameter(torch.randn(2, dtype=torch.float64, generator=gen))
    frozen_before = frozen.detach().clone()
    opt = Lamb(
        [{"params": [w], "weight_decay": 0.01}, {"params": [frozen], "weight_decay": 0.0}], lr=1e-2, eps=1e-8
    )
    ref, m, v = w.detach().clone(), torch.zeros_like(w), torch.zeros_like(w)
    for _ in range(5):
        g = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        w.grad = g.clone()
        opt.step()
        # independent restatement of the update
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        u = m / (v.sqrt() + 1e-8) + 0.01 * ref
        ratio = min(ref.norm().item(), 10.0) / u.norm().item()
        ref = ref - 1e-2 * ratio * u
    assert torch.allclose(w.detach(), ref, atol=1e-12)
    assert torch.equal(frozen.detach(), frozen_before) and frozen not in opt.state


# ------------------------------------------------------------------------------------ transformers 4.x AdamW

# lr 0.1, wd 0.01, betas (0.9, 0.999), eps 1e-3 (large, so where eps enters shows), p0 = (1, -2),
# g1 = (0.5, -0.1), g2 = (-0.2, 0.3). Per coordinate, by hand:
# t=1: m = 0.1 g1 = (0.05, -0.01); v = 0.001 g1^2 = (2.5e-4, 1e-5); sqrt(v) = (0.0158113883, 0.0031622777)
#      step_size = 0.1 * sqrt(1 - 0.999) / (1 - 0.9) = 0.0316227766
#      m / (sqrt(v) + eps) = (2.9741743576, -2.4025307335)
#      after the step (0.9059483487, -1.9240253073); decay of the UPDATED weights, times (1 - 0.1 * 0.01):
STEP1 = [0.9050424003664824, -1.9221012820278691]
# t=2: m = 0.9 m + 0.1 g2 = (0.025, 0.021); v = 0.999 v + 0.001 g2^2 = (2.8975e-4, 9.999e-5)
#      sqrt(v) = (0.0170220445, 0.0099994999)
#      step_size = 0.1 * sqrt(1 - 0.999^2) / (1 - 0.9^2) = 0.0235316725
#      m / (sqrt(v) + eps) = (1.3871900026, 1.9091776921)
#      after the step (0.8723994995, -1.9670274263), times 0.999:
STEP2 = [0.8715270999840597, -1.9650603988580742]


def test_transformers_adamw_two_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    frozen = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    opt = TransformersAdamW([p, frozen], lr=0.1, eps=1e-3, weight_decay=0.01)
    for g, expected in (([0.5, -0.1], STEP1), ([-0.2, 0.3], STEP2)):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert p.detach().tolist() == pytest.approx(expected, abs=1e-7)
    assert frozen.item() == 1.0 and frozen not in opt.state  # no gradient: no step, no decay
    # torch's AdamW (decay first, eps after the bias correction) lands elsewhere on the same problem.
    q = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    torch_opt = torch.optim.AdamW([q], lr=0.1, eps=1e-3, weight_decay=0.01)
    for g in ([0.5, -0.1], [-0.2, 0.3]):
        q.grad = torch.tensor(g, dtype=torch.float64)
        torch_opt.step()
    assert max(abs(a - b) for a, b in zip(q.detach().tolist(), STEP2)) > 1e-3


# ------------------------------------------------------------------------------------ weight-decay groups


class Named(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = torch.nn.Linear(2, 2)
        self.embeddingHead = torch.nn.Linear(2, 2)
        self.norm = torch.nn.LayerNorm(2)
        self.enc = torch.nn.Module()
        self.enc.LayerNorm = torch.nn.LayerNorm(2)


def test_parameter_groups_names():
    groups = parameter_groups(Named(), 0.01)
    by_wd = {g["weight_decay"]: set(g["param_names"]) for g in groups}
    # The output norm.weight IS decayed (its name lacks "LayerNorm.weight"), as in the original.
    assert by_wd[0.01] == {"dense.weight", "embeddingHead.weight", "norm.weight"}
    assert by_wd[0.0] == {
        "dense.bias",
        "embeddingHead.bias",
        "norm.bias",
        "enc.LayerNorm.weight",
        "enc.LayerNorm.bias",
    }


def test_parameter_groups_on_transformers_roberta_still_find_layernorm():
    from transformers import RobertaConfig, RobertaModel

    cfg = RobertaConfig(
        vocab_size=99, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=9
    )
    groups = parameter_groups(RobertaModel(cfg, add_pooling_layer=False), 0.01)
    no_decay = next(set(g["param_names"]) for g in groups if g["weight_decay"] == 0.0)
    # Would fail if transformers renamed the LayerNorm modules (the rule would silently decay them).
    assert {
        "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.output.LayerNorm.weight",
        "encoder.layer.0.output.LayerNorm.weight",
    } <= no_decay


@pytest.mark.parametrize(
    "name,cls", [("lamb", Lamb), ("adamw", torch.optim.AdamW), ("transformers_adamw", TransformersAdamW)]
)
def test_build_optimizer(name, cls):
    opt = build_optimizer(name, Named(), lr=5e-5, weight_decay=0.01, eps=1e-8, betas=(0.9, 0.98))
    assert isinstance(opt, cls)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]
    # LAMB keeps its own betas as in the original; AdamW honours the flags.
    assert opt.param_groups[0]["betas"] == ((0.9, 0.999) if name == "lamb" else (0.9, 0.98))
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("sgd", Named(), lr=1, weight_decay=0)


# ------------------------------------------------------------------------------------ foreach LAMB


def _lamb_problem(seed: int = 0):
    """Tensors of mixed shapes in two decay groups (one larger than a CPU foreach chunk), one frozen."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(300, 40), (40,), (7, 7, 3), (1,), (CPU_FOREACH_VALUES + 5,), (5, 2)]
    params = [torch.nn.Parameter(torch.randn(*s, generator=gen) * 0.3) for s in shapes]
    grads = [[torch.randn(*s, generator=gen) * 1e-2 for s in shapes] for _ in range(4)]
    return params, grads


def _run_lamb(make, steps_grads, params):
    opt = make([{"params": params[:3], "weight_decay": 0.01}, {"params": params[3:], "weight_decay": 0.0}])
    for grads in steps_grads:
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if i == 3 else g.clone()  # params[3] never has a gradient
        opt.step()
    return [p.detach() for p in params], opt


def test_foreach_lamb_equals_the_loop_bit_for_bit():
    start, grads = _lamb_problem()
    loop, _ = _run_lamb(
        lambda g: Lamb(g, lr=1e-2, eps=1e-8, foreach=False),
        grads,
        [torch.nn.Parameter(p.detach().clone()) for p in start],
    )
    fused, opt = _run_lamb(
        lambda g: Lamb(g, lr=1e-2, eps=1e-8), grads, [torch.nn.Parameter(p.detach().clone()) for p in start]
    )
    for a, b in zip(loop, fused):
        assert torch.equal(a, b)
    assert not torch.equal(fused[0], start[0].detach()) and torch.equal(fused[3], start[3].detach())
    assert opt.foreach and "foreach" not in opt.param_groups[0]  # saved states keep their layout


def test_foreach_lamb_equals_torch_optimizer_lamb():
    torch_optimizer = pytest.importorskip("torch_optimizer")
    start, grads = _lamb_problem(1)
    ours, _ = _run_lamb(  # the README's learning rate
        lambda g: Lamb(g, lr=5e-5, eps=1e-8), grads, [torch.nn.Parameter(p.detach().clone()) for p in start]
    )
    ref, _ = _run_lamb(  # the original's rule: no bias correction, weight norm clamped at 10
        lambda g: torch_optimizer.Lamb(g, lr=5e-5, eps=1e-8, clamp_value=10, debias=False),
        grads,
        [torch.nn.Parameter(p.detach().clone()) for p in start],
    )
    # torch_optimizer takes torch.norm where the original sums squares: trust ratios differ in the
    # 7th digit, so a weight may round the other way.
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert not torch.equal(ours[0], start[0].detach())


def test_lamb_norms_are_the_square_root_of_the_sum_of_squares():
    gen = torch.Generator().manual_seed(2)
    tensors = [torch.randn(4000, 70, generator=gen) * 0.05, torch.randn(3, generator=gen)]
    norms = sum_of_squares_norms(tensors)
    for t, n in zip(tensors, norms):
        assert torch.equal(n, t.pow(2).sum().sqrt())  # the original lamb.py's expression, bit for bit
        exact = t.double().pow(2).sum().sqrt()
        assert abs(float(n) - float(exact)) <= 1e-6 * float(exact)
