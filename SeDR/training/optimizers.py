"""Optimisers and the learning-rate schedule of the original training loop (docs/training.md#optimizer).

* :class:`Lamb` is the original's ``lamb.py`` in its used mode: no bias correction, decay inside
  the update, trust ratio ``min(||p||, 10) / ||u||`` (1 when either norm is 0), as the original
  (docs/training.md#lamb).
* :class:`TransformersAdamW` is transformers 4.x's ``AdamW`` (gone from 5.x), the original ADORE
  stage's optimizer: decay after the Adam step, on the updated weights.
* :func:`parameter_groups` applies weight decay to every parameter whose name contains neither
  ``bias`` nor ``LayerNorm.weight``; the output ``norm.weight`` is therefore decayed, as in the original.
* :func:`total_training_steps` is the original's step estimate (it assumes every positive has ``M``
  segments, docs/training.md#schedule-horizon) and :func:`linear_schedule_with_warmup` is
  HF's linear schedule.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

logger = logging.getLogger(__name__)

# LAMB constants of the original lamb.py: its own betas (the --adam_beta flags are
# only read by AdamW) and the clamp of the weight norm in the trust ratio.
LAMB_BETAS = (0.9, 0.999)
LAMB_MAX_WEIGHT_NORM = 10.0
# Substrings of parameter names that get no weight decay (docs/training.md#weight-decay-groups).
NO_DECAY_KEYS = ("bias", "LayerNorm.weight")
OPTIMIZERS = ("lamb", "adamw", "transformers_adamw")
# Values per foreach chunk on a CPU (about 1 MiB of float32 per list: temporaries stay in cache).
CPU_FOREACH_VALUES = 1 << 18


def _check_hyperparameters(lr: float, eps: float, betas) -> None:
    if lr < 0.0:
        raise ValueError(f"invalid learning rate {lr}")
    if eps < 0.0:
        raise ValueError(f"invalid epsilon {eps}")
    if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
        raise ValueError(f"invalid betas {betas}")


class _AdamMoments(torch.optim.Optimizer):
    """The moments both optimisers share: per parameter with a gradient, update the Adam moments
    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2`` and hand them to :meth:`_apply`.

    ``foreach`` runs every per-tensor operation of a step on a whole list of tensors at once
    (``torch._foreach_*``: a few kernel launches per step instead of a few per tensor, which is what
    bounds a GPU step of ~200 tensors, docs/training.md#lamb-foreach); subclasses that implement
    :meth:`_apply_foreach` use it, the others fall back to the per-tensor loop.
    """

    def __init__(
        self, params: Iterable, lr: float, betas: tuple[float, float], eps: float, foreach: bool, **defaults
    ):
        _check_hyperparameters(lr, eps, betas)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, **defaults))
        self.foreach = bool(foreach)  # not a group key: saved optimizer states stay as they were

    def _members(self, group: dict) -> list[_Chunk]:
        """The group's parameters that have a gradient, with their state (created on first use and
        its step counted), in chunks for the foreach calls (:class:`_Chunk`)."""
        chunks: list[_Chunk] = []
        open_chunks: dict[tuple, _Chunk] = {}
        for p in group["params"]:
            if p.grad is None:  # no gradient: no state, no update
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            key = (p.device, p.dtype)
            chunk = open_chunks.get(key)
            if chunk is None or (p.device.type == "cpu" and chunk.values >= CPU_FOREACH_VALUES):
                chunk = open_chunks[key] = _Chunk()
                chunks.append(chunk)
            chunk.add(p, state)
        return chunks

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        foreach = self.foreach and type(self)._apply_foreach is not _AdamMoments._apply_foreach
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for c in self._members(group):
                if foreach:
                    torch._foreach_mul_(c.exp_avgs, beta1)
                    torch._foreach_add_(c.exp_avgs, c.grads, alpha=1.0 - beta1)
                    torch._foreach_mul_(c.exp_avg_sqs, beta2)
                    torch._foreach_addcmul_(c.exp_avg_sqs, c.grads, c.grads, value=1.0 - beta2)
                    self._apply_foreach(c.params, c.exp_avgs, c.exp_avg_sqs, group)
                    continue
                for p, m, v, t in zip(c.params, c.exp_avgs, c.exp_avg_sqs, c.steps):
                    m.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                    v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                    self._apply(p, m, v, t, group)
        return loss

    def _apply(self, p, m, v, t: int, group: dict) -> None:
        raise NotImplementedError

    def _apply_foreach(self, params: list, m: list, v: list, group: dict) -> None:
        raise NotImplementedError


class _Chunk:
    """Parameters of one (device, dtype), in order, with their gradients and moments: a foreach call
    takes tensors of one kind.

    On a CPU consecutive tensors are also cut into chunks of about :data:`CPU_FOREACH_VALUES`
    values, so the temporaries of a chunk stay in cache (one foreach pass over all of roberta-base
    streams every temporary through memory and is slower than the loop); on a GPU one chunk per kind
    keeps the launches few. The arithmetic on each tensor is the same either way.
    """

    __slots__ = ("params", "grads", "exp_avgs", "exp_avg_sqs", "steps", "values")

    def __init__(self):
        self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, self.steps = [], [], [], [], []
        self.values = 0

    def add(self, p: torch.Tensor, state: dict) -> None:
        self.params.append(p)
        self.grads.append(p.grad)
        self.exp_avgs.append(state["exp_avg"])
        self.exp_avg_sqs.append(state["exp_avg_sq"])
        self.steps.append(state["step"])
        self.values += p.numel()


def sum_of_squares_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``sqrt(sum(t * t))`` of every tensor, as one vector: the original LAMB's norm.

    ``torch.linalg.vector_norm`` reduces differently and is less accurate in float32 on large
    tensors (9e-7 relative error on roberta-base's word-embedding table against 8e-8 for the sum of
    squares, docs/training.md#lamb-foreach).
    """
    return torch.stack([t.sum() for t in torch._foreach_mul(tensors, tensors)]).sqrt()


