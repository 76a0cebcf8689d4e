"""Scores, losses and the Late-Cache Negative (docs/training.md#late-cache) as pure tensor functions.

Nothing here touches an encoder: inputs are query vectors ``(B, d)`` and per-document matrices
``(n, M, d)`` (one row per segment slot or view). All scores, masks and losses are computed in
fp32 with autocast switched off, whatever precision the encoder ran in (docs/precision.md#precision).
The only stateful piece, :class:`LateCache`, is an explicit object owned by the training loop.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# Score given to masked (false-negative) pairs; part of the loss, so kept at the original's value.
MASKED_SCORE = -10000.0


def _fp32(device: torch.device):
    """Disable autocast for the score/loss block: scores are fp32."""
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def max_segment_scores(queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """``s(q, d) = max_k q · D_d[k]`` over **all** slots of every document
    (docs/models.md#max-over-segments), fp32.

    Args:
        queries: ``(B, d)``.
        docs: ``(N, M, d)``; empty slots are whatever the class put there (zeros for most classes,
            so a short document scores at least 0 in training — docs/models.md#empty-slots).

    Returns:
        ``(B, N)`` fp32 scores.
    """
    with _fp32(queries.device):
        q, D = queries.float(), docs.float()
        per_slot = torch.einsum("bd,nmd->bnm", q, D)  # (B, N, M)
        return per_slot.amax(dim=-1)  # (B, N)


def cross_entropy_scores(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    rel_pair_mask: torch.Tensor,
    hard_pair_mask: torch.Tensor,
    cached_queries: torch.Tensor | None = None,
    cached_positives: torch.Tensor | None = None,
    cached_negatives: torch.Tensor | None = None,
    positive_offset: int = 0,
) -> torch.Tensor:
    """Masked score matrix of the in-batch + hard-negative CE loss with an optional Late-Cache
    (docs/training.md#late-cache-layout).

    Layout (``B`` queries, ``C`` cached queries, ``h`` hard negatives per query, ``C' = C·h``)::

        rows    = [q_1..q_B ; Qc_1..Qc_C]                                  (B + C)
        columns = [d_1..d_B | Dc_1..Dc_C | n_1..n_Bh | Nc_1..Nc_C']       (B + C + B·h + C')
        mask[0:B, 0:B]            = rel_pair_mask + I
        mask[0:B, B+C : B+C+B·h]  = hard_pair_mask
        S[mask == 0] = -10000; cached rows/columns are never masked.

    With ``h = 1`` this is exactly the original; the hard block has width ``B·h`` in general
    (docs/deviations.md#dev-hard-num).

    Cross-device negatives (``--negatives_x_device``): ``positives``/``negatives`` are then the
    ``N`` (``N'``) gathered over all ranks, the masks have ``N`` / ``N'`` columns, and query ``i``'s
    own positive is column ``positive_offset + i`` (this rank's first row in the gathered order).
    The cached blocks stay this rank's. With ``N = B`` and offset 0 this is the layout above.

    Returns:
        ``(B + C, N + C + N' + C')`` fp32 scores; targets in :func:`cross_entropy_labels`.
    """
    B = queries.shape[0]
    N, Nh = positives.shape[0], negatives.shape[0]
    with _fp32(queries.device):
        rows = queries.float()
        pos, neg = positives.float(), negatives.float()
        if cached_queries is not None and cached_queries.shape[0] > 0:
            rows = torch.cat([rows, cached_queries.float()])  # (B + C, d)
            pos = torch.cat([pos, cached_positives.float()])  # (N + C, M, d)
            neg = torch.cat([neg, cached_negatives.float()])  # (N' + C', M, d)
        C = rows.shape[0] - B
        scores = max_segment_scores(rows, torch.cat([pos, neg]))  # (B + C, N + C + N' + C')
        mask = torch.ones_like(scores)
        mask[:B, :N] = rel_pair_mask.float()
        own = torch.arange(B, device=scores.device)
        mask[own, own + positive_offset] = 1.0  # the own positive is the target, never masked
        mask[:B, N + C : N + C + Nh] = hard_pair_mask.float()
        return scores.masked_fill(mask == 0, MASKED_SCORE)


def cross_entropy_labels(
    num_queries: int, num_cached: int, num_positives: int, positive_offset: int = 0, device=None
) -> torch.Tensor:
    """Target column of every score row: ``positive_offset + i`` for current queries,
    ``N + c`` for cached ones.

    Without cross-device gathering (``N = B``, offset 0) this is ``arange(B + C)``, the original's labels.
    """
    current = torch.arange(num_queries, device=device) + positive_offset
    cached = torch.arange(num_cached, device=device) + num_positives
    return torch.cat([current, cached])


def cross_entropy_loss(
    scores: torch.Tensor, num_queries: int, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean CE over **all** rows (cached rows included, docs/training.md#late-cache-layout);
    by default row ``r``'s label is column ``r``.

    Returns:
        ``(loss, accuracy)``: fp32 scalars; accuracy over the first ``num_queries`` (current) rows only.
    """
    with _fp32(scores.device):
        if labels is None:
            labels = torch.arange(scores.shape[0], device=scores.device)
        loss = F.cross_entropy(scores.float(), labels)
        acc = (scores[:num_queries].argmax(dim=1) == labels[:num_queries]).float().mean()
        return loss, acc.detach()


def star_pairwise_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    rel_pair_mask: torch.Tensor,
    hard_pair_mask: torch.Tensor,
    positive_offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """STAR's pairwise softmax loss over in-batch and hard negatives (docs/training.md#star-pairwise-loss).

    ``loss = (Σ rel·softplus(S - p) + Σ hard·softplus(S' - p)) / (Σ rel + Σ hard)`` with ``p_i = S[i, i]``;
    ``softplus(x - p) = -log σ(p - x)``. The diagonal is excluded because ``rel_pair_mask`` is 0 there.

    The original's "accuracy" compared mismatched tensors (docs/deviations.md#dev-logged-values); ours is the
    fraction of queries whose positive outscores every unmasked in-batch and hard negative.

    With cross-device negatives the positives/negatives are those of all ranks and query ``i``'s
    own positive is column ``positive_offset + i``; its ``rel_pair_mask`` entry must be 0 there.

    Returns:
        ``(loss, accuracy)`` fp32 scalars.
    """
    with _fp32(queries.device):
        S = max_segment_scores(queries, positives)  # (B, N)
        S_hard = max_segment_scores(queries, negatives)  # (B, N')
        rel, hard = rel_pair_mask.float(), hard_pair_mask.float()
        own = torch.arange(S.shape[0], device=S.device)
        p = S[own, own + positive_offset][:, None]  # (B, 1)
        first = (rel * F.softplus(S - p)).sum()
        second = (hard * F.softplus(S_hard - p)).sum()
        loss = (first + second) / (rel.sum() + hard.sum())
        others = torch.cat(
            [S.masked_fill(rel == 0, float("-inf")), S_hard.masked_fill(hard == 0, float("-inf"))], 1
        )
        acc = (p.squeeze(1) > others.amax(dim=1)).float().mean()
        return loss, acc.detach()


class LateCache:
    """Late-Cache Negative (docs/training.md#late-cache):
    FIFO of the last ``capacity`` queries with their positives and negatives.

    Semantics kept from the original: entries are detached constants; the cache is
    never cleared by the model (it persists across micro-batches, optimizer steps and epochs) and is
    truncated to the last ``capacity`` entries after every push. Unlike the original it is an explicit
    object owned by the training loop, it refuses ``capacity <= 0`` (the original's ``--cache_size 0``
    silently kept the whole history, docs/training.md#late-cache-capacity) and it can be saved
    for resumable training.

    With ``h`` hard negatives per query the negatives of the cached queries are kept (``capacity·h``
    matrices, query-major), which for ``h = 1`` is the original's truncation of each list to ``capacity``.
    """

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError(
                f"Late-Cache capacity must be > 0, got {capacity}; for a run without the cache "
                "use the model class SeDR_without_LateCache"
            )
        self.capacity = int(capacity)
        self.queries: torch.Tensor | None = None  # (C, d)
        self.positives: torch.Tensor | None = None  # (C, M, d)
        self.negatives: torch.Tensor | None = None  # (C·h, M, d)

    def __len__(self) -> int:
        return 0 if self.queries is None else int(self.queries.shape[0])

    def reset(self) -> None:
        self.queries = self.positives = self.negatives = None

    def contents(
        self, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(Qc, Dc, Nc)`` on ``device`` (moved once, e.g. after :meth:`load_state_dict`),
        or Nones if empty."""
        if self.queries is None:
            return None, None, None
        if self.queries.device != device:
            self.queries, self.positives, self.negatives = (
                t.to(device) for t in (self.queries, self.positives, self.negatives)
            )
        return self.queries, self.positives, self.negatives

    def push(self, queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> None:
        """Append detached fp32 copies, then keep the last ``capacity`` queries (and their negatives)."""
        B = queries.shape[0]
        if B == 0:
            return
        if negatives.shape[0] % B:
            raise ValueError(f"{negatives.shape[0]} negatives for {B} queries: expected h per query")
        h = negatives.shape[0] // B
        q, d, n = (t.detach().float() for t in (queries, positives, negatives))
        if self.queries is not None:
            Qc, Dc, Nc = self.contents(q.device)
            q, d, n = torch.cat([Qc, q]), torch.cat([Dc, d]), torch.cat([Nc, n])
        self.queries = q[-self.capacity :]
        self.positives = d[-self.capacity :]
        self.negatives = n[-self.capacity * h :]

    def state_dict(self) -> dict:
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        return {
            "capacity": self.capacity,
            "queries": cpu(self.queries),
            "positives": cpu(self.positives),
            "negatives": cpu(self.negatives),
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"saved Late-Cache has capacity {state['capacity']}, this run {self.capacity}")
        self.queries, self.positives, self.negatives = (
            state["queries"],
            state["positives"],
            state["negatives"],
        )
