"""LAMB on roberta-base-shaped tensors: the foreach step against the per-tensor loop.

The parameters are those of SeDR on roberta-base (hidden 768, 12 layers, FFN 3072, vocabulary 50,265,
plus the embedding head and output norm: 201 tensors, 125 M values), split into the decay and
no-decay groups the trainer builds, with fixed random gradients.

* Host time per step: the same 201 tensors in the same groups with every dimension divided by
  ``--shrink`` (64: 768 -> 12), so the arithmetic is negligible and the time is what the host
  spends issuing the step's operations. On a GPU the kernels run asynchronously and most of the
  ~200 tensors are 768-vectors whose kernels are shorter than their launches, so this is what bounds
  a GPU step. Loop LAMB, foreach LAMB and, for scale, torch's foreach AdamW.
* Wall time per step on the CPU at full size, arithmetic included (the two do the same memory
  passes, so the ratio there is near 1; foreach works in cache-sized chunks on a CPU).
* Weights after ``--steps`` steps from the same start and gradients: foreach vs loop (equal), and
  both vs ``torch_optimizer.Lamb`` (``debias=False``, the original's rule), the reference the tests
  use; and the relative error of the two norms of the word-embedding table against a float64
  reference (sum of squares, as the original, vs ``torch.linalg.vector_norm``).

Time: min of ``--reps`` interleaved repetitions in one process (ratios hold under load).

    python bench/optim.py [--quick] [--reps N] [--steps N]
"""

from __future__ import annotations

import argparse

import torch
from common import interleaved_min, machine, set_threads

from SeDR.training.optimizers import Lamb, parameter_groups

ROBERTA_BASE = dict(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    intermediate_size=3072,
    max_position_embeddings=514,
)
QUICK = dict(ROBERTA_BASE, vocab_size=5000, hidden_size=256, intermediate_size=1024)
LR, WD, EPS = 5e-5, 0.01, 1e-8


