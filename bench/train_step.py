"""Cost of one optimiser step of SeDR: Late-Cache size 0 vs 50, gradient checkpointing off vs on,
rows grouped by width (what SeDR/training/loop.py does) vs every row padded to ``T`` (the original).

Configurations (same random weights, same MS MARCO-like training batch, LAMB):

* ``cache 0``: ``SeDR_without_LateCache`` (the encoder of SeDR without the cache; ``SeDR`` refuses
  ``--cache_size 0``);
* ``cache 50``: ``SeDR`` whose Late-Cache already holds 50 queries with their documents, so every
  query scores 50 more positives and 50·h more hard negatives (as after the first steps of a run);
* ``cache 50 + ckpt``: the same with gradient checkpointing;
* ``cache 50, padded``: ``cache 50`` with every document row padded to ``T`` as the original did
  (the others are collated as the trainer does: ``row_groups=True``,
  SeDR.data.row_groups.plan_row_groups).

Time: min of ``--reps`` interleaved steps in one process, one torch thread by default
(ratios to ``cache 0``). Memory: each configuration runs again in a fresh subprocess that resets the
kernel's peak-RSS mark (``/proc/self/clear_refs``) just before its steps and reports peak RSS minus
the RSS at that point, i.e. the extra resident memory of forward + backward + optimiser step
(activations, gradients, optimiser state, allocator slack). Falls back to ``ru_maxrss`` deltas where
clear_refs is missing.

Collation overlapped vs in line: one pass of the trainer's loader (the sampler's plan of MS
MARCO-like micro-batches of ``--max_bsize`` positive segments, ``TrainCollator``) feeding forward +
backward + LAMB of a one-layer SeDR with hidden size 32 and Late-Cache 50 on the CPU (whose step is
still far longer than the collation at 512-token rows), with ``DataLoader(num_workers=0)``
(collation in line, as ``--num_workers 0``) and with ``--workers`` collating processes
(``--num_workers N``), epochs interleaved; throughput in micro-batches/s after the first batch, and
the wait for the first batch apart (workers start every epoch; an MS MARCO epoch has ~50,000
micro-batches). The same loaders also feed a GPU stand-in: a wait of
``--gpu_step_ms`` (20 ms, about a bf16 step at the README's sizes on an H200) in place of the step,
as the host waits while a GPU computes; that is where the overlap pays.

    python bench/train_step.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from common import interleaved_min, machine, msmarco_like_documents, random_models, set_threads

from SeDR.data.batches import TrainBatch
from SeDR.data.collation import TrainCollator, collate_queries
from SeDR.data.sampling import ItemDataset, SegmentBudgetBatchSampler
from SeDR.data.segmentation import SegmentSpec, collate_documents, num_segments
from SeDR.training.optimizers import build_optimizer

CONFIGS = {  # name -> (model class, cache size, gradient checkpointing, rows grouped by width)
    "cache 0": ("SeDR_without_LateCache", 0, False, True),
    "cache 50": ("SeDR", 50, False, True),
    "cache 50 + ckpt": ("SeDR", 50, True, True),
    "cache 50, padded": ("SeDR", 50, False, False),
}
MAX_QUERY_LENGTH = 24


def sizes(args) -> dict:
    if args.quick:
        return dict(hidden=64, layers=2, max_seg_length=256, batch=4)
    return dict(hidden=128, layers=4, max_seg_length=512, batch=8)


def train_batch(
    spec: SegmentSpec, batch: int, hard: int, rng: np.random.Generator, grouped: bool
) -> TrainBatch:
    docs = msmarco_like_documents(batch * (1 + hard), spec, rng)
    queries = [
        np.concatenate([[0], rng.integers(5, 1000, size=int(rng.integers(6, 20))), [2]]) for _ in range(batch)
    ]
    return TrainBatch(
        queries=collate_queries(queries, range(batch), MAX_QUERY_LENGTH),
        positives=collate_documents(docs[:batch], range(batch), spec, row_groups=grouped),
        negatives=collate_documents(docs[batch:], range(batch, len(docs)), spec, row_groups=grouped),
        rel_pair_mask=1 - torch.eye(batch),  # (B, B)
        hard_pair_mask=torch.ones(batch, batch * hard),  # (B, B·h)
    )


def setup(name: str, args) -> tuple:
    """Model, optimiser, cache and batch of one configuration, the cache already full."""
    cls, cache_size, ckpt, grouped = CONFIGS[name]
    sz = sizes(args)
    spec = SegmentSpec(sz["max_seg_length"], args.max_seg_num)
    model = random_models(
        [cls],
        max_seg_num=args.max_seg_num,
        hidden=sz["hidden"],
        layers=sz["layers"],
        heads=4,
        device=args.device,
        gradient_checkpointing=ckpt,
        **({"cache_size": cache_size} if cache_size else {}),
    )[cls]
    if ckpt:
        model.gradient_checkpointing_enable()
    model.train()
    opt = build_optimizer("lamb", model, lr=1e-6, weight_decay=0.01)
    batch = train_batch(spec, sz["batch"], args.hard, np.random.default_rng(0), grouped).to(args.device)
    cache = model.new_cache()
    if cache is not None:
        g = torch.Generator().manual_seed(1)
        d = model.embedding_dim
        for _ in range(-(-cache_size // sz["batch"])):  # fill to capacity with stand-in entries
            B, M, h = sz["batch"], args.max_seg_num, args.hard
            cache.push(
                torch.randn(B, d, generator=g),
                torch.randn(B, M, d, generator=g),
                torch.randn(B * h, M, d, generator=g),
            )
        assert len(cache) == cache_size
    return model, opt, cache, batch


def step_fn(model, opt, cache, batch):
    def step():
        opt.zero_grad(set_to_none=True)
        out = model(batch, cache=cache)
        out.loss.backward()
        opt.step()
        return out

    return step


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def child(name: str, args) -> None:
    """Peak extra memory of ``args.mem_steps`` steps of one configuration, as JSON on stdout."""
    model, opt, cache, batch = setup(name, args)
    step = step_fn(model, opt, cache, batch)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(args.mem_steps):
            step()
        print(
            json.dumps(
                {"peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20, "how": "cuda allocator"}
            )
        )
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base, how = rss_kib(), "peak RSS (VmHWM after clear_refs) - RSS before"
        read = hwm_kib
    except OSError:
        base, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss delta"
        read = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    for _ in range(args.mem_steps):
        step()
    print(json.dumps({"peak_mib": (read() - base) / 1024, "how": how}))


class _Tokens(list):
    """Token arrays indexed by offset, as the collator reads a ``TokenCache``."""


def collation_overlap(args) -> dict[str, float]:
    """Micro-batches/s of one epoch of the trainer's loader + step, collation in line vs in workers."""
    sz = sizes(args)
    spec = SegmentSpec(sz["max_seg_length"], args.max_seg_num)
    rng = np.random.default_rng(3)
    n_docs, n_queries = 600, args.loader_queries
    passages = _Tokens(msmarco_like_documents(n_docs, spec, rng))
    queries = _Tokens(
        np.concatenate([[0], rng.integers(5, 1000, size=int(rng.integers(6, 20))), [2]])
        for _ in range(n_queries)
    )
    rel = {q: [int(q % n_docs)] for q in range(n_queries)}
    hard = {q: [int(d) for d in rng.choice(n_docs, size=200, replace=False)] for q in range(n_queries)}
    counts = np.asarray(num_segments(np.array([len(d) for d in passages]), spec), dtype=np.int64)
    sampler = SegmentBudgetBatchSampler(
        list(rel), rel, hard, counts, max_bsize=args.max_bsize, hardneg_topk=100
    )
    model = random_models(
        ["SeDR"],
        max_seg_num=args.max_seg_num,
        hidden=32,
        layers=1,
        heads=2,
        device=args.device,
        cache_size=50,
    )["SeDR"].train()
    opt = build_optimizer("lamb", model, lr=1e-6, weight_decay=0.01)
    cache = model.new_cache()
    collator = TrainCollator(
        passages,
        queries,
        rel,
        spec,
        max_query_length=MAX_QUERY_LENGTH,
        max_bsize=args.max_bsize,
        row_groups=True,
        **model.special_ids,
    )

    def cpu_step(batch):
        opt.zero_grad(set_to_none=True)
        model(batch.to(args.device), cache=cache).loss.backward()
        opt.step()

    def gpu_stand_in(batch):
        time.sleep(args.gpu_step_ms / 1e3)  # the host waits while the GPU runs the step

    def epoch(loader, step, limit: int) -> tuple[float, float]:
        """(seconds to the first batch, seconds per micro-batch after it) over ``limit`` micro-batches."""
        t0 = time.perf_counter()
        it = iter(loader)
        first = next(it)
        t1 = time.perf_counter()
        step(first)
        for _, batch in zip(range(limit - 1), it):
            step(batch)
        t2 = time.perf_counter()
        del it  # stops the workers
        return t1 - t0, (t2 - t1) / limit

    workers = f"{args.workers} worker{'s' * (args.workers > 1)}"
    loaders = {
        name: torch.utils.data.DataLoader(
            ItemDataset(), batch_sampler=sampler, collate_fn=collator, num_workers=n
        )
        for name, n in (("in line", 0), (workers, args.workers))
    }
    n = len(sampler)
    kinds = {
        "CPU step": (cpu_step, min(n, args.cpu_batches)),
        f"{args.gpu_step_ms:g} ms GPU stand-in": (gpu_stand_in, n),
    }
    schemes = [(kind, name) for kind in kinds for name in loaders]
    best = {sch: (float("inf"), float("inf")) for sch in schemes}
    for rep in range(args.loader_reps):  # interleaved, rotating order; each keeps its fastest
        for kind, name in schemes[rep % len(schemes) :] + schemes[: rep % len(schemes)]:
            step, limit = kinds[kind]
            start, per = epoch(loaders[name], step, limit)
            best[kind, name] = (min(best[kind, name][0], start), min(best[kind, name][1], per))
    collate_s = min(_timed(lambda: [collator(items) for items in sampler.local_plan()]) for _ in range(2)) / n
    print(
        f"loader: micro-batches of <= {args.max_bsize} positive segments (+ hard negatives) of "
        f"{sz['max_seg_length']} tokens, {n} in the plan; "
        f"collation alone {collate_s * 1e3:.1f} ms per micro-batch"
    )
    out = {"collation_ms": collate_s * 1e3}
    for (kind, name), (start, per) in best.items():
        print(
            f"  {kind + ', ' + name:34s} {1 / per:7.2f} micro-batches/s after the first "
            f"(first batch after {start * 1e3:.0f} ms; {kinds[kind][1]} micro-batches, "
            f"min of {args.loader_reps})"
        )
    for kind in kinds:
        ratio = best[kind, "in line"][1] / best[kind, workers][1]
        out[f"overlap speed-up, {kind}"] = ratio
        print(f"RATIO throughput collation overlapped ({workers}) / in line, {kind}: {ratio:.3f}")
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--reps", type=int, default=None, help="timed steps per configuration (default 12, quick 10)"
    )
    p.add_argument("--max_seg_num", type=int, default=4)
    p.add_argument("--hard", type=int, default=1, help="hard negatives per query")
    p.add_argument("--mem_steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--max_bsize", type=int, default=17, help="loader: positive segments per micro-batch")
    p.add_argument("--workers", type=int, default=1, help="loader: collating processes (--num_workers)")
    p.add_argument(
        "--loader_queries", type=int, default=None, help="loader: queries per epoch (160, quick 60)"
    )
    p.add_argument("--loader_reps", type=int, default=3, help="loader: interleaved epochs per scheme")
    p.add_argument(
        "--cpu_batches", type=int, default=12, help="loader: micro-batches timed with the CPU step"
    )
    p.add_argument("--gpu_step_ms", type=float, default=20.0, help="loader: the GPU stand-in's step")
    p.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.child:
        return child(args.child, args)

    reps = args.reps or (10 if args.quick else 12)
    args.loader_queries = args.loader_queries or (300 if args.quick else 1000)
    sz = sizes(args)
    print(f"machine: {machine()}")
    print(
        f"batch {sz['batch']} queries x (1 positive + {args.hard} hard negative) MS MARCO-like documents, "
        f"(Lraw, M) = ({sz['max_seg_length']}, {args.max_seg_num}), hidden {sz['hidden']}, "
        f"{sz['layers']} layers, "
        f"LAMB, {args.device}; time: min of {reps} interleaved steps"
    )
    setups = {n: setup(n, args) for n in CONFIGS}
    times = interleaved_min({n: step_fn(*s) for n, s in setups.items()}, reps, args.device)
    del setups
    mem = {}
    for n in CONFIGS:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            n,
            "--max_seg_num",
            str(args.max_seg_num),
            "--hard",
            str(args.hard),
            "--mem_steps",
            str(args.mem_steps),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ] + (["--quick"] * args.quick)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        mem[n] = json.loads(out.strip().splitlines()[-1])
    for n in CONFIGS:
        print(f"  {n:16s} step {times[n]:6.3f} s   peak extra memory {mem[n]['peak_mib']:7.1f} MiB")
    print(
        f"memory measured as: {mem['cache 0']['how']}, {args.mem_steps} steps, "
        "fresh process per configuration"
    )
    t0, m0 = times["cache 0"], mem["cache 0"]["peak_mib"]
    res = {}
    for n in ("cache 50", "cache 50 + ckpt"):
        res[n] = times[n] / t0
        print(
            f"RATIO step time {n} / cache 0 = {times[n] / t0:.3f}   peak memory {n} / cache 0 = "
            f"{mem[n]['peak_mib'] / m0:.3f}"
        )
    tc, mc = times["cache 50"], mem["cache 50"]["peak_mib"]
    print(
        f"RATIO gradient checkpointing on / off (cache 50): step time {times['cache 50 + ckpt'] / tc:.3f}, "
        f"peak memory {mem['cache 50 + ckpt']['peak_mib'] / mc:.3f}"
    )
    tp, mp_ = times["cache 50, padded"], mem["cache 50, padded"]["peak_mib"]
    res["grouped speed-up"] = tp / tc
    print(
        f"RATIO rows grouped by width over padded to T (cache 50): speed-up {tp / tc:.3f}, "
        f"peak memory grouped / padded {mc / mp_:.3f}"
    )
    res.update(collation_overlap(args))
    return res


if __name__ == "__main__":
    main()
