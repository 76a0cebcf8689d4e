"""A collection described by files: corpus, queries and qrels in the BEIR / ir_datasets layouts
(docs/own-collection.md#file-formats).

* corpus: ``.jsonl`` with ``_id`` (or ``id``), ``text`` and optional ``title`` and ``url``; the
  own-documents ``.tsv`` (``id, url, title, body``); or a folder of ``.txt`` files (id = path
  without ``.txt``);
* queries: ``.jsonl`` with ``_id`` (or ``id``) and ``text``, or ``.tsv`` ``qid<TAB>text``;
* qrels: TREC ``qid iter docid rel`` or BEIR ``query-id corpus-id score`` under its header line.

Ids are strings kept exactly (``/``, ``#``, any Unicode); an id holding whitespace is refused,
since run and qrels files are whitespace-separated. Only judged queries are kept, in query-file
order, as for MS MARCO (docs/data.md#offsets). Every error is one line naming the file and the line
(docs/data.md#bad-input-policy).
"""

from __future__ import annotations

import json
import logging
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from SeDR.core.errors import DataFormatError, MissingInputError, SeDRInputError
from SeDR.core.progress import progress
from SeDR.data.msmarco_files import SplitInput, decode_line, document_text

logger = logging.getLogger(__name__)

ID_KEYS = ("_id", "id")  # BEIR writes _id, ir_datasets exports and the Retriever's files id
# Corpus fields joined into the document text, in this order, when the record has them: MS MARCO's
# url</s>title</s>body for a record with all three (docs/own-collection.md#document-text).
TEXT_KEYS = ("url", "title", "text")
BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")
CORPUS_FORMATS = "a .jsonl with _id and text (BEIR), a .tsv (id, url, title, body) or a folder of .txt files"
QUERY_FORMATS = "a .jsonl with _id and text (BEIR) or a .tsv (qid, text)"
QRELS_LAYOUTS = (
    "neither a TREC qrels line (qid iter docid rel) nor the BEIR header "
    "(query-id corpus-id score); give one of the two layouts"
)


def check_id(value, path: Path, line_no: int | None, what: str) -> str:
    """``value`` as a string id: non-empty, without whitespace (run files split on it)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(path, line_no, f"{what} id must be a string or an integer, got {value!r}")
    text = str(value)
    if not text:
        raise DataFormatError(path, line_no, f"empty {what} id")
    if any(c.isspace() for c in text):
        raise DataFormatError(
            path,
            line_no,
            f"{what} id {text!r} contains whitespace; run and qrels files are whitespace-separated, "
            "so ids cannot hold spaces, tabs or newlines: rename it",
        )
    return text


def _nonblank_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """``(line_no, byte position, raw line)`` of every non-blank line, 1-based."""
    pos = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            start, pos = pos, pos + len(raw)
            if raw.strip():
                yield line_no, start, raw


def _json_record(raw: bytes, path: Path, line_no: int) -> dict:
    line = decode_line(raw, path, line_no)
    try:
        record = json.loads(line)
    except ValueError as err:
        raise DataFormatError(path, line_no, f"not a JSON object ({err})") from None
    if not isinstance(record, dict):
        raise DataFormatError(path, line_no, f"expected a JSON object, got {type(record).__name__}")
    return record


def _record_id(record: dict, path: Path, line_no: int, what: str) -> str:
    key = next((k for k in ID_KEYS if k in record), None)
    if key is None:
        raise DataFormatError(path, line_no, f'no "_id" (or "id") in the {what} record')
    return check_id(record[key], path, line_no, what)


def record_text(record: dict, separator: str) -> str:
    """The ``url``, ``title`` and ``text`` fields present in ``record`` (each rstripped), joined by
    ``separator``: ``url</s>title</s>text`` as MS MARCO's document text, ``title</s>text`` for BEIR."""
    return separator.join(record[k].rstrip() for k in TEXT_KEYS if k in record)


def _corpus_fields(record: dict, path: Path, line_no: int) -> None:
    if "text" not in record:
        raise DataFormatError(path, line_no, 'no "text" in the document record')
    for k in TEXT_KEYS:
        if k in record and not isinstance(record[k], str):
            raise DataFormatError(path, line_no, f'"{k}" must be a string, got {type(record[k]).__name__}')


# ----------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------


@dataclass
class CollectionCorpus:
    """One validating pass over a corpus: its layout, ids in order and where each document is."""

    path: Path
    layout: str  # "jsonl", "tsv" or "txt"
    ids: list[str]
    line_starts: array = field(default_factory=lambda: array("q"))  # jsonl / tsv: byte position per doc
    files: list[Path] = field(default_factory=list)  # txt: one file per doc
    pid2offset: dict[str, int] = field(default_factory=dict)  # document id -> offset (row)

    @property
    def num_docs(self) -> int:
        return len(self.ids)


