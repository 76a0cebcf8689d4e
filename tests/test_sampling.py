"""Batching: hard-negative segment caps, positive packing, the seeded sampler and its rank shards,
inference batches, and the row-group plan."""

import numpy as np
import pytest

from SeDR.data import row_groups, sampling


def plan_cost(groups, widths, P, overhead):
    return sum(len(rows) * (max(widths[r] for r in rows) + P) + overhead for rows in groups)


def set_partitions(items):
    """Every partition of ``items`` into non-empty blocks (Bell(n) of them)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        yield [[first], *part]
        for k in range(len(part)):
            yield [*part[:k], [first, *part[k]], *part[k + 1 :]]


def test_hard_negative_caps():
    assert sampling.cap_hard_negative_segments([4, 4, 4, 4, 4], 17) == [4, 4, 4, 4, 1]
    assert sampling.cap_hard_negative_segments([2, 1, 3], 17) == [2, 1, 3]


def test_positive_packing():
    counts = [4, 4, 4, 4, 3, 1, 2, 4, 4, 4, 1, 1, 20]
    groups = sampling.pack_by_segment_budget(counts, 17)
    sizes = [[counts[i] for i in g] for g in groups]
    assert sizes[0] == [4, 4, 4, 4]  # adding the 3 would give 19
    assert sizes[1] == [3, 1, 2, 4, 4]  # 14; adding the next 4 would give 18 > 17
    assert sizes[2] == [4, 1, 1]
    assert sizes[3] == [20]  # larger than the budget: alone
    assert [i for g in groups for i in g] == list(range(len(counts)))


def test_sampler_epoch_is_a_seeded_permutation():
    n = 50
    rel = {q: [q, q + 100] for q in range(n)}
    hard = {q: list(range(200, 210)) for q in range(n)}
    counts = np.ones(300, dtype=int) * 2
    s1 = sampling.SegmentBudgetBatchSampler(range(n), rel, hard, counts, max_bsize=7, hardneg_topk=3, seed=1)
    s2 = sampling.SegmentBudgetBatchSampler(range(n), rel, hard, counts, max_bsize=7, hardneg_topk=3, seed=1)
    e0 = [it for b in s1 for it in b]
    assert sorted(it.query for it in e0) == list(range(n))
    assert [it for b in s2 for it in b] == e0
    assert all(it.positive in rel[it.query] and it.negatives[0] in range(200, 203) for it in e0)
    assert all(len(b) == 3 for b in list(s1)[:-1])  # 3 positives of 2 segments fit in 7
    s1.set_epoch(1)
    e1 = [it.query for b in s1 for it in b]
    assert sorted(e1) == list(range(n)) and e1 != [it.query for it in e0]


def test_queries_without_hard_negatives_have_one_message():
    """The sampler and the training loop (which adds the file's name) say it in the same words."""
    hard = {1: [5], 2: [], 4: [6]}
    expected = (
        "2 training queries have no hard negatives (e.g. query offset 2); "
        "regenerate them with `SeDR/inference.py --gen_hardneg`"
    )
    assert sampling.without_hard_negatives([1, 2, 3, 4], hard) == expected
    assert sampling.without_hard_negatives([4, 1], hard) is None
    rel = {q: [q] for q in range(5)}
    with pytest.raises(ValueError) as err:
        sampling.SegmentBudgetBatchSampler(
            [1, 2, 3, 4], rel, hard, np.ones(10, int), max_bsize=4, hardneg_topk=1
        )
    assert str(err.value) == expected


def test_document_batches_pack_in_offset_order():
    counts = np.array([4, 4, 1, 3, 2, 4])
    assert list(sampling.document_batches(counts, 8)) == [[0, 1], [2, 3, 4], [5]]
    assert list(sampling.document_batches(counts, 8, start=2, end=5)) == [[2, 3, 4]]


def test_sampler_shards_the_plan_across_ranks():
    n = 40
    rel = {q: [q] for q in range(n)}
    hard = {q: [n + q] for q in range(n)}
    counts = np.array([1, 2, 3, 4] * 40)
    full = sampling.SegmentBudgetBatchSampler(
        range(n), rel, hard, counts, max_bsize=6, hardneg_topk=1, seed=3
    )
    ranks = [
        sampling.SegmentBudgetBatchSampler(
            range(n), rel, hard, counts, max_bsize=6, hardneg_topk=1, seed=3, rank=r, world_size=2
        )
        for r in range(2)
    ]
    plan = full.plan()
    assert len(ranks[0]) == len(ranks[1]) == len(plan) // 2
    assert (
        list(ranks[0]) == plan[0 : 2 * (len(plan) // 2) : 2]
        and list(ranks[1]) == plan[1 : 2 * (len(plan) // 2) : 2]
    )


def test_row_group_plan_hand_oracle():
    # widths 10, 10, 30, 31 with P = 3: one group 4·34 + o; {10,10}{30,31} 2·13 + 2·34 + 2o;
    # all apart 26 + 33 + 34 + 3o.
    w = np.array([30, 10, 31, 10])
    plan = row_groups.plan_row_groups(w, 3, group_overhead=5)  # 141 vs 104 vs 108
    assert [(rows.tolist(), width) for rows, width in plan] == [([1, 3], 10), ([0, 2], 31)]
    plan = row_groups.plan_row_groups(w, 3, group_overhead=0)  # 136 vs 94 vs 93
    assert [(rows.tolist(), width) for rows, width in plan] == [([1, 3], 10), ([0], 30), ([2], 31)]
    assert [rows.tolist() for rows, _ in row_groups.plan_row_groups(w, 3, group_overhead=100)] == [
        [0, 1, 2, 3]
    ]
    assert row_groups.plan_row_groups(np.zeros(0, dtype=int), 3) == []


@pytest.mark.parametrize("seed", range(6))
def test_row_group_plan_is_a_minimum_cost_partition(seed):
    """The plan covers every row once, each group's width is its widest row, and no partition costs less."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 8))
    widths = rng.choice([3, 5, 9, 17, 40, 41], size=n)
    P, overhead = int(rng.integers(0, 4)), int(rng.choice([0, 4, 20, 60]))
    plan = row_groups.plan_row_groups(widths, P, overhead)
    assert sorted(np.concatenate([rows for rows, _ in plan]).tolist()) == list(range(n))
    assert all(w == widths[rows].max() for rows, w in plan)
    brute = min(plan_cost(g, widths, P, overhead) for g in set_partitions(list(range(n))))
    assert plan_cost([rows.tolist() for rows, _ in plan], widths, P, overhead) == brute
