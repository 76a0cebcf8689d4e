"""Preprocessing: MS MARCO text files -> token-id memmaps and offset maps (docs/data.md#preprocess-outputs).

Writes exactly the files of the original ``SeDR_preprocess.py`` (names, int32 dtypes, shapes,
padding value 0, meta JSON, pickled ``dict[int, int]`` maps, offset qrels), so a folder made by
either program can be read by the other's readers. Tokenisation is batched on the Rust backend in
``threads`` worker processes writing straight into the final memmap; everything is written into
``<output_dir>.incomplete-<pid>`` and renamed into place at the end; a rerun on a complete folder
made from the same settings and raw inputs does nothing. Bad input stops with one line naming the
file and the line (docs/data.md#bad-input-policy).
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing as mp
import os
import pickle
import queue as queue_module
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from SeDR.core.constants import (
    DEFAULT_MAX_DOC_CHARACTER,
    DEFAULT_MAX_QUERY_LENGTH,
    DEFAULT_MAX_SEQ_LENGTH,
    DOC_FIELD_SEPARATOR,
    PREPROCESS_RECORD,
    SPLIT_FILES,
)
from SeDR.core.errors import DataFormatError, MissingInputError, SeDRInputError
from SeDR.core.outputs import claim, ensure_writable, pid_alive, writing
from SeDR.core.progress import progress
from SeDR.data.collection_files import range_texts, read_collection_split, scan_collection_corpus
from SeDR.data.msmarco_files import (
    DOWNLOAD_HINT,
    CorpusIndex,
    SplitInput,
    document_text,
    input_paths,
    input_stamps,
    read_split,
    scan_corpus,
)
from SeDR.data.preprocess_folder import COLLECTION_KEY, SPLITS_KEY, read_record, recorded_splits
from SeDR.data.tokenization import StarTokenizer
from SeDR.data.tokenizer_record import RECORD_KEY, load_tokenizer

logger = logging.getLogger(__name__)

PASSAGE_PREFIX = "passages"
INCOMPLETE_TAG = ".incomplete-"
TOKEN_DTYPE = np.int32  # every memmap and length array is int32
PAD_VALUE = 0  # rows are right-padded with 0 (not <pad>)
PICKLE_PROTOCOL = 4  # as the original
DOCS_PER_CALL = 128  # documents per backend call inside a worker
QUERIES_PER_CALL = 4096


@dataclass(frozen=True)
class Settings:
    """The flags that define the output."""

    model_name_or_path: str = "roberta-base"
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    max_query_length: int = DEFAULT_MAX_QUERY_LENGTH
    max_doc_character: int = DEFAULT_MAX_DOC_CHARACTER


def query_prefix(split: str) -> str:
    return f"{split}-query"


def output_files(splits=tuple(SPLIT_FILES)) -> list[str]:
    """The file names of docs/data.md#preprocess-outputs, in a fixed order."""
    names = [
        f"{PASSAGE_PREFIX}.memmap",
        f"{PASSAGE_PREFIX}_length.npy",
        f"{PASSAGE_PREFIX}_meta",
        "pid2offset.pickle",
    ]
    for s in splits:
        p = query_prefix(s)
        names += [f"{p}.memmap", f"{p}_length.npy", f"{p}_meta", f"{s}-qid2offset.pickle", f"{s}-qrel.tsv"]
    return names


def missing_outputs(folder: str | Path, splits: Sequence[str] | None = None) -> list[str]:
    """Expected files that are absent, or memmaps whose size disagrees with their meta (empty = complete).

    ``splits``: default the folder's recorded splits (a collection), else MS MARCO's four.
    """
    folder = Path(folder)
    if splits is None:
        splits = recorded_splits(folder) or list(SPLIT_FILES)
    missing = [n for n in output_files(splits) if not (folder / n).is_file()]
    if missing:
        return missing
    for prefix in [PASSAGE_PREFIX] + [query_prefix(s) for s in splits]:
        try:
            meta = json.loads((folder / f"{prefix}_meta").read_text())
            want = int(meta["total_number"]) * int(meta["embedding_size"]) * np.dtype(meta["type"]).itemsize
        except (ValueError, KeyError, TypeError):
            return [f"{prefix}_meta (unreadable)"]
        if (folder / f"{prefix}.memmap").stat().st_size != want:
            return [f"{prefix}.memmap (size does not match {prefix}_meta)"]
    return []