def _trust_ratio(weight_norm: torch.Tensor, update_norm: torch.Tensor) -> torch.Tensor:
    """``weight_norm / update_norm``, and 1 where either is 0 (no host sync: ``torch.where``)."""
    return torch.where(
        (weight_norm > 0) & (update_norm > 0),
        weight_norm / update_norm.clamp(min=torch.finfo(update_norm.dtype).tiny),
        torch.ones_like(weight_norm),
    )


class Lamb(_AdamMoments):
    """LAMB without bias correction, exactly as the original's ``lamb.py`` (docs/training.md#lamb).

    Per parameter ``p`` with gradient ``g``::

        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        u  = m / (sqrt(v) + eps) + wd p
        r  = min(||p||, 10) / ||u||   (1 if either norm is 0; ||x|| = sqrt(sum x^2))
        p <- p - lr r u

    ``foreach=True`` (the default) runs the same operations on all tensors of a group at once;
    ``foreach=False`` is the per-tensor loop (same weights, tested).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = LAMB_BETAS,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_weight_norm: float = LAMB_MAX_WEIGHT_NORM,
        foreach: bool = True,
    ):
        super().__init__(
            params, lr, betas, eps, foreach, weight_decay=weight_decay, max_weight_norm=max_weight_norm
        )

    def _apply(self, p, m, v, t: int, group: dict) -> None:
        update = m / (v.sqrt() + group["eps"])  # no bias correction
        if group["weight_decay"] != 0:
            update.add_(p, alpha=group["weight_decay"])
        weight_norm = p.pow(2).sum().sqrt().clamp(max=group["max_weight_norm"])
        update_norm = update.pow(2).sum().sqrt()
        p.sub_(update * (group["lr"] * _trust_ratio(weight_norm, update_norm)))

    def _apply_foreach(self, params: list, m: list, v: list, group: dict) -> None:
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(m, denom)  # no bias correction
        del denom
        if group["weight_decay"] != 0:
            torch._foreach_add_(update, params, alpha=group["weight_decay"])
        norms = sum_of_squares_norms([*params, *update])  # weights, then updates
        weight_norm, update_norm = (
            norms[: len(params)].clamp(max=group["max_weight_norm"]),
            norms[len(params) :],
        )
        step = group["lr"] * _trust_ratio(weight_norm, update_norm)  # one per tensor
        torch._foreach_mul_(update, list(step.unbind()))
        torch._foreach_sub_(params, update)


class TransformersAdamW(_AdamMoments):
    """AdamW as transformers 4.x shipped it (``transformers.AdamW``, removed in 5.x).

    Per parameter, at step ``t``::

        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        p <- p - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
        p <- p - lr wd p                     # decay after the step, on the updated weights

    torch's AdamW decays first and adds ``eps`` to the bias-corrected ``sqrt(v)``; the two differ
    in those places only.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr, betas, eps, foreach=False, weight_decay=weight_decay)

    def _apply(self, p, m, v, t: int, group: dict) -> None:
        beta1, beta2 = group["betas"]
        step_size = group["lr"] * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def decays(name: str) -> bool:
    """Whether the parameter called ``name`` gets weight decay."""
    return not any(key in name for key in NO_DECAY_KEYS)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two optimiser groups: decayed parameters and the ``bias`` / ``LayerNorm.weight`` ones.

    Every parameter of the model is included (as in the original), frozen ones too; empty groups
    are dropped. Each group carries ``param_names`` for logging and checks.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if decays(name) else no_decay).append((name, p))
    groups = []
    for members, wd in ((decay, weight_decay), (no_decay, 0.0)):
        if members:
            groups.append(
                {
                    "params": [p for _, p in members],
                    "param_names": [n for n, _ in members],
                    "weight_decay": wd,
                }
            )
    return groups


