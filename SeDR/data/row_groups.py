"""Which rows of a forward pass share attention calls: :func:`plan_row_groups` buckets the rows of a
pass by width, so each layer runs every bucket at its own width (exact: only masked columns are
dropped)."""

from __future__ import annotations

import numpy as np

# Cost of one more row group of a forward pass, in processed tokens (rows x columns): the
# per-layer call overhead of a small group, measured with bench/batching.py.
ROW_GROUP_OVERHEAD = 64


def plan_row_groups(
    widths: np.ndarray, num_placeholders: int, group_overhead: int = ROW_GROUP_OVERHEAD
) -> list[tuple[np.ndarray, int]]:
    """Bucket rows of real widths ``widths`` (CLS + content + EOS) to minimise the encoder's work.

    Minimises ``Σ_g n_g · (w_g + P) + group_overhead · G`` over partitions of the rows into ``G``
    groups, ``w_g`` the widest row of group ``g``. Some optimal partition is made of runs of the
    rows sorted by width, never splitting equal widths (a swap never raises a group's maximum;
    a split adds an overhead and saves nothing), so a dynamic programme over the distinct widths
    finds it in ``O(k²)`` for ``k`` distinct widths.

    Returns:
        ``[(row indices, w_g), ...]``, groups in increasing width, rows of a group in batch order.
    """
    widths = np.asarray(widths, dtype=np.int64)
    if widths.size == 0:
        return []
    distinct, inverse = np.unique(widths, return_inverse=True)  # ascending
    k = len(distinct)
    before = np.concatenate(
        [[0], np.cumsum(np.bincount(inverse, minlength=k))]
    )  # rows narrower than distinct[i]
    best = np.zeros(k + 1, dtype=np.int64)  # best[j]: cost of the j narrowest distinct widths
    cut = np.zeros(k + 1, dtype=np.int64)  # the last group of best[j] starts at distinct width cut[j]
    for j in range(1, k + 1):
        cost = (
            best[:j] + (before[j] - before[:j]) * (distinct[j - 1] + num_placeholders) + group_overhead
        )  # (j,)
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    groups, j = [], k
    while j > 0:
        i = int(cut[j])
        rows = np.flatnonzero((inverse >= i) & (inverse < j))
        groups.append((rows, int(distinct[j - 1])))
        j = i
    return groups[::-1]
