"""The demo's long-document collection: the Linux man pages as an apropos task, in MS MARCO formats.

Debian's ``manpages`` and ``manpages-dev`` packages ship the Linux man-pages project (system
calls, libc functions, file formats, overviews). Every page whose NAME line has a description
no other page shares becomes a document; that description is its query:

* document: url ``man:NAME(SECTION)``, title the page's names (``rename, renameat, renameat2``),
  body the rest of the page as plain text (the NAME section, hence the description, removed);
* query: the description (``change the name or location of a file``);
* labels: the page itself (binary ``1`` for train/dev, ``3`` for the TREC-style test splits) and,
  for the test splits only, the pages its SEE ALSO section names (``1``), like TREC-DL's graded qrels.

The pages ship as plain text in a frozen snapshot (``data/manpages.jsonl.gz``: one JSON header
line with the package versions and the licence note, then one line per document), so the demo
needs no man pages and no roff renderer. ``tools/build_manpage_snapshot.py`` rebuilds it from the
installed packages. :func:`write_msmarco_files` writes the collection in the MS MARCO Document +
TREC-DL file formats, so every README command runs on it unchanged:

    python -m SeDR.demo.collection --out ./data
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from SeDR.core.constants import CORPUS_FILE, SPLIT_FILES
from SeDR.core.errors import DataFormatError, MissingInputError, exit_on_input_error

DATA_DIR = Path(__file__).resolve().parent / "data"
SNAPSHOT_PATH = DATA_DIR / "manpages.jsonl.gz"
LICENSE_FILE = "LICENSE-manpages.txt"
SNAPSHOT_FORMAT = "sedr-manpages-snapshot"
SNAPSHOT_FORMAT_VERSION = 1
REBUILD_HINT = "rebuild it with `python tools/build_manpage_snapshot.py --out PATH` (a repository checkout)"

# Splits (file names via constants.SPLIT_FILES). Documents are ordered by a seeded hash of their
# url (so a page keeps its split when other pages come or go); the first DEV_QUERIES queries are
# dev, the next TEST_QUERIES the TREC-style test queries (first half "test" = the 2019 files,
# second half "2020test" = the 2020 files), the rest train.
DEFAULT_SEED = 2022
DEV_QUERIES = 150
TEST_QUERIES = 150
# Graded labels of the TREC-style splits, as TREC-DL's 0..3 scale: own page, SEE ALSO targets.
REL_OWN = 3
REL_SEE_ALSO = 1
REL_BINARY = 1
TREC_SPLITS = ("test", "2020test")
# qid = QID_BASE + document number, so query 100042 asks for D42 (distinct from doc numbers on purpose).
QID_BASE = 100_000
# Split label of training queries a demo run leaves out (their pages stay in the corpus).
UNUSED_SPLIT = "unused"


def normalize_space(text: str) -> str:
    """Collapse every run of whitespace (tabs and newlines included) to one space."""
    return " ".join(text.split())


def tsv_field(text: str) -> str:
    """A TSV-safe field: tabs, newlines and other whitespace runs become one space."""
    return normalize_space(text)


def description_key(description: str) -> str:
    """Key under which two descriptions count as the same query (case, spacing, final period ignored)."""
    return normalize_space(description).casefold().rstrip(".")


@dataclass(frozen=True)
class Page:
    """One man page as read from its rendered text: identity, NAME line, body and references."""

    name: str  # from the file name: rename
    section: str  # from the file name: 2, 3type, ...
    names: tuple[str, ...]
    description: str
    body: str
    see_also: tuple[tuple[str, str], ...]  # (name, section) pairs named in SEE ALSO
    notice: str  # the source's leading comment block: copyright and licence

    @property
    def url(self) -> str:
        return f"man:{self.name}({self.section})"


@dataclass(frozen=True)
class Document:
    """One document with its query: the page's description (qid = QID_BASE + number)."""

    number: int
    url: str
    title: str
    body: str
    query: str
    split: str
    see_also: tuple[int, ...]  # numbers of documents named in SEE ALSO (own page excluded)
    notice: str

    @property
    def docid(self) -> str:
        return f"D{self.number}"

    @property
    def qid(self) -> int:
        return QID_BASE + self.number