# ----------------------------------------------------------------------------------------------
# Tokenisation workers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocRange:
    """One worker's contiguous slice of the corpus and where its rows go."""

    corpus: str
    byte_start: int
    row_start: int
    row_end: int
    tokens_path: str
    lengths_path: str
    num_docs: int
    max_seq_length: int
    max_doc_character: int
    field_separator: str = DOC_FIELD_SEPARATOR
    layout: str = "msmarco"  # or a collection's "jsonl", "tsv", "txt" (data/collection_files.py)
    files: tuple[str, ...] = ()  # "txt": the files of rows row_start..row_end-1


def tokenize_doc_range(tokenizer: StarTokenizer, job: DocRange, progress) -> None:
    """Tokenise ``job``'s lines and write their rows and lengths; ``progress.put(n)`` after each call."""
    tokens = np.memmap(
        job.tokens_path, dtype=TOKEN_DTYPE, mode="r+", shape=(job.num_docs, job.max_seq_length)
    )
    lengths = np.memmap(job.lengths_path, dtype=TOKEN_DTYPE, mode="r+", shape=(job.num_docs,))
    row = job.row_start
    for texts in _text_blocks(job):
        if not texts:
            raise DataFormatError(job.corpus, row + 1, "the file changed while it was being read")
        block, lens = _pad(tokenizer.encode_documents(texts, job.max_seq_length), job.max_seq_length)
        tokens[row : row + len(texts)] = block  # (n, max_seq_length)
        lengths[row : row + len(texts)] = lens
        row += len(texts)
        progress.put(len(texts))
    if row != job.row_end:
        raise DataFormatError(job.corpus, row + 1, "the file changed while it was being read")
    tokens.flush()
    lengths.flush()


def _text_blocks(job: DocRange) -> Iterator[list[str]]:
    """The range's document texts, ``DOCS_PER_CALL`` at a time; an empty block means the file ended early."""
    count = job.row_end - job.row_start
    if job.layout == "msmarco":
        with open(job.corpus, "rb") as f:
            f.seek(job.byte_start)
            lines = islice(f, count)
            for _ in range(0, count, DOCS_PER_CALL):
                raw = list(islice(lines, DOCS_PER_CALL))
                yield [
                    document_text(r.decode("utf-8"), job.max_doc_character, job.field_separator) for r in raw
                ]
        return
    texts = range_texts(
        job.layout, job.corpus, job.byte_start, count, job.files, job.max_doc_character, job.field_separator
    )
    for _ in range(0, count, DOCS_PER_CALL):
        yield list(islice(texts, DOCS_PER_CALL))


