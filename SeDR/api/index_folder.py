"""The index folder: segment-embedding files plus document ids and texts
(docs/your-documents.md#index-folder).

It holds the embedding files of an inference folder (:mod:`SeDR.retrieval.embedding_files`, with the identity
record of the model and segmentation that made them), ``doc-ids.jsonl`` and, optionally, the texts. A folder
is written beside its final name and renamed when complete, so no half index is ever under that
name, and an existing one is never replaced without ``overwrite``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import weakref
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from SeDR.core.errors import DataFormatError, MissingInputError, OutputError, SeDRInputError
from SeDR.core.outputs import KEEP, REFUSE, claim, is_taken, staged_folder
from SeDR.retrieval import embedding_files, exact_search

logger = logging.getLogger(__name__)

DOC_IDS_FILE, TEXTS_FILE, TEXT_OFFSETS_FILE = "doc-ids.jsonl", "texts.jsonl", "texts-offsets.npy"
INDEX_HINT = "build it with `python -m SeDR.index MODEL DOCS OUT`"
REBUILD_HINT = "rebuild it with `python -m SeDR.index MODEL DOCS OUT --overwrite`"


def read_index_info(path: str | Path) -> dict:
    """The identity record of an index folder (model, class, segment shape), without opening the vectors."""
    record = embedding_files.read_record(path)
    if not (Path(path) / DOC_IDS_FILE).exists() or not record:
        raise MissingInputError(Path(path) / DOC_IDS_FILE, f"{path} is not an index folder; {INDEX_HINT}")
    return dict(record.get("info", {}))


def taken_message(out: Path) -> str:
    return (
        f"{out} exists and is not empty; choose another folder, or pass --overwrite "
        "(overwrite=True) to move it to a dated backup first"
    )


def refuse_taken(out: Path, overwrite: bool) -> None:
    """The early refusal, before documents are read (:func:`new_folder` settles it again under its lock)."""
    if not overwrite and is_taken(out):
        raise OutputError(taken_message(out))


@contextlib.contextmanager
def new_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A folder written beside ``out`` and renamed into place when complete:
    never half an index, never a lost one (an earlier one moves to a dated backup then)."""
    held = claim(
        out,
        lock_in=out.parent,
        lock_name=out.name,
        earlier=lambda: [out] if is_taken(out) else [],
        when_taken=KEEP if overwrite else REFUSE,
        refusal=taken_message(out),
        what="the index",
    )
    with held, staged_folder(held) as tmp:
        yield tmp


def id_hash(doc_id: str) -> int:
    """A 64-bit hash of an id: duplicates and lookups by sorting arrays, not by a dict per document."""
    return int.from_bytes(
        hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little", signed=True
    )


