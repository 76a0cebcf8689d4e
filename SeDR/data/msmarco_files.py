"""The raw MS MARCO Document / TREC-DL files, read and validated line by line (docs/data.md#input-files).

Only what the later steps need is kept in memory (``pid -> offset`` and the corpus's line
positions); a malformed line stops with one line naming the file and the line
(docs/data.md#bad-input-policy).
"""

from __future__ import annotations

import logging
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from SeDR.core.constants import CORPUS_FILE, DOC_FIELD_SEPARATOR, SPLIT_FILES
from SeDR.core.errors import DataFormatError
from SeDR.core.progress import progress

logger = logging.getLogger(__name__)

DOWNLOAD_HINT = "run `bash download_data.sh` (it downloads the MS MARCO / TREC-DL files into ./data)"
_DOC_ID = re.compile(rb"D([0-9]+)")
MAX_DOC_NUMBER = 2**63 - 1  # run files and id maps hold document numbers as int64


def _doc_number(match, path: Path, line_no: int) -> int:
    pid = int(match.group(1))
    if pid > MAX_DOC_NUMBER:
        raise DataFormatError(path, line_no, f"document id D{pid} has more digits than a 64-bit id can hold")
    return pid


def decode_line(raw: bytes, path: Path, line_no: int) -> str:
    """A line's text; bytes that are not UTF-8 are an error naming the file, line and byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(
            path,
            line_no,
            f"bytes that are not UTF-8 at byte {err.start} of the line "
            f"({raw[err.start : err.start + 4]!r}); fix or re-download the file",
        ) from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_no, text)`` of a small file, 1-based, newline removed, UTF-8 checked per line."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            yield line_no, decode_line(raw, path, line_no).rstrip("\r\n")


@dataclass
class CorpusIndex:
    """What one streaming pass over the corpus learns: offsets, line positions, counts."""

    path: Path
    pid2offset: dict[int, int]
    line_starts: array  # byte position of every line (int64)
    layout: str = "msmarco"  # how a tokenizer worker reads a line (data/collection_files: jsonl, tsv, txt)

    @property
    def num_docs(self) -> int:
        return len(self.line_starts)


def scan_corpus(path: str | Path) -> CorpusIndex:
    """Validate every corpus line and map doc number -> offset (= 0-based line number)."""
    path = Path(path)
    pid2offset: dict[int, int] = {}
    starts = array("q")
    empty_bodies, first_empty = 0, None
    pos = 0
    with (
        open(path, "rb") as f,
        progress(
            total=path.stat().st_size, unit="B", unit_scale=True, desc="scanning corpus", mininterval=1.0
        ) as bar,
    ):
        for line_no, raw in enumerate(f, 1):
            starts.append(pos)
            pos += len(raw)
            if line_no % 4096 == 0:
                bar.update(pos - bar.n)
            decode_line(raw, path, line_no)
            tabs = raw.count(b"\t")
            if tabs != 3:
                raise DataFormatError(
                    path,
                    line_no,
                    f"expected 4 tab-separated fields (docid, url, title, body), got {tabs + 1}",
                )
            head, _, _, body = raw.split(b"\t")
            m = _DOC_ID.fullmatch(head)
            if m is None:
                raise DataFormatError(
                    path, line_no, f"document id {head[:40].decode('utf-8')!r} is not 'D' followed by digits"
                )
            pid = _doc_number(m, path, line_no)
            if pid in pid2offset:
                raise DataFormatError(
                    path, line_no, f"document D{pid} already appeared on line {pid2offset[pid] + 1}"
                )
            pid2offset[pid] = line_no - 1
            if not body.rstrip():
                empty_bodies += 1
                first_empty = first_empty or line_no
        bar.update(pos - bar.n)
    if not starts:
        raise DataFormatError(path, None, "the corpus is empty")
    if empty_bodies:
        logger.warning(
            "%s: %d documents have an empty body (first on line %d); they are kept as 'url</s>title</s>'",
            path,
            empty_bodies,
            first_empty,
        )
    logger.info("corpus %s: %d documents", path, len(starts))
    return CorpusIndex(path, pid2offset, starts)


@dataclass
class SplitInput:
    """One validated query/qrels pair: kept queries in file order and offset qrels."""

    qids: list[int]  # kept (judged) queries, query-file order
    texts: list[str]
    qrels: list[tuple[int, int, str]]  # (qid, doc offset, rel verbatim), qrels-file order


def read_split(queries_path: Path, qrels_path: Path, pid2offset: dict[int, int]) -> SplitInput:
    qrels: list[tuple[int, int, str]] = []
    first_line: dict[int, int] = {}
    for line_no, line in _lines(qrels_path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise DataFormatError(
                qrels_path,
                line_no,
                f"expected 4 whitespace-separated fields (qid iter docid rel), got {len(fields)}",
            )
        qid_s, _, doc, rel = fields
        if not qid_s.isdecimal():
            raise DataFormatError(qrels_path, line_no, f"query id {qid_s!r} is not an integer")
        if not rel.lstrip("-").isdecimal():
            raise DataFormatError(qrels_path, line_no, f"relevance {rel!r} is not an integer")
        m = _DOC_ID.fullmatch(doc.encode())
        if m is None:
            raise DataFormatError(qrels_path, line_no, f"document id {doc!r} is not 'D' followed by digits")
        pid = _doc_number(m, qrels_path, line_no)
        if pid not in pid2offset:
            raise DataFormatError(qrels_path, line_no, f"document {doc} is not in the corpus {CORPUS_FILE}")
        qid = int(qid_s)
        first_line.setdefault(qid, line_no)
        qrels.append((qid, pid2offset[pid], rel))
    if not qrels:
        raise DataFormatError(qrels_path, None, "no judgements in the file")

    qids: list[int] = []
    texts: list[str] = []
    seen: dict[int, int] = {}
    for line_no, line in _lines(queries_path):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataFormatError(
                queries_path, line_no, f"expected 2 tab-separated fields (qid, text), got {len(fields)}"
            )
        if not fields[0].strip().isdecimal():
            raise DataFormatError(queries_path, line_no, f"query id {fields[0]!r} is not an integer")
        qid = int(fields[0])
        if qid not in first_line:
            continue
        if qid in seen:
            raise DataFormatError(
                queries_path, line_no, f"judged query {qid} already appeared on line {seen[qid]}"
            )
        seen[qid] = line_no
        qids.append(qid)
        texts.append(fields[1].rstrip())
    for qid, line_no in first_line.items():
        if qid not in seen:
            raise DataFormatError(
                qrels_path, line_no, f"query {qid} is judged here but missing from {queries_path}"
            )
    empty = [q for q, t in zip(qids, texts) if not t.strip()]
    if empty:
        logger.warning(
            "%s: %d judged queries are empty or only spaces (first: query %d on line %d); they are kept "
            "and encoded as an empty text",
            queries_path,
            len(empty),
            empty[0],
            seen[empty[0]],
        )
    return SplitInput(qids, texts, qrels)


def document_text(line: str, max_doc_character: int, separator: str = DOC_FIELD_SEPARATOR) -> str:
    """``url</s>title</s>body`` (each field rstripped), cut to ``max_doc_character`` characters
    (docs/data.md#document-text).

    ``separator`` is the tokenizer's field separator (:attr:`StarTokenizer.field_separator`):
    ``</s>`` for RoBERTa, ``[SEP]`` for a BERT WordPiece tokenizer.
    """
    _, url, title, body = line.split("\t")
    text = url.rstrip() + separator + title.rstrip() + separator + body.rstrip()
    return text[:max_doc_character]


def input_stamps(paths: dict[str, Path]) -> dict[str, list[int]]:
    """``{file name: [bytes, mtime_ns]}`` of the raw inputs that exist, recorded to notice a changed input."""
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in paths.values() if p.is_file()}


def input_paths(data_path: Path) -> dict[str, Path]:
    """Every input file by role: ``corpus`` and ``{split}.queries`` / ``{split}.qrels``."""
    paths = {"corpus": data_path / CORPUS_FILE}
    for split, (qfile, rfile) in SPLIT_FILES.items():
        paths[f"{split}.queries"] = data_path / qfile
        paths[f"{split}.qrels"] = data_path / rfile
    return paths