def build_optimizer(
    name: str,
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    eps: float = 1e-8,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """``lamb`` (the README's choice), ``adamw`` (torch AdamW) or ``transformers_adamw``
    (:class:`TransformersAdamW`).

    As in the original, LAMB ignores ``betas`` (the ``--adam_beta*`` flags) and uses (0.9, 0.999).
    """
    groups = parameter_groups(model, weight_decay)
    if name == "lamb":
        if tuple(betas) != LAMB_BETAS:
            logger.warning(
                "LAMB uses betas %s as in the original; --adam_beta1/2 = %s only apply to AdamW",
                LAMB_BETAS,
                tuple(betas),
            )
        return Lamb(groups, lr=lr, betas=LAMB_BETAS, eps=eps, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    if name == "transformers_adamw":
        return TransformersAdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")


def total_training_steps(
    n_queries: int, num_epochs: float, max_seg_num: int, max_bsize: int, grad_accum: int
) -> int:
    """The original's schedule horizon ``floor(n · epochs · M / (max_bsize · accum))``
    (docs/training.md#schedule-horizon).

    It assumes every positive fills ``M`` segments, so it overestimates the real number of steps
    (it sets the LR decay). The Longformer script omits ``M``: pass ``max_seg_num=1``.
    """
    numerator, denominator = n_queries * num_epochs * max_seg_num, max_bsize * grad_accum
    if isinstance(numerator, int):
        return numerator // denominator
    return math.floor(numerator / denominator)


def linear_warmup_decay(step: float, warmup: int, total: int) -> float:
    """LR multiplier of HF ``get_linear_schedule_with_warmup`` after ``step`` optimizer steps."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


def linear_schedule_with_warmup(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, last_epoch: int = -1
) -> LambdaLR:
    """Linear warm-up to the peak LR over ``warmup`` steps, then linear decay to 0 at ``total``.

    Same values as transformers' ``get_linear_schedule_with_warmup`` (tested); a
    :func:`functools.partial` keeps the scheduler picklable for resumable training states.
    """
    factor = functools.partial(linear_warmup_decay, warmup=int(warmup), total=int(total))
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)
