"""Search your own documents with a trained model: :class:`Retriever` (docs/your-documents.md).

A document goes through the pipeline's own steps: its text as ``SeDR_preprocess.py`` builds it (cut
to 10,000 characters, tokenised by the 2.8-emulating tokenizer, 2,048 tokens kept), the model's
segmentation, the forward passes of :func:`SeDR.retrieval.encoding.encode_corpus`, exact inner-product
search and best-segment ranking. So an index and a search give what ``SeDR/inference.py`` gives for
the same model and documents. The folder it writes: :mod:`SeDR.api.index_folder`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from SeDR.api.index_folder import DocumentIndex, DocumentWriter, new_folder, refuse_taken
from SeDR.core.constants import (
    DEFAULT_MAX_DOC_CHARACTER,
    DEFAULT_MAX_QUERY_LENGTH,
    DEFAULT_MAX_SEQ_LENGTH,
    TRAINING_ARGS,
)
from SeDR.core.errors import SeDRInputError
from SeDR.core.progress import progress
from SeDR.core.runtime import resolve_device, resolve_precision
from SeDR.data.document_files import read_documents
from SeDR.data.preprocessing import Settings
from SeDR.data.segmentation import SegmentSpec, num_segments
from SeDR.data.tokenization import StarTokenizer
from SeDR.data.tokenizer_record import describe, has_tokenizer_files, load_tokenizer, model_mismatch
from SeDR.modeling import load_model
from SeDR.modeling.checkpoint import read_config_dict, recorded_class
from SeDR.retrieval import embedding_files, exact_search
from SeDR.retrieval.encoding import encode_corpus, encode_queries
from SeDR.retrieval.ranking import exact_hits, unique_docs

logger = logging.getLogger(__name__)


# What SeDR/inference.py uses without flags, for a checkpoint that records no training run.
DEFAULT_SEG_LENGTH, DEFAULT_SEG_NUM, DEFAULT_QUERY_LENGTH, DEFAULT_MAX_BSIZE = 512, 4, 32, 100


# A STAR folder or a plain encoder records no class: one vector per segment, no interaction.
UNRECORDED_CLASS = "STAR_MaxP"


TOKENIZE_CHUNK = 128  # documents per tokenizer call (memory only)


class Hit(NamedTuple):
    """One ranked document: its id, the score of its best segment,
    and that segment's index in the document."""

    doc_id: str
    score: float
    best_segment: int


class _Rows(list):
    """Token rows of one forward pass, shaped like a :class:`~SeDR.data.preprocess_folder.TokenCache`
    for ``encode_corpus``."""

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(r) for r in self], dtype=np.int64)


def _training_args(path: Path) -> dict:
    try:
        return json.loads((path / TRAINING_ARGS).read_text())
    except (OSError, ValueError):
        return {}


def _tokenizer_source(path: Path, trained: dict) -> str:
    """The model folder's tokenizer, else its training run's ``--init_path``'s, else preprocessing's default.

    A relative ``--init_path`` is tried from here and from the folder training ran in (the
    checkpoint's folder less the run's ``--output_dir``).
    """
    folders = [path]
    if trained.get("init_path"):
        run_dir, out = path.resolve().parent, Path(trained.get("output_dir", "."))
        for _ in () if out.is_absolute() else out.parts:
            run_dir = run_dir.parent
        folders += [Path(trained["init_path"]), run_dir / trained["init_path"]]
    for folder in folders:
        if has_tokenizer_files(folder):
            return str(folder)
    return Settings().model_name_or_path


def _pairs(docs: Iterable, ids: Iterable | None) -> Iterator[tuple[str, str]]:
    """``(id, text)``: texts with ``ids`` (or their running number), or ``(id, text)`` pairs."""
    ids = iter(ids) if ids is not None else None
    for n, item in enumerate(docs):
        if ids is None:
            doc_id, text = (n, item) if isinstance(item, str) else item
        elif (doc_id := next(ids, None)) is None:
            raise SeDRInputError(f"fewer ids than documents ({n})")
        else:
            text = item
        if not isinstance(text, str):
            raise SeDRInputError(
                f"document {n} ({doc_id!r}): the text must be a str, got {type(text).__name__}"
            )
        yield str(doc_id), text
    if ids is not None and next(ids, None) is not None:
        raise SeDRInputError("more ids than documents")