def corpus_layout(path: Path) -> str:
    if path.is_dir():
        return "txt"
    if not path.exists():
        raise MissingInputError(path, f"give {CORPUS_FORMATS}")
    if path.suffix in (".jsonl", ".tsv"):
        return path.suffix[1:]
    raise SeDRInputError(f"{path}: unknown corpus format {path.suffix!r}; give {CORPUS_FORMATS}")


def scan_collection_corpus(path: str | Path) -> CollectionCorpus:
    """Validate every document of ``path`` and map id -> offset (file order; sorted paths for a folder)."""
    path = Path(path)
    layout = corpus_layout(path)
    corpus = CollectionCorpus(path, layout, [])
    where: dict[str, int | None] = {}

    def add(doc_id: str, line_no: int | None, at: Path) -> None:
        if doc_id in corpus.pid2offset:
            first = where[doc_id]
            raise DataFormatError(
                at,
                line_no,
                f"document id {doc_id!r} already appeared" + (f" on line {first}" if first else ""),
            )
        corpus.pid2offset[doc_id] = len(corpus.ids)
        where[doc_id] = line_no
        corpus.ids.append(doc_id)

    if layout == "txt":
        corpus.files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        for p in corpus.files:
            try:
                p.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(p, None, f"bytes that are not UTF-8 at byte {err.start}") from None
            add(check_id(p.relative_to(path).with_suffix("").as_posix(), p, None, "document"), None, p)
    else:
        bar = progress(
            total=path.stat().st_size, unit="B", unit_scale=True, desc="scanning corpus", mininterval=1.0
        )
        with bar:
            for line_no, start, raw in _nonblank_lines(path):
                if line_no % 4096 == 0:
                    bar.update(start - bar.n)
                if layout == "jsonl":
                    record = _json_record(raw, path, line_no)
                    doc_id = _record_id(record, path, line_no, "document")
                    _corpus_fields(record, path, line_no)
                else:
                    fields = decode_line(raw, path, line_no).rstrip("\r\n").split("\t")
                    if len(fields) != 4:
                        raise DataFormatError(
                            path,
                            line_no,
                            f"expected 4 tab-separated fields (id, url, title, body), got {len(fields)}",
                        )
                    doc_id = check_id(fields[0], path, line_no, "document")
                corpus.line_starts.append(start)
                add(doc_id, line_no, path)
            bar.update(bar.total - bar.n)
    if not corpus.ids:
        raise DataFormatError(path, None, "the corpus holds no documents")
    logger.info("corpus %s: %d documents", path, corpus.num_docs)
    return corpus


def range_texts(
    layout: str,
    path: str,
    byte_start: int,
    count: int,
    files: Sequence[str],
    max_doc_character: int,
    separator: str,
) -> Iterator[str]:
    """The texts of ``count`` documents from ``byte_start`` (or of ``files``), each cut to
    ``max_doc_character`` characters: what a tokenizer worker encodes."""
    if layout == "txt":
        for p in files:
            yield Path(p).read_text(encoding="utf-8")[:max_doc_character]
        return
    with open(path, "rb") as f:
        f.seek(byte_start)
        for raw in islice((r for r in f if r.strip()), count):
            line = raw.decode("utf-8")
            if layout == "jsonl":
                yield record_text(json.loads(line), separator)[:max_doc_character]
            else:
                yield document_text(line.rstrip("\r\n"), max_doc_character, separator)


# ----------------------------------------------------------------------------------------------
# Queries and qrels
# ----------------------------------------------------------------------------------------------