def _pad(rows: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    block = np.full((len(rows), width), PAD_VALUE, dtype=TOKEN_DTYPE)  # (n, width)
    for i, ids in enumerate(rows):
        block[i, : len(ids)] = ids
    return block, np.array([len(r) for r in rows], dtype=TOKEN_DTYPE)


def _worker_main(tokenizer: StarTokenizer, job: DocRange, messages) -> None:
    """Entry point of a worker process: report progress, completion or the error on ``messages``."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker; the parallelism is ours

    class _Progress:
        def put(self, n):
            messages.put(("progress", n))

    try:
        tokenize_doc_range(tokenizer, job, _Progress())
        messages.put(("done", job.row_start))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises
        messages.put(("error", f"{type(err).__name__}: {err}"))


class _BarProgress:
    def __init__(self, bar):
        self.bar = bar

    def put(self, n):
        self.bar.update(n)


def _run_doc_workers(tokenizer: StarTokenizer, jobs: list[DocRange], bar) -> None:
    ctx = mp.get_context("spawn")  # no fork of a process that holds Rust thread pools
    messages = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(tokenizer, job, messages), daemon=True) for job in jobs]
    try:
        for p in procs:
            p.start()
        done = 0
        while done < len(procs):
            try:
                kind, value = messages.get(timeout=1.0)
            except queue_module.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"tokenizer worker {dead[0].pid} died with exit code {dead[0].exitcode}"
                    ) from None
                continue
            if kind == "progress":
                bar.update(value)
            elif kind == "done":
                done += 1
            else:
                raise RuntimeError(f"tokenizer worker failed: {value}")
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
        messages.close()


def _allocate(path: Path, size: int) -> None:
    """A zero-filled file whose blocks are reserved now: a full disk fails here, not as a bus error later."""
    with writing(path), open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            f.truncate(size)  # a filesystem without fallocate: sparse, as before


def tokenize_corpus(
    tokenizer: StarTokenizer, index: CorpusIndex, out_dir: Path, settings: Settings, threads: int
) -> None:
    """Write ``passages.memmap`` and ``passages_length.npy`` into ``out_dir``."""
    n, width = index.num_docs, settings.max_seq_length
    tokens_path = out_dir / f"{PASSAGE_PREFIX}.memmap"
    lengths_path = out_dir / f"{PASSAGE_PREFIX}_length.tmp"
    _allocate(tokens_path, n * width * np.dtype(TOKEN_DTYPE).itemsize)  # zero-filled, space taken now
    _allocate(lengths_path, n * np.dtype(TOKEN_DTYPE).itemsize)
    # The original's ranges: [round(N*i/t), round(N*(i+1)/t)).
    bounds = [round(n * i / threads) for i in range(threads + 1)]
    jobs = [
        DocRange(
            str(index.path),
            index.line_starts[a] if index.layout != "txt" else 0,
            a,
            b,
            str(tokens_path),
            str(lengths_path),
            n,
            width,
            settings.max_doc_character,
            tokenizer.field_separator,
            index.layout,
            tuple(str(p) for p in index.files[a:b]) if index.layout == "txt" else (),
        )
        for a, b in zip(bounds, bounds[1:])
        if b > a
    ]
    with progress(total=n, unit="doc", desc="tokenizing documents", mininterval=1.0) as bar:
        if len(jobs) == 1:
            tokenize_doc_range(tokenizer, jobs[0], _BarProgress(bar))
        else:
            _run_doc_workers(tokenizer, jobs, bar)
    lengths = np.array(np.memmap(lengths_path, dtype=TOKEN_DTYPE, mode="r", shape=(n,)))
    np.save(out_dir / f"{PASSAGE_PREFIX}_length.npy", lengths)
    lengths_path.unlink()
    _write_meta(out_dir / f"{PASSAGE_PREFIX}_meta", n, width)
    _write_pickle(out_dir / "pid2offset.pickle", index.pid2offset)


def write_split(
    tokenizer: StarTokenizer, split: str, data: SplitInput, out_dir: Path, settings: Settings
) -> None:
    """The five files of one query split."""
    n, width = len(data.qids), settings.max_query_length
    tokens = np.memmap(
        out_dir / f"{query_prefix(split)}.memmap", dtype=TOKEN_DTYPE, mode="w+", shape=(n, width)
    )
    lengths = np.zeros(n, dtype=TOKEN_DTYPE)
    for a in progress(
        range(0, n, QUERIES_PER_CALL),
        desc=f"tokenizing {split} queries",
        unit="batch",
        enabled=n > QUERIES_PER_CALL,
    ):
        block, lens = _pad(tokenizer.encode_queries(data.texts[a : a + QUERIES_PER_CALL], width), width)
        tokens[a : a + len(block)] = block  # (b, max_query_length)
        lengths[a : a + len(block)] = lens
    tokens.flush()
    del tokens
    np.save(out_dir / f"{query_prefix(split)}_length.npy", lengths)
    _write_meta(out_dir / f"{query_prefix(split)}_meta", n, width)
    qid2offset = {qid: i for i, qid in enumerate(data.qids)}
    _write_pickle(out_dir / f"{split}-qid2offset.pickle", qid2offset)
    with open(out_dir / f"{split}-qrel.tsv", "w", encoding="utf-8") as f:
        for qid, doffset, rel in data.qrels:
            f.write(f"{qid2offset[qid]}\t0\t{doffset}\t{rel}\n")
    logger.info("%s: %d judged queries, %d qrels lines", split, n, len(data.qrels))


def _write_meta(path: Path, total: int, width: int) -> None:
    with open(path, "w") as f:
        json.dump({"type": "int32", "total_number": int(total), "embedding_size": int(width)}, f)


def _write_pickle(path: Path, mapping: dict[int, int] | dict[str, int]) -> None:
    """MS MARCO's integer ids stay ints (the original's pickle); a collection's string ids stay strings."""
    with open(path, "wb") as f:
        pickle.dump(
            {(k if isinstance(k, str) else int(k)): int(v) for k, v in mapping.items()},
            f,
            protocol=PICKLE_PROTOCOL,
        )