class Retriever:
    """A model with its tokenizer and segmentation, on the CLI's device and precision:
    indexes and searches documents."""

    def __init__(
        self,
        model,
        tokenizer: StarTokenizer,
        spec: SegmentSpec,
        model_path: str | Path,
        *,
        tokenizer_source: str = "",
        tokenizer_record: dict | None = None,
        max_query_length: int = DEFAULT_QUERY_LENGTH,
        device: torch.device | None = None,
        fp16: bool = False,
        bf16: bool = False,
    ):
        self.device = device or resolve_device()
        self.precision = resolve_precision(self.device, fp16=fp16, bf16=bf16, training=False)
        self.model = model.to(self.device).eval()
        self.tokenizer, self.spec, self.max_query_length = tokenizer, spec, int(max_query_length)
        documents = {
            "tokenizer": tokenizer_source,
            "max_doc_length": DEFAULT_MAX_SEQ_LENGTH,
            "max_doc_character": DEFAULT_MAX_DOC_CHARACTER,
        }
        if tokenizer_record is not None:  # what the tokenizer is, whatever its folder's name
            documents["tokenizer_record"] = {k: v for k, v in tokenizer_record.items() if k != "name_or_path"}
        self.identity = embedding_files.embedding_identity(
            model, model_path, spec.max_seg_length, spec.max_seg_num, spec.content_len, **documents
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        model_class: str | None = None,
        max_seg_length: int | None = None,
        max_seg_num: int | None = None,
        max_query_length: int | None = None,
        tokenizer: str | None = None,
        device: str | None = None,
        fp16: bool = False,
        bf16: bool = False,
    ) -> Retriever:
        """Load a checkpoint of any model class, a STAR folder or a BERT/RoBERTa encoder.

        Unset values come from the checkpoint (``config.json``, then the ``training_args.json`` of
        its training run), else the inference defaults (512, 4, 32); the tokenizer from the model
        folder, else the training run's ``--init_path``, else ``roberta-base`` as in preprocessing.
        """
        path = Path(path)
        cfg, trained = read_config_dict(path), _training_args(path)
        name = model_class or recorded_class(cfg) or UNRECORDED_CLASS
        if name == "SeDR_Longformer":
            raise SeDRInputError(
                f"{path}: SeDR-Longformer checkpoints encode one 2048-token row per document; "
                "search them with SeDR_Longformer/inference.py"
            )
        shape = {
            "max_seg_length": max_seg_length or trained.get("max_seg_length") or DEFAULT_SEG_LENGTH,
            "max_seg_num": max_seg_num
            or cfg.get("max_seg_num")
            or trained.get("max_seg_num")
            or DEFAULT_SEG_NUM,
            "max_query_length": max_query_length or trained.get("max_query_length") or DEFAULT_QUERY_LENGTH,
        }
        for flag, value in shape.items():
            if trained.get(flag) not in (None, value):
                logger.warning("%s was trained with %s=%s; using %s", path, flag, trained[flag], value)
        model = load_model(path, model_class=name, max_seg_num=int(shape["max_seg_num"]))
        try:
            spec = SegmentSpec(
                int(shape["max_seg_length"]),
                int(shape["max_seg_num"]),
                extra_reserve=model.extra_content_reserve,
            )
        except ValueError as err:
            raise SeDRInputError(str(err)) from None
        source = tokenizer or _tokenizer_source(path, trained)
        star, record = load_tokenizer(source)
        model_side = model_mismatch(record, model)
        if model_side is not None:
            what = f"--tokenizer {source}" if tokenizer else f"the tokenizer {source} found for {path}"
            raise SeDRInputError(
                f"{what} ({describe(record)}) is not the tokenizer of {path} ({model_side}): its ids "
                "would mean other tokens to the model; "
                + (
                    "leave --tokenizer out to use the model's"
                    if tokenizer
                    else "pass the model's with --tokenizer"
                )
            )
        logger.info(
            "%s as %s, segments (%d, %d), queries %d tokens, tokenizer %s",
            path,
            name,
            spec.max_seg_length,
            spec.max_seg_num,
            shape["max_query_length"],
            source,
        )
        return cls(
            model,
            star,
            spec,
            path,
            tokenizer_source=source,
            tokenizer_record=record,
            max_query_length=int(shape["max_query_length"]),
            device=torch.device(device) if device else None,
            fp16=fp16,
            bf16=bf16,
        )

    # ------------------------------------------------------------------------------------- indexing

    def index(
        self,
        docs,
        ids: Iterable | None = None,
        *,
        out: str | Path | None = None,
        overwrite: bool = False,
        batch_size: int = DEFAULT_MAX_BSIZE,
        keep_texts: bool = True,
        show_progress: bool = True,
    ) -> DocumentIndex:
        """Encode every segment of ``docs`` into an index folder ``out`` (a temporary one if None).

        ``docs``: a path (``.tsv``, ``.jsonl``, folder of ``.txt``, read twice: every line is checked
        before any encoding), or an iterable of texts (ids from ``ids``, else ``"0", "1", ...``) or
        of ``(id, text)`` pairs, consumed once. ``batch_size``: segments per forward pass.
        """
        total = len(docs) if hasattr(docs, "__len__") and not isinstance(docs, str) else None
        if isinstance(docs, (str, os.PathLike)):
            if out is not None:
                refuse_taken(Path(out), overwrite)
            sep = self.tokenizer.field_separator
            total = sum(
                1
                for _ in progress(
                    read_documents(docs, sep), desc="check documents", unit="doc", enabled=show_progress
                )
            )
            docs = read_documents(docs, sep)
        temporary = out is None
        out = Path(tempfile.mkdtemp(prefix="sedr-index-")) / "index" if temporary else Path(out)
        try:
            with new_folder(out, overwrite) as tmp:
                self._write(tmp, _pairs(docs, ids), batch_size, keep_texts, show_progress, total)
        finally:
            if temporary and not out.exists():
                shutil.rmtree(out.parent, ignore_errors=True)
        return DocumentIndex(out, temporary) if temporary else self.load_index(out)

    def _write(
        self, folder: Path, items, batch_size: int, keep_texts: bool, show_progress: bool, total
    ) -> None:
        t0 = time.time()
        bar = progress(total=total, desc="index documents", unit="doc", enabled=show_progress)
        sink = DocumentWriter(folder, keep_texts)
        with embedding_files.SegmentEmbeddingWriter(
            folder, self.model.embedding_dim, info=self.identity
        ) as writer:
            for offsets, rows in self._passes(items, batch_size, sink):
                for vecs, local in encode_corpus(
                    self.model, rows, self.spec, batch_size, self.device, self.precision, show_progress=False
                ):
                    writer.append(vecs, offsets[local])
                bar.update(sink.count - bar.n)
            if not sink.count:
                raise SeDRInputError("no documents to index")
            writer.info["num_docs"] = sink.count
            sink.close()
        bar.close()
        if sink.empty:
            logger.warning("%d documents have no text; they are kept but can never be retrieved", sink.empty)
        logger.info(
            "indexed %d documents (%d segment vectors) in %.1fs",
            sink.count,
            writer.rows,
            time.time() - t0,
        )

    def _passes(self, items, max_bsize: int, sink: DocumentWriter) -> Iterator[tuple[np.ndarray, _Rows]]:
        """Documents tokenised in chunks and packed in order while a pass holds at most ``max_bsize``
        segments: the passes of :func:`SeDR.data.sampling.document_batches`, streamed, one pass in memory."""
        rows, offsets, used = _Rows(), [], 0
        while chunk := list(islice(items, TOKENIZE_CHUNK)):
            texts = [t[:DEFAULT_MAX_DOC_CHARACTER] for _, t in chunk]
            for (doc_id, _), text, ids in zip(
                chunk, texts, self.tokenizer.encode_documents(texts, DEFAULT_MAX_SEQ_LENGTH)
            ):
                s = num_segments(len(ids), self.spec)
                sink.add(doc_id, text, s)
                if rows and used + s > max_bsize:
                    yield np.asarray(offsets, dtype=np.int32), rows
                    rows, offsets, used = _Rows(), [], 0
                if s:  # an empty document has no segment and no row
                    rows.append(np.asarray(ids, dtype=np.int64))
                    offsets.append(sink.count - 1)
                    used += s
        yield np.asarray(offsets, dtype=np.int32), rows

    def load_index(self, path: str | Path) -> DocumentIndex:
        """Open an index folder; one built by another model, class or segmentation is refused."""
        index = DocumentIndex(path)
        self._check(index)
        return index

    def _check(self, index: DocumentIndex) -> None:
        keys = [k for k in embedding_files.SEARCH_KEYS if k in self.identity]  # a record, where there is one
        diff = embedding_files.identity_changes(index.info, self.identity, keys)
        if "tokenizer_record" in diff and set(diff) == {"tokenizer_record"}:
            theirs, mine = diff["tokenizer_record"]
            raise SeDRInputError(
                f"{index.folder} was built with the tokenizer {index.info.get('tokenizer')} "
                f"({describe(theirs)}), this retriever tokenizes with {self.identity.get('tokenizer')} "
                f"({describe(mine)}): queries would be other ids than the "
                "documents; search with the index's tokenizer (--tokenizer) or rebuild the index"
            )
        if diff:
            what = ", ".join(f"{k} {a!r} (index) vs {b!r} (this retriever)" for k, (a, b) in diff.items())
            raise SeDRInputError(
                f"{index.folder} was built by another model or segmentation ({what}); search it "
                f"with the model that built it ({index.info.get('model_path')}) or rebuild it"
            )

    # ------------------------------------------------------------------------------------- search

    def encode_queries(
        self, queries: Sequence[str], batch_size: int = 32, show_progress: bool = True
    ) -> np.ndarray:
        """Query vectors float32 ``[n, d]``: tokenised and stored at 64 ids as
        preprocessing does, cut at use."""
        stored = self.tokenizer.encode_queries([q.rstrip() for q in queries], DEFAULT_MAX_QUERY_LENGTH)
        return encode_queries(
            self.model,
            [np.asarray(q, dtype=np.int64) for q in stored],
            self.max_query_length,
            batch_size,
            self.device,
            self.precision,
            show_progress=show_progress,
        )

    def search(
        self,
        index: DocumentIndex,
        queries: str | Sequence[str],
        k: int = 10,
        *,
        batch_size: int = 32,
        show_progress: bool = True,
        faiss_gpus: Sequence[int] | None = None,
        search_backend: str = "auto",
    ) -> list[list[Hit]]:
        """Per query, the top ``k`` documents ranked by their best segment among the segment hits."""
        self._check(index)
        queries = [queries] if isinstance(queries, str) else list(queries)
        qvecs = self.encode_queries(queries, batch_size, show_progress)
        # Top-k by best segment is exact when the hits hold (k-1) documents' rows plus one
        # (docs/retrieval.md#maxp-exactness); an index with a k limit (faiss-gpu) gets at most that many.
        searcher = index.searcher(faiss_gpus, search_backend)
        max_rows = int(np.diff(index.first_row).max(initial=1))
        hits = exact_hits(k, max_rows)
        if searcher.max_k is not None and hits > searcher.max_k:
            logger.warning(
                "this index returns at most %d segment rows per query: the first %d documents are exact, "
                "later ones may be missed (search_backend='torch' gives an exact top %d)",
                searcher.max_k,
                (searcher.max_k - 1) // max_rows + 1,
                k,
            )
            hits = searcher.max_k
        out = []
        for _, scores, rows in exact_search.iter_search(searcher, qvecs, hits, None, show_progress, "search"):
            for s, r in zip(scores, rows):
                docs, best_rows, best = unique_docs(r, index.embeddings.doc_ids, s, k)
                out.append(
                    [
                        Hit(
                            index.ids[d],
                            float(v),
                            0 if self.spec.max_seg_num == 1 else int(row - index.first_row[d]),
                        )
                        for d, row, v in zip(docs, best_rows, best)
                    ]
                )
        return out

    def segment_text(self, index: DocumentIndex, doc_id: str, segment: int) -> str | None:
        """The text of one segment, detokenised from the model's tokens (None if the index keeps no texts)."""
        text = index.text(index.offset(doc_id))
        if text is None:
            return None
        ids = self.tokenizer.encode_documents([text[:DEFAULT_MAX_DOC_CHARACTER]], DEFAULT_MAX_SEQ_LENGTH)[0]
        L = self.spec.content_len
        return self.tokenizer.backend.decode(ids[segment * L : (segment + 1) * L], skip_special_tokens=True)