@dataclass(frozen=True)
class Collection:
    header: dict
    documents: tuple[Document, ...]

    def split_documents(self, split: str) -> list[Document]:
        return [d for d in self.documents if d.split == split]

    def queries(self, split: str) -> list[tuple[int, str]]:
        return [(d.qid, d.query) for d in self.split_documents(split)]

    def qrels(self, split: str) -> list[tuple[int, str, int]]:
        """``[(qid, docid, rel)]``: own page (3 on TREC splits, else 1), SEE ALSO targets 1 on TREC splits."""
        out = []
        for d in self.split_documents(split):
            if split in TREC_SPLITS:
                out.append((d.qid, d.docid, REL_OWN))
                out.extend((d.qid, f"D{t}", REL_SEE_ALSO) for t in d.see_also)
            else:
                out.append((d.qid, d.docid, REL_BINARY))
        return out

    def stats(self) -> dict:
        words = [len(d.body.split()) + len(d.title.split()) for d in self.documents]
        return {
            "documents": len(self.documents),
            "queries": {s: len(self.split_documents(s)) for s in SPLIT_FILES},
            "qrels": {s: len(self.qrels(s)) for s in SPLIT_FILES},
            "words_per_document_mean": round(statistics.fmean(words), 1) if words else 0.0,
            "words_per_document_median": statistics.median(words) if words else 0,
            "fraction_over_400_words": round(sum(w > 400 for w in words) / max(len(words), 1), 4),
            "documents_with_see_also": sum(bool(d.see_also) for d in self.documents),
        }


def _hash_order(urls: Iterable[str], seed: int) -> list[str]:
    return sorted(urls, key=lambda u: hashlib.sha256(f"{seed}\t{u}".encode()).hexdigest())


def assign_splits(
    urls: Iterable[str], seed: int = DEFAULT_SEED, dev: int = DEV_QUERIES, test: int = TEST_QUERIES
) -> dict[str, str]:
    """``{url: split}``: urls ordered by sha256(seed, url);
    dev first, then test (2019 half, 2020 half), rest train."""
    half = (test + 1) // 2
    splits = {}
    for k, url in enumerate(_hash_order(urls, seed)):
        if k < dev:
            splits[url] = "dev"
        elif k < dev + half:
            splits[url] = "test"
        elif k < dev + test:
            splits[url] = "2020test"
        else:
            splits[url] = "train"
    return splits


def collection_from_pages(
    pages: Sequence[Page],
    aliases: Mapping[tuple[str, str], str] | None = None,
    header: dict | None = None,
    seed: int = DEFAULT_SEED,
) -> Collection:
    """Keep pages with a unique description, number them, resolve SEE ALSO, assign splits.

    Args:
        pages: parsed pages (any order).
        aliases: extra ``(name, section) -> url`` entries (symlinks and ``.so`` stubs).
        header: snapshot header fields (package versions, licence note, ...).
    """
    counts = Counter(description_key(p.description) for p in pages)
    kept = sorted(
        (p for p in pages if counts[description_key(p.description)] == 1), key=lambda p: (p.section, p.name)
    )
    number = {p.url: k + 1 for k, p in enumerate(kept)}
    # (name, section) -> url, and (name, leading digit) -> urls, for resolving SEE ALSO references.
    exact: dict[tuple[str, str], str] = {}
    by_digit: dict[tuple[str, str], set[str]] = defaultdict(set)
    all_pages = sorted(pages, key=lambda p: (p.section, p.name))
    entries = [((p.name, p.section), p.url) for p in all_pages]
    entries += sorted((aliases or {}).items())
    entries += [((n, p.section), p.url) for p in all_pages for n in p.names]
    for key, url in entries:
        exact.setdefault(key, url)
        by_digit[(key[0], key[1][:1])].add(url)

    def resolve(ref: tuple[str, str]) -> str | None:
        if ref in exact:
            return exact[ref]
        cands = by_digit.get((ref[0], ref[1][:1]), set())
        return next(iter(cands)) if len(cands) == 1 else None

    splits = assign_splits([p.url for p in kept], seed)
    docs = []
    for p in kept:
        targets = []
        for ref in p.see_also:
            url = resolve(ref)
            if url in number and url != p.url and number[url] not in targets:
                targets.append(number[url])
        docs.append(
            Document(
                number=number[p.url],
                url=p.url,
                title=", ".join(p.names),
                body=p.body,
                query=normalize_space(p.description),
                split=splits[p.url],
                see_also=tuple(sorted(targets)),
                notice=p.notice,
            )
        )
    head = {
        "format": SNAPSHOT_FORMAT,
        "format_version": SNAPSHOT_FORMAT_VERSION,
        **(header or {}),
        "seed": seed,
        "split_rule": {"dev": DEV_QUERIES, "test": TEST_QUERIES, "test_halves": list(TREC_SPLITS)},
        "relevance": {
            "train/dev own page": REL_BINARY,
            "test own page": REL_OWN,
            "test SEE ALSO target": REL_SEE_ALSO,
        },
        "qid_rule": f"qid = {QID_BASE} + document number",
        "documents": len(docs),
    }
    return Collection(header=head, documents=tuple(docs))