class StringTable:
    """Strings by position in one UTF-8 buffer with int64 end offsets: the text plus 8 bytes per string
    (a list of str costs about 60 bytes more each, a dict to find them 100 more)."""

    def __init__(self, blob: bytes, ends: np.ndarray):
        self.blob, self.ends = blob, np.asarray(ends, dtype=np.int64)
        self._sorted = None  # (hashes ascending, positions), built on the first find()

    @classmethod
    def from_strings(cls, strings) -> StringTable:
        buf, ends = bytearray(), array("q")
        for text in strings:
            buf += text.encode("utf-8")
            ends.append(len(buf))
        return cls(bytes(buf), np.frombuffer(ends, dtype=np.int64) if len(ends) else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        start = int(self.ends[i - 1]) if i else 0
        return self.blob[start : int(self.ends[i])].decode("utf-8")

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        return isinstance(other, (StringTable, list, tuple)) and list(self) == list(other)

    __hash__ = None

    def find(self, text: str) -> int:
        """Position of ``text`` (KeyError if absent)."""
        if self._sorted is None:
            hashes = np.fromiter((id_hash(t) for t in self), dtype=np.int64, count=len(self))
            order = np.argsort(hashes, kind="stable")
            self._sorted = hashes[order], order
        hashes, order = self._sorted
        h = id_hash(text)
        lo, hi = np.searchsorted(hashes, h, "left"), np.searchsorted(hashes, h, "right")
        for i in order[lo:hi]:
            if self[i] == text:
                return int(i)
        raise KeyError(text)


def first_duplicate(hashes: np.ndarray, strings) -> tuple[int, int] | None:
    """``(first, second)`` positions of the earliest repeated string (by its second occurrence), or None;
    ``hashes`` are :func:`id_hash` of ``strings[i]``, equal hashes are compared as strings."""
    order = np.argsort(hashes, kind="stable")
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    found = []
    for j in same:
        a, b = int(order[j]), int(order[j + 1])
        if strings[a] == strings[b]:
            found.append((a, b))
    return min(found, key=lambda ab: ab[1]) if found else None


class DocumentIndex:
    """An index folder opened for search: segment vectors (memory-mapped), document ids, optional texts.

    ``temporary``: the folder lives in a private temporary folder, removed with this object.
    """

    def __init__(self, folder: str | Path, temporary: bool = False):
        self.folder = Path(folder)
        info = read_index_info(self.folder)
        self.embeddings = embedding_files.load_segment_embeddings(self.folder, hint=REBUILD_HINT)
        self.info = self.embeddings.info
        with open(self.folder / DOC_IDS_FILE, encoding="utf-8") as f:
            self.ids = StringTable.from_strings(json.loads(line) for line in f)
        if len(self.ids) != info.get("num_docs"):
            raise DataFormatError(
                self.folder / DOC_IDS_FILE,
                None,
                f"{len(self.ids)} ids for {info.get('num_docs')} indexed documents: incomplete; "
                + REBUILD_HINT,
            )
        offsets = self.folder / TEXT_OFFSETS_FILE
        self._text_offsets = np.load(offsets) if offsets.exists() else None
        # first_row[d] .. first_row[d + 1]: the rows of document d (none for an empty document)
        self.first_row = np.searchsorted(self.embeddings.doc_ids, np.arange(len(self.ids) + 1)).astype(
            np.int64
        )
        self._searcher = None
        if temporary:
            weakref.finalize(self, shutil.rmtree, str(self.folder.parent), True)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_rows(self) -> int:
        return self.embeddings.num_rows

    def offset(self, doc_id: str) -> int:
        """Position of ``doc_id`` in the index (sorted id hashes, built on first use)."""
        return self.ids.find(doc_id)

    def text(self, offset: int) -> str | None:
        """The text of document ``offset`` as it was indexed, or None if the index keeps no texts."""
        if self._text_offsets is None:
            return None
        start, end = int(self._text_offsets[offset]), int(self._text_offsets[offset + 1])
        with open(self.folder / TEXTS_FILE, "rb") as f:
            f.seek(start)
            return json.loads(f.read(end - start))

    def searcher(
        self,
        faiss_gpus: Sequence[int] | None = None,
        backend: str = "auto",
        settings: exact_search.SearchSettings | None = None,
    ):
        """The exact search index over the vectors, built once (the one place that picks a search backend)."""
        if self._searcher is None:
            self._searcher = exact_search.build_index(
                self.embeddings.vectors, faiss_gpus, backend=backend, show_progress=False, settings=settings
            )
        return self._searcher

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Copy the index to ``path``
        (refused if that holds anything, unless ``overwrite`` moves it to a backup)."""
        path = Path(path)
        if path.resolve() != self.folder.resolve():
            with new_folder(path, overwrite) as tmp:
                for f in self.folder.iterdir():
                    shutil.copy2(f, tmp / f.name)
        return path


class DocumentWriter:
    """Streams document ids (and texts with their byte offsets) into an index folder; a repeated id is
    refused when the folder is closed (ids kept as 64-bit hashes, 8 bytes per document)."""

    def __init__(self, folder: Path, keep_texts: bool):
        self.folder, self.count, self.empty = folder, 0, 0
        self.hashes = array("q")
        self.ids = open(folder / DOC_IDS_FILE, "w", encoding="utf-8")
        self.texts = open(folder / TEXTS_FILE, "wb") if keep_texts else None
        self.offsets = array("q", [0])

    def add(self, doc_id: str, text: str, num_segments: int) -> None:
        self.hashes.append(id_hash(doc_id))
        self.count += 1
        self.empty += num_segments == 0
        self.ids.write(json.dumps(doc_id, ensure_ascii=False) + "\n")
        if self.texts is not None:
            line = (json.dumps(text, ensure_ascii=False) + "\n").encode("utf-8")
            self.texts.write(line)
            self.offsets.append(self.offsets[-1] + len(line))

    def close(self) -> None:
        self.ids.close()
        if self.texts is not None:
            self.texts.close()
            np.save(self.folder / TEXT_OFFSETS_FILE, np.asarray(self.offsets, dtype=np.int64))
        hashes = np.frombuffer(self.hashes, dtype=np.int64) if self.count else np.zeros(0, np.int64)
        if len(np.unique(hashes)) != len(hashes):
            with open(self.folder / DOC_IDS_FILE, encoding="utf-8") as f:
                ids = StringTable.from_strings(json.loads(line) for line in f)
            twice = first_duplicate(hashes, ids)
            if twice:
                a, b = twice
                raise SeDRInputError(f"document id {ids[a]!r} appears twice (documents {a} and {b})")
