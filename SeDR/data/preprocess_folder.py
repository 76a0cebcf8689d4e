"""Readers of the preprocess folder: token memmaps, qrels, id maps and its fingerprint
(docs/data.md#readers)."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from SeDR.core.constants import (
    PREPROCESS_RECORD,
)
from SeDR.core.errors import DataFormatError, MissingInputError
from SeDR.core.outputs import fingerprint

logger = logging.getLogger(__name__)

# Keys of preprocess_args.json written only for a collection described by files.
SPLITS_KEY = "splits"
COLLECTION_KEY = "collection"


MIN_RELEVANT = 1  # the smallest rel that makes a document relevant (the metrics' threshold too)
PREPROCESS_HINT = "run `python SeDR_preprocess.py --data_path ./data --max_seq_length 2048` first"


class TokenCache:
    """Read-only view of a preprocessed ``<prefix>.memmap`` (int32 ``[N, maxlen]``).

    ``cache[i]`` returns ``ids[i, :length[i]]``. Like the original, falls back to a ``memmap/``
    sub-folder when the files are not found directly under the folder.
    """

    def __init__(self, folder: str | Path, prefix: str):
        folder = Path(folder)
        if not (folder / f"{prefix}_meta").exists() and (folder / "memmap" / f"{prefix}_meta").exists():
            folder = folder / "memmap"
        meta_path = folder / f"{prefix}_meta"
        if not meta_path.exists():
            raise MissingInputError(meta_path, PREPROCESS_HINT)
        try:
            meta = json.loads(meta_path.read_text())
            self.total, self.width = int(meta["total_number"]), int(meta["embedding_size"])
            dtype = np.dtype(meta.get("type", "int32"))
        except (ValueError, KeyError, TypeError) as err:
            raise DataFormatError(
                meta_path, None, f"unreadable shape record ({err}); {PREPROCESS_HINT}"
            ) from None
        self.path = folder / f"{prefix}.memmap"
        want = self.total * self.width * dtype.itemsize
        have = self.path.stat().st_size if self.path.exists() else None
        if have != want:
            raise DataFormatError(
                self.path,
                None,
                f"{'missing' if have is None else f'{have} bytes'}, but "
                f"{meta_path.name} says {self.total} x {self.width} {dtype} ({want} bytes): "
                f"the folder is incomplete or truncated; {PREPROCESS_HINT}",
            )
        self.ids = np.memmap(self.path, dtype=dtype, mode="r", shape=(self.total, self.width))
        lengths_path = folder / f"{prefix}_length.npy"
        try:
            self.lengths = np.load(lengths_path).astype(np.int64)
        except (OSError, ValueError) as err:
            raise DataFormatError(lengths_path, None, f"unreadable ({err}); {PREPROCESS_HINT}") from None
        if len(self.lengths) != self.total or (
            len(self.lengths) and not 0 <= self.lengths.min() <= self.lengths.max() <= self.width
        ):
            raise DataFormatError(
                lengths_path,
                None,
                f"{len(self.lengths)} lengths in 0..{self.width} expected "
                f"{self.total} for {meta_path}; {PREPROCESS_HINT}",
            )

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[i, : self.lengths[i]], dtype=np.int64)


def passages(preprocess_dir: str | Path) -> TokenCache:
    return TokenCache(preprocess_dir, "passages")


def queries(preprocess_dir: str | Path, split: str) -> TokenCache:
    return TokenCache(preprocess_dir, f"{split}-query")


def iter_qrels(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """``(qid, docid, rel)`` strings of each line of a TREC-format qrels file ``qid iter docid rel``.

    Shared by the relevance dict here and the metric qrels of :mod:`SeDR.retrieval.evaluation`; a malformed
    line raises a :class:`DataFormatError` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, PREPROCESS_HINT)
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise DataFormatError(
                    path, line_no, f"expected `qid iter docid rel`, got {len(parts)} fields"
                )
            if not parts[3].lstrip("-").isdigit():
                raise DataFormatError(path, line_no, f"relevance {parts[3]!r} is not an integer")
            yield parts[0], parts[2], parts[3]


def load_rel(path: str | Path) -> dict[int, list[int]]:
    """Offset qrels ``qoffset \\t 0 \\t doffset \\t rel`` → ``{qoffset: [doffset, ...]}``, relevant
    documents only (``rel >= 1``, docs/data.md#relevance-dict).

    This dict feeds the training masks, positives and labels. MS MARCO's train/dev qrels are all 1, so
    every line counts there; a collection's judged non-relevant lines (``rel <= 0``) are no positives.
    Metrics read the qrels themselves.
    """
    rel: dict[int, list[int]] = {}
    for q, d, r in iter_qrels(path):
        if int(r) >= MIN_RELEVANT:
            rel.setdefault(int(q), []).append(int(d))
    return rel


def load_id_map(path: str | Path) -> dict[int, int] | dict[str, int]:
    """``pid2offset.pickle`` / ``{split}-qid2offset.pickle``: original id → offset (MS MARCO's integers,
    a collection's strings)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, PREPROCESS_HINT)
    with open(path, "rb") as f:
        return pickle.load(f)


def read_record(preprocess_dir: str | Path) -> dict:
    """``preprocess_args.json`` (settings, tokenizer, inputs; a collection's splits); ``{}`` when absent,
    as in a folder written by the original code."""
    path = Path(preprocess_dir) / PREPROCESS_RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataFormatError(path, None, f"unreadable record ({err}); {PREPROCESS_HINT}") from None
    if not isinstance(record, dict):
        raise DataFormatError(path, None, f"expected a JSON object; {PREPROCESS_HINT}")
    return record


def recorded_splits(preprocess_dir: str | Path) -> list[str] | None:
    """The split names of a folder made from a collection's files (docs/own-collection.md#preprocess);
    ``None`` for an MS MARCO folder, whose splits are ``train``, ``dev``, ``test``, ``2020test``."""
    splits = read_record(preprocess_dir).get(SPLITS_KEY)
    return list(splits) if splits is not None else None


def preprocess_fingerprint(preprocess_dir: str | Path) -> str:
    """Identity of a preprocess folder's corpus: its shape record, document lengths and settings record."""
    folder = Path(preprocess_dir)
    return fingerprint([folder / "passages_meta", folder / "passages_length.npy", folder / PREPROCESS_RECORD])