def select_collection(
    collection: Collection, train_queries: int | None, docs_per_split: Mapping[str, int] | None, seed: int
) -> Collection:
    """A demo run's corpus and queries, chosen by a seeded hash of the page url (stable, unbiased by name).

    ``docs_per_split`` keeps that many pages of each split and nothing else (SEE ALSO targets outside
    the subset are dropped); ``train_queries`` keeps every page but only that many training queries
    (the others become split ``unused``: their pages remain documents, their queries are not written).
    """
    docs = list(collection.documents)
    if docs_per_split is not None:
        by_url = {d.url: d for d in docs}
        keep = [
            by_url[u]
            for split, n in docs_per_split.items()
            for u in _hash_order([d.url for d in docs if d.split == split], seed)[:n]
        ]
        numbers = {d.number for d in keep}
        docs = [
            dataclasses.replace(d, see_also=tuple(t for t in d.see_also if t in numbers))
            for d in sorted(keep, key=lambda d: d.number)
        ]
    if train_queries is not None:
        chosen = set(_hash_order([d.url for d in docs if d.split == "train"], seed)[:train_queries])
        docs = [
            d if d.split != "train" or d.url in chosen else dataclasses.replace(d, split=UNUSED_SPLIT)
            for d in docs
        ]
    header = {
        **collection.header,
        "demo_selection": {"train_queries": train_queries, "docs_per_split": docs_per_split, "seed": seed},
    }
    return Collection(header=header, documents=tuple(docs))


# --------------------------------------------------------------------------------------------
# Snapshot and MS MARCO files
# --------------------------------------------------------------------------------------------

_RECORD_FIELDS = ("docid", "url", "title", "query", "split", "see_also", "body", "notice")


def snapshot_bytes(collection: Collection) -> bytes:
    """The snapshot's uncompressed JSONL: header line, then one line per document in number order."""
    buf = io.StringIO()
    buf.write(json.dumps(collection.header, ensure_ascii=False, sort_keys=True) + "\n")
    for d in sorted(collection.documents, key=lambda d: d.number):
        rec = {
            "docid": d.docid,
            "url": d.url,
            "title": d.title,
            "query": d.query,
            "split": d.split,
            "see_also": [f"D{t}" for t in d.see_also],
            "body": d.body,
            "notice": d.notice,
        }
        buf.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return buf.getvalue().encode("utf-8")