# ----------------------------------------------------------------------------------------------
# The whole step
# ----------------------------------------------------------------------------------------------


def _clear_stale(out: Path) -> None:
    """Remove ``<out>.incomplete-<pid>`` folders of runs that are gone; refuse if one is still running."""
    for p in out.parent.glob(out.name + INCOMPLETE_TAG + "*"):
        pid = p.name[len(out.name + INCOMPLETE_TAG) :]
        if not pid.isdecimal() or int(pid) == os.getpid():
            continue
        if pid_alive(int(pid)):
            raise SeDRInputError(
                f"{p} is being written by process {pid}; wait for it, or delete the folder "
                "if no preprocessing run is active"
            )
        logger.info("removing %s left by an interrupted run", p)
        shutil.rmtree(p)


def _describe_source(collection: dict | None) -> str:
    return "the MS MARCO files" if collection is None else json.dumps(collection, ensure_ascii=False)


def _check_existing(
    out: Path, settings: Settings, stamps: dict[str, list[int]], collection: dict | None = None
) -> bool:
    """True if ``out`` already holds a complete output made with ``settings`` from the same inputs
    (``collection``: the record of a collection's files, ``None`` for MS MARCO's)."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    missing = missing_outputs(out)
    if missing:
        raise SeDRInputError(
            f"{out} exists but is incomplete (missing {', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); delete it or pass another --output_dir"
        )
    record = read_record(out)  # ours; a folder made by the original has only the meta files
    first_split = (record.get(SPLITS_KEY) or list(SPLIT_FILES))[0]
    found = {
        "max_seq_length": json.loads((out / f"{PASSAGE_PREFIX}_meta").read_text())["embedding_size"],
        "max_query_length": json.loads((out / f"{query_prefix(first_split)}_meta").read_text())[
            "embedding_size"
        ],
    }
    found.update(record)
    if found.get(COLLECTION_KEY) != collection:
        raise SeDRInputError(
            f"{out} was made from {_describe_source(found.get(COLLECTION_KEY))}, not from "
            f"{_describe_source(collection)}; delete it or pass another --output_dir"
        )
    changed = [
        f"{n} ({found['inputs'][n]} -> {now})"
        for n, now in stamps.items()
        if n in found.get("inputs", {}) and found["inputs"][n] != now
    ]
    if changed:
        raise SeDRInputError(
            f"{out} was made from other versions of its raw inputs: {', '.join(changed)} "
            "([bytes, mtime_ns] then -> now); delete it or pass another --output_dir"
        )
    want = asdict(settings)
    differ = [k for k in want if k in found and found[k] != want[k] and k != "model_name_or_path"]
    if differ:
        raise SeDRInputError(
            f"{out} was made with other settings ("
            + ", ".join(f"{k}={found[k]} instead of {want[k]}" for k in differ)
            + "); delete it or pass another --output_dir"
        )
    if found.get("model_name_or_path", want["model_name_or_path"]) != want["model_name_or_path"]:
        logger.warning(
            "%s was made with tokenizer %s, not %s; keeping it",
            out,
            found["model_name_or_path"],
            want["model_name_or_path"],
        )
    return True


def preprocess(
    data_path: str | Path,
    output_dir: str | Path | None = None,
    settings: Settings | None = None,
    threads: int = 1,
) -> bool:
    """Preprocess end to end. Returns False when ``output_dir`` was already complete (nothing done)."""
    settings = settings or Settings()
    data_path = Path(data_path)
    out = Path(output_dir) if output_dir is not None else data_path / "preprocess"
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    paths = input_paths(data_path)
    if _check_existing(out, settings, input_stamps(paths)):
        logger.info("%s is already complete; nothing to do", out)
        return False
    for p in paths.values():
        if not p.is_file():
            raise MissingInputError(p, DOWNLOAD_HINT)
    # One writer per output folder, as every other step (docs/errors.md#outputs): a second run is refused.
    with claim(out, lock_in=out.parent, lock_name=out.name, earlier=list, what="the preprocess folder"):
        if _check_existing(out, settings, paths):  # a run that held the lock before us completed it
            logger.info("%s is already complete; nothing to do", out)
            return False
        _clear_stale(out)
        _write_all(out, paths, settings, threads)
    return True


def _write_all(out: Path, paths: dict[str, Path], settings: Settings, threads: int) -> None:
    """Read and check the raw inputs, then write every output into a temporary folder renamed to ``out``."""
    tokenizer, record = load_tokenizer(settings.model_name_or_path)  # the record says how it tokenizes
    index = scan_corpus(paths["corpus"])
    splits = {
        s: read_split(paths[f"{s}.queries"], paths[f"{s}.qrels"], index.pid2offset) for s in SPLIT_FILES
    }

    need = index.num_docs * (settings.max_seq_length + 1) * np.dtype(TOKEN_DTYPE).itemsize
    ensure_writable(out.parent, need, "the token memmaps")
    tmp = out.parent / f"{out.name}{INCOMPLETE_TAG}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        tokenize_corpus(tokenizer, index, tmp, settings, min(threads, index.num_docs))
        with writing(tmp):
            for split, data in splits.items():
                write_split(tokenizer, split, data, tmp, settings)
            written = {**asdict(settings), RECORD_KEY: record, "inputs": input_stamps(paths)}
            (tmp / PREPROCESS_RECORD).write_text(json.dumps(written, indent=1))
        if out.exists():
            out.rmdir()  # empty (checked above); a non-empty folder was refused
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "wrote %s: %d documents, %s",
        out,
        index.num_docs,
        ", ".join(f"{s} {len(d.qids)} queries" for s, d in splits.items()),
    )


def default_threads() -> int:
    """The original used 32 processes; never more than the machine has."""
    return max(1, min(32, os.cpu_count() or 1))


# ----------------------------------------------------------------------------------------------
# A collection described by files (docs/own-collection.md#preprocess)
# ----------------------------------------------------------------------------------------------

_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
BEIR_QRELS_FOLDER = "qrels"  # BEIR: <folder>/queries.jsonl and <folder>/qrels/<split>.tsv


@dataclass(frozen=True)
class SplitSource:
    """One named split of a collection: its query file and its qrels file."""

    name: str
    queries: Path
    qrels: Path


def check_split_name(name: str, what: str = "split name") -> str:
    """Split names become file names (``{split}-query.memmap``): letters, digits, ``_ . -``."""
    if not _SPLIT_NAME.fullmatch(name):
        raise SeDRInputError(
            f"{what} {name!r} must start with a letter or digit and hold only letters, digits, '_', '.', '-'"
        )
    return name


def parse_split(text: str) -> SplitSource:
    """``NAME=QUERIES[:QRELS]``; without ``QRELS``, BEIR's ``qrels/NAME.tsv`` beside ``QUERIES``."""
    name, sep, files = text.partition("=")
    if not sep or not files:
        raise SeDRInputError(f"--split {text!r}: expected NAME=QUERIES[:QRELS]")
    check_split_name(name)
    queries, qrels = (files, None) if Path(files).exists() or ":" not in files else files.rsplit(":", 1)
    queries = Path(queries)
    return SplitSource(
        name, queries, Path(qrels) if qrels else queries.parent / BEIR_QRELS_FOLDER / f"{name}.tsv"
    )


