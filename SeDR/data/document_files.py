"""Document files for the retriever: ``(id, text)`` pairs in file order
(docs/your-documents.md#document-files).

* ``.tsv`` in MS MARCO Document's layout (``id, url, title, body``): the text is built exactly as
  ``SeDR_preprocess.py`` builds it (:func:`SeDR.data.msmarco_files.document_text`);
* ``.jsonl``: one object per line with ``id`` (string or integer) and ``text``;
* a folder: every ``*.txt`` file below it, id = its path without ``.txt``, in sorted order.

Blank lines are skipped. A malformed line or a repeated id raises :class:`DataFormatError` naming
the file and line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from SeDR.core.constants import DOC_FIELD_SEPARATOR
from SeDR.core.errors import DataFormatError, MissingInputError, SeDRInputError
from SeDR.data.msmarco_files import decode_line, document_text

FORMATS_HINT = "give a .tsv (id, url, title, body), a .jsonl with id and text, or a folder of .txt files"


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_no, text)`` of the non-blank lines, UTF-8 checked line by line so the error names the line."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            line = decode_line(raw, path, line_no)
            if line.strip():
                yield line_no, line


def _tsv(path: Path, separator: str) -> Iterator[tuple[int, str, str]]:
    for line_no, line in _decoded_lines(path):
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 4:
            raise DataFormatError(
                path, line_no, f"expected 4 tab-separated fields (id, url, title, body), got {len(fields)}"
            )
        if not fields[0].strip():
            raise DataFormatError(path, line_no, "empty document id")
        yield (
            line_no,
            fields[0].strip(),
            document_text(line, sys.maxsize, separator),
        )  # the 10,000 cut comes later


def _jsonl(path: Path) -> Iterator[tuple[int, str, str]]:
    for line_no, line in _decoded_lines(path):
        try:
            record = json.loads(line)
        except ValueError as err:
            raise DataFormatError(path, line_no, f"not a JSON object ({err})") from None
        if not isinstance(record, dict) or "id" not in record or "text" not in record:
            raise DataFormatError(path, line_no, 'expected a JSON object with "id" and "text"')
        doc_id, text = record["id"], record["text"]
        if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or not str(doc_id).strip():
            raise DataFormatError(
                path, line_no, f'"id" must be a non-empty string or an integer, got {doc_id!r}'
            )
        if not isinstance(text, str):
            raise DataFormatError(path, line_no, f'"text" must be a string, got {type(text).__name__}')
        yield line_no, str(doc_id), text


def _txt_folder(folder: Path) -> Iterator[tuple[None, str, str]]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise DataFormatError(folder, None, "no .txt files in the folder; " + FORMATS_HINT)
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataFormatError(p, None, f"bytes that are not UTF-8 at byte {err.start}") from None
        yield None, p.relative_to(folder).with_suffix("").as_posix(), text


def read_documents(path: str | Path, field_separator: str = DOC_FIELD_SEPARATOR) -> Iterator[tuple[str, str]]:
    """``(id, text)`` of every document of ``path``;
    ``field_separator`` joins a ``.tsv``'s fields (the tokenizer's)."""
    path = Path(path)
    if path.is_dir():
        records = _txt_folder(path)
    elif not path.exists():
        raise MissingInputError(path, FORMATS_HINT)
    elif path.suffix == ".tsv":
        records = _tsv(path, field_separator)
    elif path.suffix == ".jsonl":
        records = _jsonl(path)
    else:
        raise SeDRInputError(f"{path}: unknown document format {path.suffix!r}; {FORMATS_HINT}")
    seen: dict[str, int | None] = {}
    for line_no, doc_id, text in records:
        if doc_id in seen:  # file names are unique: only lines repeat an id
            raise DataFormatError(
                path, line_no, f"document id {doc_id!r} already appeared on line {seen[doc_id]}"
            )
        seen[doc_id] = line_no
        yield doc_id, text