def write_snapshot(collection: Collection, path: str | Path) -> Path:
    """Gzipped JSONL with a fixed gzip header (mtime 0, no file name),
    so equal collections give equal bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        gz.write(snapshot_bytes(collection))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(raw.getvalue())
    os.replace(tmp, path)
    return path


def load_snapshot(path: str | Path = SNAPSHOT_PATH) -> Collection:
    """Read a snapshot written by :func:`write_snapshot`."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, REBUILD_HINT)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise DataFormatError(path, 1, "empty snapshot")
    header = json.loads(lines[0])
    if header.get("format") != SNAPSHOT_FORMAT:
        raise DataFormatError(path, 1, f"not a {SNAPSHOT_FORMAT} file (format={header.get('format')!r})")
    docs = []
    for k, line in enumerate(lines[1:], start=2):
        rec = json.loads(line)
        missing = [f for f in _RECORD_FIELDS if f not in rec]
        if missing or not re.fullmatch(r"D\d+", rec.get("docid", "")):
            raise DataFormatError(path, k, f"bad document record (missing {missing})")
        docs.append(
            Document(
                number=int(rec["docid"][1:]),
                url=rec["url"],
                title=rec["title"],
                body=rec["body"],
                query=rec["query"],
                split=rec["split"],
                see_also=tuple(int(t[1:]) for t in rec["see_also"]),
                notice=rec["notice"],
            )
        )
    return Collection(header=header, documents=tuple(docs))


def write_msmarco_files(collection: Collection, data_dir: str | Path) -> dict[str, Path]:
    """Write the nine MS MARCO Document / TREC-DL files into ``data_dir``; return ``{file name: path}``.

    Train/dev qrels are ``qid 0 Ddocid 1``; the TREC-style 2019/2020 qrels ``qid Q0 Ddocid rel``
    with rel 3 for the page itself and 1 for its SEE ALSO targets.
    """
    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    with open(out / CORPUS_FILE, "w", encoding="utf-8", newline="\n") as f:
        for d in sorted(collection.documents, key=lambda d: d.number):
            f.write(f"{d.docid}\t{tsv_field(d.url)}\t{tsv_field(d.title)}\t{tsv_field(d.body)}\n")
    written[CORPUS_FILE] = out / CORPUS_FILE
    for split, (qfile, rfile) in SPLIT_FILES.items():
        with open(out / qfile, "w", encoding="utf-8", newline="\n") as f:
            for qid, text in collection.queries(split):
                f.write(f"{qid}\t{tsv_field(text)}\n")
        iteration = "Q0" if split in TREC_SPLITS else "0"
        with open(out / rfile, "w", encoding="utf-8", newline="\n") as f:
            for qid, docid, rel in collection.qrels(split):
                f.write(f"{qid} {iteration} {docid} {rel}\n")
        written[qfile], written[rfile] = out / qfile, out / rfile
    return written


# The BEIR layout (docs/own-collection.md#worked-example): corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
BEIR_CORPUS = "corpus.jsonl"
BEIR_QUERIES = "queries.jsonl"
BEIR_QRELS_DIR = "qrels"
BEIR_QRELS_HEADER = "query-id\tcorpus-id\tscore\n"
QUERY_ID_PREFIX = "q:"


def beir_doc_id(d: Document) -> str:
    """A page's id in the BEIR files: its url (``man:rename(2)``)."""
    return d.url


def beir_query_id(d: Document) -> str:
    """The id of a page's query: ``q:rename(2)``."""
    return QUERY_ID_PREFIX + d.url.removeprefix("man:")


def beir_id_maps(collection: Collection) -> tuple[dict[str, str], dict[str, str]]:
    """``({"D42": "man:...", ...}, {"100042": "q:...", ...})``: the MS MARCO files' ids -> the BEIR files'."""
    docs = {d.docid: beir_doc_id(d) for d in collection.documents}
    queries = {str(d.qid): beir_query_id(d) for d in collection.documents}
    return docs, queries


