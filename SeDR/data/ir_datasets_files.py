"""ir_datasets as a collection source: a dataset's documents, queries and qrels written out as the
collection files that preprocessing reads (docs/own-collection.md#ir-datasets).

``ir_datasets`` is optional: it is imported only here, when ``--ir_datasets`` is given, and a missing
package or an uncached dataset that cannot be downloaded is one error line. Each ``[NAME=]ID`` names a
dataset; the corpus is the documents of the first, and every dataset with queries and qrels becomes a
split (named NAME, or the id's last component).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from SeDR.core.errors import SeDRInputError
from SeDR.core.progress import progress
from SeDR.data.preprocessing import CollectionSource, SplitSource, check_split_name

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install ir_datasets (optional; datasets are downloaded into ~/.ir_datasets on first use, or "
    "read from that cache offline)"
)


def ir_datasets_missing() -> str | None:
    """Why ``ir_datasets`` cannot be used here, or None when it can be imported."""
    try:
        import ir_datasets  # noqa: F401
    except ImportError as err:
        return f"ir_datasets is not installed ({err}); {INSTALL_HINT}"
    return None


def _load(dataset_id: str):
    reason = ir_datasets_missing()
    if reason:
        raise SeDRInputError(f"--ir_datasets {dataset_id}: {reason}")
    import ir_datasets

    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise SeDRInputError(
            f"--ir_datasets {dataset_id}: no such dataset id (list them with `ir_datasets list`)"
        ) from None


def _read(dataset_id: str, what: str, iterate):
    """``iterate()`` with any failure of the package (download, missing cache) as one error line."""
    try:
        yield from iterate()
    except SeDRInputError:
        raise
    except Exception as err:  # noqa: BLE001 - the package's errors are many (network, cache, formats)
        raise SeDRInputError(
            f"--ir_datasets {dataset_id}: ir_datasets could not read its {what} ({type(err).__name__}: {err})"
        ) from None


@dataclass(frozen=True)
class IrDatasetsSource:
    """The corpus of one dataset id and the splits of others, read through ``ir_datasets``."""

    corpus_id: str
    split_ids: tuple[tuple[str, str], ...]  # (split name, dataset id)

    @classmethod
    def from_specs(cls, specs: list[str]) -> IrDatasetsSource:
        """``[NAME=]ID`` each; checked against the datasets (docs, queries, qrels) before anything is read."""
        corpus_id, splits = None, []
        for spec in specs:
            name, _, dataset_id = spec.rpartition("=")
            ds = _load(dataset_id)
            if corpus_id is None:
                if not ds.has_docs():
                    raise SeDRInputError(f"--ir_datasets {dataset_id}: the first dataset must have documents")
                corpus_id = dataset_id
            has_split = ds.has_queries() and ds.has_qrels()
            if name and not has_split:
                raise SeDRInputError(f"--ir_datasets {spec}: the dataset has no queries with qrels")
            if has_split:
                splits.append((check_split_name(name or dataset_id.rsplit("/", 1)[-1]), dataset_id))
        return cls(corpus_id, tuple(splits))

    @property
    def splits(self) -> tuple[SplitSource, ...]:
        """Names only, for the checks made before :meth:`materialize` writes the files."""
        return tuple(SplitSource(name, Path(), Path()) for name, _ in self.split_ids)

    def record(self) -> dict:
        return {"ir_datasets": {"corpus": self.corpus_id, "splits": dict(self.split_ids)}}

    def stamps(self) -> dict[str, list[int]]:
        return {}  # the package's cache is its own; the dataset ids are recorded instead

    def materialize(self, folder: Path) -> CollectionSource:
        """``corpus.jsonl``, ``queries/NAME.jsonl`` and TREC ``qrels/NAME.tsv`` in ``folder``."""
        (folder / "queries").mkdir(parents=True)
        (folder / "qrels").mkdir()
        ds = _load(self.corpus_id)
        corpus = folder / "corpus.jsonl"
        with open(corpus, "w", encoding="utf-8") as f:
            docs = _read(self.corpus_id, "documents", ds.docs_iter)
            for doc in progress(docs, total=ds.docs_count(), desc=f"reading {self.corpus_id}", unit="doc"):
                f.write(json.dumps(document_record(doc), ensure_ascii=False) + "\n")
        splits = []
        for name, dataset_id in self.split_ids:
            ds = _load(dataset_id)
            queries, qrels = folder / "queries" / f"{name}.jsonl", folder / "qrels" / f"{name}.tsv"
            with open(queries, "w", encoding="utf-8") as f:
                for q in _read(dataset_id, "queries", ds.queries_iter):
                    f.write(json.dumps({"_id": q.query_id, "text": query_text(q)}, ensure_ascii=False) + "\n")
            with open(qrels, "w", encoding="utf-8") as f:
                for r in _read(dataset_id, "qrels", ds.qrels_iter):
                    f.write(f"{r.query_id} 0 {r.doc_id} {r.relevance}\n")
            splits.append(SplitSource(name, queries, qrels))
        logger.info("wrote %s's documents and %d split(s) into %s", self.corpus_id, len(splits), folder)
        return CollectionSource(corpus, tuple(splits))


def document_record(doc) -> dict:
    """A corpus record: ``_id``, the ``url`` and ``title`` a document class has, and its text (``body``
    for MS MARCO Document, ``text`` elsewhere, else the class's default text)."""
    fields = doc._fields
    record = {"_id": doc.doc_id}
    for key in ("url", "title"):
        if key in fields:
            record[key] = getattr(doc, key) or ""
    if "body" in fields:
        record["text"] = doc.body or ""
    elif "text" in fields:
        record["text"] = doc.text or ""
    else:
        record["text"] = doc.default_text()
    return record


def query_text(query) -> str:
    """``text`` when the query class has it, else its default text (a TREC topic's title)."""
    return (query.text if "text" in query._fields else query.default_text()) or ""
