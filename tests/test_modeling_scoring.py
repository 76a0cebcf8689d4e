"""Scores, losses and the Late-Cache, against the worked examples of docs/models.md#empty-slots and
docs/training.md#late-cache-example."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from SeDR.modeling.scoring import (
    MASKED_SCORE,
    LateCache,
    cross_entropy_loss,
    cross_entropy_scores,
    max_segment_scores,
    star_pairwise_loss,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_t4_zero_slot_scoring():
    # A 2-segment document in an M = 4 matrix with q·e = (-3, -5): training max includes the zero slots.
    q = t([1.0, 0.0])
    doc = torch.zeros(1, 4, 2)
    doc[0, 0] = torch.tensor([-3.0, 0.0])
    doc[0, 1] = torch.tensor([-5.0, 1.0])
    assert max_segment_scores(q, doc).item() == 0.0
    # Inference indexes only the real segments: best segment score -3.
    assert max_segment_scores(q, doc[:, :2]).item() == -3.0


def _t5_step1():
    q = t([1, 0], [0, 1])
    pos = torch.stack([t([2, 0], [0, 0]), t([0, 1], [1, 1])])
    neg = torch.stack([t([1, 1], [0, 0]), t([-1, 0], [0, -2])])
    return q, pos, neg


def test_t5_late_cache_forward_oracle():
    cache = LateCache(50)
    q, pos, neg = _t5_step1()
    S = cross_entropy_scores(
        q, pos, neg, torch.ones(2, 2) - torch.eye(2), torch.ones(2, 2), *cache.contents(q.device)
    )
    assert torch.equal(S, t([2, 1, 1, 0], [0, 1, 1, 0]))
    loss, _ = cross_entropy_loss(S, 2)
    assert loss.item() == pytest.approx(0.816466, abs=1e-6)
    cache.push(q, pos, neg)
    assert len(cache) == 2

    q3 = t([1, 1])
    d3 = torch.stack([t([1, 0], [0, 0])])
    n3 = torch.stack([t([0, 2], [0, 0])])
    S = cross_entropy_scores(q3, d3, n3, torch.zeros(1, 1), torch.ones(1, 1), *cache.contents(q3.device))
    assert torch.equal(S, t([1, 2, 2, 2, 2, -1], [1, 2, 1, 0, 1, 0], [0, 0, 1, 2, 1, 0]))
    loss, acc = cross_entropy_loss(S, 1)
    assert loss.item() == pytest.approx(1.703983, abs=1e-6)
    assert acc.item() == 0.0  # row 0's argmax is column 1, not 0
    # n3 relevant to q3: S[0, 3] = -10000.
    S = cross_entropy_scores(q3, d3, n3, torch.zeros(1, 1), torch.zeros(1, 1), *cache.contents(q3.device))
    assert S[0, 3].item() == MASKED_SCORE
    assert cross_entropy_loss(S, 1)[0].item() == pytest.approx(1.618432, abs=1e-6)

    cache.push(q3, d3, n3)
    assert torch.equal(cache.queries, t([1, 0], [0, 1], [1, 1]))
    small = LateCache(2)
    small.push(q, pos, neg)
    small.push(q3, d3, n3)
    assert torch.equal(small.queries, t([0, 1], [1, 1]))
    assert torch.equal(small.positives[0], pos[1]) and torch.equal(small.negatives[1], n3[0])


def test_generic_layout_three_queries_cache_two():
    """Late-Cache generic case: 5 rows x 10 columns; masks only inside the current blocks; labels 0..4."""
    torch.manual_seed(0)
    d, Mx = 3, 2
    q, pos, neg = torch.randn(3, d), torch.randn(3, Mx, d), torch.randn(3, Mx, d)
    cq, cp, cn = torch.randn(2, d), torch.randn(2, Mx, d), torch.randn(2, Mx, d)
    zeros = torch.zeros(3, 3)
    S = cross_entropy_scores(q, pos, neg, zeros, zeros, cq, cp, cn)
    assert S.shape == (5, 10)
    masked = S == MASKED_SCORE
    expected = torch.zeros(5, 10, dtype=torch.bool)
    expected[:3, :3] = ~torch.eye(3, dtype=torch.bool)
    expected[:3, 5:8] = True
    assert torch.equal(masked, expected)


def test_hard_negative_block_is_general_in_h():
    """h = 2: the hard block has width B·h; compare with a brute-force loop over pairs."""
    torch.manual_seed(1)
    B, h, Mx, d = 2, 2, 3, 4
    q, pos, neg = torch.randn(B, d), torch.randn(B, Mx, d), torch.randn(B * h, Mx, d)
    cq, cp, cn = torch.randn(1, d), torch.randn(1, Mx, d), torch.randn(h, Mx, d)
    rel = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # doc 0 is relevant to query 1 as well
    hard = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    S = cross_entropy_scores(q, pos, neg, rel, hard, cq, cp, cn)
    rows = torch.cat([q, cq])
    cols = list(pos) + list(cp) + list(neg) + list(cn)
    for r in range(3):
        for c in range(len(cols)):
            want = max(float(rows[r] @ cols[c][k]) for k in range(Mx))
            if r < B and c < B and rel[r, c] == 0 and r != c:
                want = MASKED_SCORE
            if r < B and B + 1 <= c < B + 1 + B * h and hard[r, c - B - 1] == 0:
                want = MASKED_SCORE
            assert S[r, c].item() == pytest.approx(want, abs=1e-5)
    loss, _ = cross_entropy_loss(S, B)
    assert loss.item() == pytest.approx(F.cross_entropy(S, torch.arange(3)).item())
    cache = LateCache(1)
    cache.push(q, pos, neg)
    assert cache.queries.shape[0] == 1 and cache.negatives.shape[0] == h
    assert torch.equal(cache.negatives, neg[-h:])


def test_star_pairwise_loss_brute_force():
    torch.manual_seed(2)
    B, Mx, d = 3, 2, 4
    q, pos, neg = torch.randn(B, d), torch.randn(B, Mx, d), torch.randn(B, Mx, d)
    rel = torch.ones(B, B) - torch.eye(B)
    rel[2, 0] = 0  # a false negative
    hard = torch.ones(B, B)
    hard[1, 1] = 0
    loss, _ = star_pairwise_loss(q, pos, neg, rel, hard)

    def s(i, D):
        return max(float(q[i] @ D[k]) for k in range(Mx))

    total, count = 0.0, 0
    for i in range(B):
        p = s(i, pos[i])
        for j in range(B):
            if rel[i, j]:
                total += -math.log(math.exp(p) / (math.exp(p) + math.exp(s(i, pos[j]))))
                count += 1
            if hard[i, j]:
                total += -math.log(math.exp(p) / (math.exp(p) + math.exp(s(i, neg[j]))))
                count += 1
    assert loss.item() == pytest.approx(total / count, abs=1e-5)


def test_scores_stay_fp32_under_autocast():
    q = torch.randn(2, 8)
    D = torch.randn(3, 2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        S = cross_entropy_scores(
            q.bfloat16(), D[:2].bfloat16(), D[1:].bfloat16(), torch.zeros(2, 2), torch.ones(2, 2)
        )
        loss, _ = cross_entropy_loss(S, 2)
    assert S.dtype == torch.float32 and loss.dtype == torch.float32
    assert (S == MASKED_SCORE).sum().item() == 2  # the -10000 mask survives exactly in fp32


def test_late_cache_rejects_nonpositive_capacity_and_detaches():
    for bad in (0, -1):
        with pytest.raises(ValueError, match="SeDR_without_LateCache"):
            LateCache(bad)
    cache = LateCache(3)
    q = torch.randn(2, 4, requires_grad=True)
    cache.push(q * 2, torch.randn(2, 1, 4, requires_grad=True), torch.randn(2, 1, 4))
    assert not cache.queries.requires_grad and cache.queries.grad_fn is None
    state = cache.state_dict()
    other = LateCache(3)
    other.load_state_dict(state)
    assert torch.equal(other.queries, cache.queries) and len(other) == 2
    with pytest.raises(ValueError, match="capacity"):
        LateCache(4).load_state_dict(state)