def read_queries(path: str | Path) -> Iterator[tuple[int, str, str]]:
    """``(line_no, qid, text)`` of every non-blank line of a ``.jsonl`` or ``.tsv`` query file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(path, f"give {QUERY_FORMATS}")
    if path.suffix not in (".jsonl", ".tsv"):
        raise SeDRInputError(f"{path}: unknown query file format {path.suffix!r}; give {QUERY_FORMATS}")
    for line_no, _, raw in _nonblank_lines(path):
        if path.suffix == ".jsonl":
            record = _json_record(raw, path, line_no)
            qid = _record_id(record, path, line_no, "query")
            text = record.get("text")
            if text is not None and not isinstance(text, str):
                raise DataFormatError(path, line_no, f'"text" must be a string, got {type(text).__name__}')
        else:
            fields = decode_line(raw, path, line_no).rstrip("\r\n").split("\t")
            if len(fields) > 2:
                raise DataFormatError(
                    path, line_no, f"expected 2 tab-separated fields (qid, text), got {len(fields)}"
                )
            qid = check_id(fields[0], path, line_no, "query")
            text = fields[1] if len(fields) == 2 else None
        yield line_no, qid, (text or "")


def qrels_layout(path: Path) -> str:
    """``"trec"`` or ``"beir"`` from the first non-blank line; anything else is refused on that line."""
    for line_no, _, raw in _nonblank_lines(path):
        fields = decode_line(raw, path, line_no).split()
        if tuple(f.lower() for f in fields) == BEIR_QRELS_HEADER:
            return "beir"
        if len(fields) == 4:
            return "trec"
        raise DataFormatError(path, line_no, QRELS_LAYOUTS)
    return "trec"  # empty: refused by the caller as a split without judgements


def iter_qrels_lines(path: str | Path) -> Iterator[tuple[int, str, str, str]]:
    """``(line_no, qid, docid, rel)`` of a TREC or BEIR qrels file (layout read from its first line)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            path, "give a TREC (qid iter docid rel) or BEIR (query-id corpus-id score) file"
        )
    layout = qrels_layout(path)
    header_seen = layout == "trec"
    for line_no, _, raw in _nonblank_lines(path):
        fields = decode_line(raw, path, line_no).split()
        if not header_seen:
            header_seen = True  # the first non-blank line, checked by qrels_layout
            continue
        want = 4 if layout == "trec" else 3
        if len(fields) != want:
            shape = "qid iter docid rel" if layout == "trec" else "query-id corpus-id score"
            raise DataFormatError(
                path,
                line_no,
                f"expected {want} whitespace-separated fields ({shape}, the layout of the file's first "
                f"line), got {len(fields)}",
            )
        qid, docid, rel = (fields[0], fields[2], fields[3]) if layout == "trec" else fields
        if not rel.lstrip("-").isdecimal():
            raise DataFormatError(path, line_no, f"relevance {rel!r} is not an integer")
        yield line_no, qid, docid, rel


def read_judgements(path: str | Path) -> dict[str, dict[str, int]]:
    """A TREC or BEIR qrels file as ``{qid: {docid: rel}}``, every line kept (``rel <= 0``: judged
    non-relevant); a repeated judgement or a file without judgements stops with the file (and line)."""
    qrels: dict[str, dict[str, int]] = {}
    lines: dict[tuple[str, str], int] = {}
    for line_no, qid, docid, rel in iter_qrels_lines(path):
        if (qid, docid) in lines:
            raise DataFormatError(
                path,
                line_no,
                f"query {qid!r} and document {docid!r} were already judged on line {lines[qid, docid]}",
            )
        lines[qid, docid] = line_no
        qrels.setdefault(qid, {})[docid] = int(rel)
    if not qrels:
        raise DataFormatError(path, None, "no judgements in the file")
    return qrels


def read_collection_split(
    queries_path: str | Path, qrels_path: str | Path, pid2offset: dict[str, int], corpus: str | Path
) -> SplitInput:
    """One split: judged queries in query-file order, qrels in file order with document offsets.

    Refused with the file and line: a document or query id unknown to the corpus or the query file,
    a repeated judgement, a repeated query id, a judged query without text, a split without judgements.
    """
    queries_path, qrels_path = Path(queries_path), Path(qrels_path)
    qrels: list[tuple[str, int, str]] = []
    first_line: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for line_no, qid, docid, rel in iter_qrels_lines(qrels_path):
        if docid not in pid2offset:
            raise DataFormatError(qrels_path, line_no, f"document {docid!r} is not in the corpus {corpus}")
        if (qid, docid) in pairs:
            raise DataFormatError(
                qrels_path,
                line_no,
                f"query {qid!r} and document {docid!r} were already judged on line {pairs[qid, docid]}",
            )
        pairs[qid, docid] = line_no
        first_line.setdefault(qid, line_no)
        qrels.append((qid, pid2offset[docid], rel))
    if not qrels:
        raise DataFormatError(qrels_path, None, "no judgements: a split needs judged queries")

    qids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for line_no, qid, text in read_queries(queries_path):
        if qid in seen:
            raise DataFormatError(
                queries_path, line_no, f"query id {qid!r} already appeared on line {seen[qid]}"
            )
        seen[qid] = line_no
        if qid not in first_line:
            continue
        if not text.strip():
            raise DataFormatError(queries_path, line_no, f"judged query {qid!r} has no text")
        qids.append(qid)
        texts.append(text.rstrip())
    for qid, line_no in first_line.items():
        if qid not in seen:
            raise DataFormatError(
                qrels_path, line_no, f"query {qid!r} is judged here but missing from {queries_path}"
            )
    return SplitInput(qids, texts, qrels)