def write_beir_files(collection: Collection, out_dir: str | Path) -> dict[str, Path]:
    """The collection in the BEIR layout, the same data as :func:`write_msmarco_files`'s files.

    ``corpus.jsonl``: ``_id`` (the url), ``title``, ``text`` (the body) and ``url``, whitespace collapsed
    as in the TSV files, so the document text is the same ``url</s>title</s>body``; ``queries.jsonl``:
    the queries of the four splits in page order; ``qrels/<split>.tsv``: BEIR qrels with the same labels.
    Pages, queries and judged queries come in the same order as in the MS MARCO files, so both give
    the same offsets.
    """
    out = Path(out_dir)
    (out / BEIR_QRELS_DIR).mkdir(parents=True, exist_ok=True)
    docs = sorted(collection.documents, key=lambda d: d.number)
    with open(out / BEIR_CORPUS, "w", encoding="utf-8", newline="\n") as f:
        for d in docs:
            record = {
                "_id": beir_doc_id(d),
                "title": tsv_field(d.title),
                "text": tsv_field(d.body),
                "url": d.url,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    written = {BEIR_CORPUS: out / BEIR_CORPUS, BEIR_QUERIES: out / BEIR_QUERIES}
    with open(out / BEIR_QUERIES, "w", encoding="utf-8", newline="\n") as f:
        for d in docs:
            if d.split in SPLIT_FILES:
                f.write(
                    json.dumps({"_id": beir_query_id(d), "text": tsv_field(d.query)}, ensure_ascii=False)
                    + "\n"
                )
    _, query_ids = beir_id_maps(collection)
    doc_ids = {d.docid: beir_doc_id(d) for d in docs}
    for split in SPLIT_FILES:
        path = out / BEIR_QRELS_DIR / f"{split}.tsv"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(BEIR_QRELS_HEADER)
            for qid, docid, rel in collection.qrels(split):
                f.write(f"{query_ids[str(qid)]}\t{doc_ids[docid]}\t{rel}\n")
        written[f"{BEIR_QRELS_DIR}/{split}.tsv"] = path
    return written


def format_stats(collection: Collection) -> str:
    s = collection.stats()
    src = collection.header.get("source", {}).get("packages", {})
    return "\n".join(
        [
            f"source: {', '.join(f'{k} {v}' for k, v in src.items())}",
            f"documents: {s['documents']} "
            f"(with SEE ALSO targets in the collection: {s['documents_with_see_also']})",
            "queries: " + ", ".join(f"{k} {v}" for k, v in s["queries"].items()),
            "qrels lines: " + ", ".join(f"{k} {v}" for k, v in s["qrels"].items()),
            f"words per document: mean {s['words_per_document_mean']}, "
            f"median {s['words_per_document_median']}, "
            f"over 400 words {s['fraction_over_400_words']:.1%}",
        ]
    )


@exit_on_input_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m SeDR.demo.collection",
        description=(
            "Write the man-pages collection in the MS MARCO Document + TREC-DL formats and print its figures."
        ),
    )
    parser.add_argument("--out", help="write the nine MS MARCO / TREC-DL files into this folder")
    parser.add_argument(
        "--snapshot",
        default=str(SNAPSHOT_PATH),
        help="snapshot to read (default: the one shipped with the package)",
    )
    parser.add_argument(
        "--layout",
        choices=("msmarco", "beir"),
        default="msmarco",
        help="msmarco: the nine MS MARCO Document / TREC-DL files; beir: corpus.jsonl, queries.jsonl, "
        "qrels/<split>.tsv (docs/own-collection.md#worked-example)",
    )
    parser.add_argument(
        "--train_queries",
        type=int,
        default=None,
        help="keep this many training queries (chosen by a seeded hash; the pages stay documents)",
    )
    parser.add_argument(
        "--docs_per_split",
        default=None,
        metavar="SPLIT=N,...",
        help="keep only this many pages of each split, e.g. train=10,dev=6,test=3,2020test=3",
    )
    args = parser.parse_args(argv)
    collection = load_snapshot(args.snapshot)
    if args.train_queries is not None or args.docs_per_split:
        per_split = None
        if args.docs_per_split:
            pairs = [p.partition("=") for p in args.docs_per_split.split(",")]
            if any(not sep or not n.isdecimal() or split not in SPLIT_FILES for split, sep, n in pairs):
                parser.error(
                    f"--docs_per_split {args.docs_per_split!r}: expected SPLIT=N,... over {list(SPLIT_FILES)}"
                )
            per_split = {split: int(n) for split, _, n in pairs}
        collection = select_collection(collection, args.train_queries, per_split, DEFAULT_SEED)
    if args.out:
        if args.layout == "beir":
            written = write_beir_files(collection, args.out)
        else:
            written = write_msmarco_files(collection, args.out)
        print(f"wrote {len(written)} files to {args.out}")
    print(format_stats(collection))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