@dataclass(frozen=True)
class CollectionSource:
    """A corpus file (or folder of ``.txt``) and its named splits."""

    corpus: Path
    splits: tuple[SplitSource, ...]

    def files(self) -> list[Path]:
        out = [self.corpus]
        for s in self.splits:
            out += [p for p in (s.queries, s.qrels) if p not in out]
        return out

    def record(self) -> dict:
        """What ``preprocess_args.json`` keeps of the source (absolute paths, split order)."""
        return {
            "corpus": str(self.corpus.resolve()),
            "splits": {
                s.name: {"queries": str(s.queries.resolve()), "qrels": str(s.qrels.resolve())}
                for s in self.splits
            },
        }

    def stamps(self) -> dict[str, list[int]]:
        """``{absolute path: [bytes, mtime_ns]}`` of the files that exist (a folder: its ``.txt`` files)."""
        paths = [p for f in self.files() for p in (sorted(f.rglob("*.txt")) if f.is_dir() else [f])]
        return {str(p.resolve()): [p.stat().st_size, p.stat().st_mtime_ns] for p in paths if p.is_file()}

    def materialize(self, staging: Path) -> CollectionSource:
        """The files to read (they are the files already)."""
        return self


def _check_split_names(names: Sequence[str]) -> None:
    if not names:
        raise SeDRInputError("a collection needs at least one split: --split NAME=QUERIES[:QRELS]")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SeDRInputError(f"split name(s) given twice: {', '.join(repeated)}")
    for n in names:
        check_split_name(n)