def shrunk(sizes: dict, factor: int) -> dict:
    return {k: v if k == "num_hidden_layers" else max(v // factor, 1) for k, v in sizes.items()}


def sedr_shaped(sizes: dict, device: str) -> torch.nn.Module:
    """roberta-base (no pooler) with SeDR's head: ``embeddingHead`` (768 x 768) and ``norm``."""
    from transformers import RobertaConfig, RobertaModel

    heads = 12 if sizes["hidden_size"] % 12 == 0 else 1
    cfg = RobertaConfig(**sizes, num_attention_heads=heads, type_vocab_size=1)
    with torch.device("meta"):
        model = torch.nn.Module()
        model.roberta = RobertaModel(cfg, add_pooling_layer=False)
        model.embeddingHead = torch.nn.Linear(cfg.hidden_size, cfg.hidden_size)
        model.norm = torch.nn.LayerNorm(cfg.hidden_size)
    if device == "meta":
        return model
    model = model.to_empty(device=device)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def with_gradients(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = (
            torch.empty_like(p)
            if p.device.type == "meta"
            else torch.randn(p.shape, generator=g, dtype=p.dtype) * 1e-3
        )


def lamb(model, foreach: bool) -> Lamb:
    return Lamb(parameter_groups(model, WD), lr=LR, eps=EPS, weight_decay=WD, foreach=foreach)


def host_times(sizes: dict, reps: int) -> dict[str, float]:
    models = {name: sedr_shaped(sizes, "cpu") for name in ("loop", "foreach", "adamw")}
    for m in models.values():
        with_gradients(m, 0)
    steps = {
        "loop": lamb(models["loop"], foreach=False).step,
        "foreach": lamb(models["foreach"], foreach=True).step,
        "adamw": torch.optim.AdamW(
            parameter_groups(models["adamw"], WD), lr=LR, eps=EPS, weight_decay=WD, foreach=True
        ).step,
    }
    return interleaved_min(steps, reps)


def cpu_times(sizes: dict, reps: int) -> dict[str, float]:
    base = sedr_shaped(sizes, "cpu")
    with_gradients(base, 1)
    steps = {}
    for name, foreach in (("loop", False), ("foreach", True)):
        opt = lamb(base, foreach)
        steps[name] = opt.step
    return interleaved_min(steps, reps)


def weights_after(sizes: dict, steps: int) -> dict[str, float]:
    """Largest absolute weight difference after ``steps`` steps, and the norms' relative errors."""
    import torch_optimizer

    runs = {}
    for name in ("loop", "foreach", "torch_optimizer"):
        model = sedr_shaped(sizes, "cpu")
        groups = parameter_groups(model, WD)
        if name == "torch_optimizer":
            opt = torch_optimizer.Lamb(groups, lr=LR, eps=EPS, weight_decay=WD, clamp_value=10, debias=False)
        else:
            opt = lamb(model, name == "foreach")
        for t in range(steps):
            with_gradients(model, 10 + t)
            opt.step()
        runs[name] = dict(model.named_parameters())
        del opt

    def max_diff(a: str, b: str) -> float:
        return max(float((runs[a][n] - runs[b][n]).detach().abs().max()) for n in runs[a])

    table = sedr_shaped(sizes, "cpu").roberta.embeddings.word_embeddings.weight.detach()
    exact = table.double().pow(2).sum().sqrt()
    return {
        "foreach_vs_loop": max_diff("foreach", "loop"),
        "foreach_vs_torch_optimizer": max_diff("foreach", "torch_optimizer"),
        "loop_vs_torch_optimizer": max_diff("loop", "torch_optimizer"),
        "sum_of_squares_rel_error": float((table.pow(2).sum().sqrt().double() - exact).abs() / exact),
        "vector_norm_rel_error": float((torch.linalg.vector_norm(table).double() - exact).abs() / exact),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="hidden 256, vocabulary 5,000 (same tensor count)")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 20, quick 10)")
    p.add_argument("--cpu_reps", type=int, default=3, help="repetitions of the CPU step with arithmetic")
    p.add_argument("--steps", type=int, default=3, help="steps before the weights are compared")
    p.add_argument("--shrink", type=int, default=64, help="dimension divisor of the host-time tensors")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    sizes = QUICK if args.quick else ROBERTA_BASE
    reps = args.reps or (10 if args.quick else 20)
    shapes = [p.shape for p in sedr_shaped(sizes, "meta").parameters()]
    n_tensors, n_values = len(shapes), sum(s.numel() for s in shapes)
    print(f"machine: {machine()}")
    print(
        f"SeDR on roberta-base shapes {sizes}: {n_tensors} tensors, {n_values / 1e6:.1f} M values; "
        f"LAMB lr {LR}, weight decay {WD}"
    )
    res = {"tensors": n_tensors, "values": n_values}
    host = host_times(shrunk(ROBERTA_BASE, args.shrink), reps)
    res["host_ms"] = {k: v * 1e3 for k, v in host.items()}
    print(f"host time per step (the same tensors, every dimension / {args.shrink}; min of {reps}):")
    for name, t in host.items():
        print(f"  {name:8s} {t * 1e3:8.2f} ms")
    res["host_speedup"] = host["loop"] / host["foreach"]
    print(f"RATIO host time loop / foreach LAMB = {res['host_speedup']:.2f}x")
    print(f"RATIO host time foreach LAMB / foreach AdamW = {host['foreach'] / host['adamw']:.2f}")
    cpu = cpu_times(sizes, args.cpu_reps)
    res["cpu_s"] = cpu
    res["cpu_speedup"] = cpu["loop"] / cpu["foreach"]
    print(
        f"CPU wall time per step with arithmetic (min of {args.cpu_reps}): loop {cpu['loop']:.3f} s, "
        f"foreach {cpu['foreach']:.3f} s"
    )
    print(f"RATIO CPU step time loop / foreach LAMB = {res['cpu_speedup']:.2f}x")
    w = weights_after(sizes, args.steps)
    res["weights"] = w
    print(f"weights after {args.steps} steps, largest absolute difference:")
    print(f"  foreach vs loop              {w['foreach_vs_loop']:.3e}")
    print(f"  foreach vs torch_optimizer   {w['foreach_vs_torch_optimizer']:.3e}")
    print(f"  loop vs torch_optimizer      {w['loop_vs_torch_optimizer']:.3e}")
    print(
        "word-embedding table norm, relative error against float64: "
        f"sqrt(sum of squares) {w['sum_of_squares_rel_error']:.1e}, "
        f"vector_norm {w['vector_norm_rel_error']:.1e}"
    )
    return res


if __name__ == "__main__":
    main()
