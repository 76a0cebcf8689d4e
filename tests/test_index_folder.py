"""The index folder's per-document structures: ids as one buffer with offsets, duplicates by sorted hashes."""

import numpy as np
import pytest

from SeDR.api import index_folder


def test_string_table_holds_ids_by_position_and_finds_them():
    ids = ["D12", "été/notes", "", "a" * 300, "D12x"]
    table = index_folder.StringTable.from_strings(ids)
    assert len(table) == 5 and list(table) == ids and table == ids and table[-1] == "D12x"
    assert [table.find(i) for i in ids] == [0, 1, 2, 3, 4]
    assert table.blob == "".join(ids).encode("utf-8") and table.ends.dtype == np.int64
    with pytest.raises(KeyError):
        table.find("D1")
    with pytest.raises(IndexError):
        table[5]


def test_first_duplicate_compares_the_strings_behind_equal_hashes():
    ids = ["a", "b", "c", "b", "a"]
    hashes = np.array([index_folder.id_hash(i) for i in ids])
    assert index_folder.first_duplicate(hashes, ids) == (1, 3)  # "b" repeats first (at 3)
    collided = np.array([7, 7, 8])  # equal hashes of different ids are no duplicate
    assert index_folder.first_duplicate(collided, ["x", "y", "z"]) is None