STAGING = "inputs"  # inside <output_dir>.incomplete-<pid>: files an ir_datasets source writes, removed after


def preprocess_collection(
    source,
    output_dir: str | Path,
    settings: Settings | None = None,
    threads: int = 1,
) -> bool:
    """A collection's corpus and splits into the preprocess folder the pipeline reads, with the split
    names and the source in ``preprocess_args.json``. ``source``: a :class:`CollectionSource`, or
    anything with its ``splits`` names, ``record()``, ``stamps()`` and ``materialize(folder)`` (ir_datasets).
    Returns False when ``output_dir`` was already complete (nothing done)."""
    settings = settings or Settings()
    out = Path(output_dir)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    names = [s.name for s in source.splits]
    _check_split_names(names)
    if _check_existing(out, settings, source.stamps(), source.record()):
        logger.info("%s is already complete; nothing to do", out)
        return False
    if isinstance(source, CollectionSource):
        for p in source.files():
            if not p.exists():
                raise MissingInputError(
                    p, "check the --corpus and --split paths (docs/own-collection.md#preprocess)"
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(out)
    tokenizer, tok_record = load_tokenizer(settings.model_name_or_path)
    tmp = out.parent / f"{out.name}{INCOMPLETE_TAG}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        files = source.materialize(tmp / STAGING)
        corpus = scan_collection_corpus(files.corpus)
        splits = {
            s.name: read_collection_split(s.queries, s.qrels, corpus.pid2offset, files.corpus)
            for s in files.splits
        }
        need = corpus.num_docs * (settings.max_seq_length + 1) * np.dtype(TOKEN_DTYPE).itemsize
        ensure_writable(out.parent, need, "the token memmaps")
        tokenize_corpus(tokenizer, corpus, tmp, settings, min(threads, corpus.num_docs))
        with writing(tmp):
            for split, data in splits.items():
                write_split(tokenizer, split, data, tmp, settings)
            written = {
                **asdict(settings),
                RECORD_KEY: tok_record,
                "inputs": source.stamps(),
                SPLITS_KEY: names,
                COLLECTION_KEY: source.record(),
            }
            (tmp / PREPROCESS_RECORD).write_text(json.dumps(written, indent=1, ensure_ascii=False))
        shutil.rmtree(tmp / STAGING, ignore_errors=True)
        if out.exists():
            out.rmdir()  # empty (checked above); a non-empty folder was refused
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "wrote %s: %d documents, %s",
        out,
        corpus.num_docs,
        ", ".join(f"{s} {len(d.qids)} queries" for s, d in splits.items()),
    )
    return True
