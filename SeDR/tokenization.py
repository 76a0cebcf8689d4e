"""The STAR tokenizer: transformers-2.8's lower-cased slow RoBERTa tokenizer, emulated on a fast one.

The released STAR checkpoint (and hence every SeDR number) was trained on ids produced by a
vendored copy of the transformers-2.8.0 *slow* ``RobertaTokenizer`` built with
``do_lower_case=True``. Current transformers no longer ships a slow RoBERTa tokenizer and its
fast one behaves differently (prefix space, no lower-casing, ``<mask>`` lstrip). SPEC §1.2 lists
the five rules we reproduce here on top of the Rust ``tokenizers`` backend, batched:

1. a prefix space for queries (special tokens added) unless the text starts with whitespace;
   none for documents;
2. lower-casing character by character (see :func:`lower_per_character`);
3. splitting on the literal special-token strings, ``rstrip`` of every piece, empty pieces
   dropped, special strings become their ids;
4. byte-level BPE of every piece on its own (no prefix space: the first word of a piece that
   follows ``</s>`` has no ``Ġ`` marker);
5. truncation before the special tokens are added, so ``CLS``/``EOS`` of a query survive.

The same class serves a BERT WordPiece tokenizer (the demo's all-MiniLM-L6-v2): special strings
are matched after lower-casing (``[SEP]`` as ``[sep]``), queries become ``[CLS] … [SEP]`` (the
prefix space is dropped by BERT's pre-tokenizer), and documents join their fields with
:attr:`StarTokenizer.field_separator` (``[SEP]``) since BERT has no ``</s>``.

:class:`ReferenceRobertaTokenizer` is a slow, literal pure-Python restatement of the 2.8
algorithm (GPT-2 regex, byte encoder, merge loop). It is the per-document baseline of
``bench/preprocess.py`` and the independent oracle of the tests; nothing in the pipeline uses it.

Known divergence: Python 3.6-era Unicode tables of the original vs the interpreter's tables here
(only characters added to Unicode since then can lower-case or classify differently).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from functools import lru_cache

from SeDR.constants import DOC_FIELD_SEPARATOR

logger = logging.getLogger(__name__)

# Capital sigma is the only character whose lower case CPython computes from context (final
# sigma); lower-casing one character at a time, as 2.8 did, always yields the non-final form.
_CAPITAL_SIGMA, _SMALL_SIGMA = "\u03a3", "\u03c3"


def lower_per_character(text: str) -> str:
    """Lower-case ``text`` as 2.8's ``do_lower_case`` did: each character on its own (SPEC §1.2 rule 2).

    Equal to ``"".join(c.lower() for c in text)`` but runs in C. Length can grow (``"İ"`` becomes
    ``"i̇"``, two characters) exactly as in the original; the 10,000-character cut happens before
    lower-casing there and here, so this does not change which characters are kept.
    """
    if _CAPITAL_SIGMA in text:
        text = text.replace(_CAPITAL_SIGMA, _SMALL_SIGMA)
    return text.lower()


def _split_pattern(special_tokens: Sequence[str]) -> re.Pattern:
    # Longest first so that a special string that prefixes another cannot win (none do for RoBERTa).
    alternatives = sorted(set(special_tokens), key=len, reverse=True)
    return re.compile("(" + "|".join(re.escape(s) for s in alternatives) + ")")


class StarTokenizer:
    """Batched emulation of the 2.8 slow tokenizer (SPEC §1.2) on a ``tokenizers`` backend.

    Build it with :meth:`from_pretrained`; it pickles compactly (the backend travels as JSON), so
    worker processes can rebuild it without importing ``transformers``.
    """

    def __init__(self, backend, special_ids: dict[str, int], cls_id: int, eos_id: int):
        from tokenizers import Tokenizer, pre_tokenizers

        # A private copy: we change its settings and must not touch the caller's tokenizer.
        self.backend = Tokenizer.from_str(backend.to_str()) if not isinstance(backend, str) else Tokenizer.from_str(backend)
        self.backend.no_truncation()
        self.backend.no_padding()
        pre = self.backend.pre_tokenizer
        if isinstance(pre, pre_tokenizers.ByteLevel) and pre.add_prefix_space:
            # Rule 4: pieces are encoded without a prefix space.
            pre.add_prefix_space = False
            self.backend.pre_tokenizer = pre
        self.special_ids = dict(special_ids)
        self.cls_id, self.eos_id = cls_id, eos_id
        # Text is lower-cased before the split (rule 2), so the split matches lower-cased special
        # strings: the same strings for RoBERTa (all lower case), ``[sep]`` for BERT's ``[SEP]``.
        self._lowered_ids = {lower_per_character(s): i for s, i in self.special_ids.items()}
        self._split = _split_pattern(list(self._lowered_ids))

    @property
    def field_separator(self) -> str:
        """The string that joins url, title and body of a document (SPEC §1.3).

        RoBERTa's literal ``</s>``; a tokenizer without it (BERT WordPiece) uses its own separator
        token string (``[SEP]``), which the split turns into ``eos_id`` just as ``</s>`` becomes 2.
        """
        if DOC_FIELD_SEPARATOR in self.special_ids:
            return DOC_FIELD_SEPARATOR
        for s, i in self.special_ids.items():
            if i == self.eos_id:
                return s
        raise ValueError(f"no special-token string has the separator id {self.eos_id}")

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> StarTokenizer:
        """Load ``name_or_path`` with ``AutoTokenizer`` (fast) and read the special ids from it."""
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name_or_path)
        if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
            raise ValueError(f"{name_or_path}: a fast (tokenizers-backed) tokenizer is required")
        # 2.8 split on every special and added token string (``unique_added_tokens_encoder``).
        strings = list(tok.all_special_tokens) + list(tok.get_added_vocab())
        special_ids = {s: tok.convert_tokens_to_ids(s) for s in strings}
        return cls(tok.backend_tokenizer, special_ids, tok.cls_token_id, tok.sep_token_id)

    def __reduce__(self):
        return (StarTokenizer, (self.backend.to_str(), self.special_ids, self.cls_id, self.eos_id))

    # ------------------------------------------------------------------------------------------

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Rules 2-4 on every text, with one backend call for all pieces of all texts."""
        layouts: list[list[int | str]] = []   # per text: special ids (int) or piece markers ("")
        pieces: list[str] = []
        for text in texts:
            parts = self._split.split(lower_per_character(text))
            layout: list[int | str] = []
            for k, part in enumerate(parts):
                if k % 2:                       # a captured special-token string
                    layout.append(self._lowered_ids[part])
                    continue
                part = part.rstrip()            # rule 3: rstrip, never lstrip; drop empties
                if part:
                    layout.append("")
                    pieces.append(part)
            layouts.append(layout)
        encoded = self.backend.encode_batch_fast(pieces, add_special_tokens=False) if pieces else []
        out: list[list[int]] = []
        k = 0
        for layout in layouts:
            ids: list[int] = []
            for item in layout:
                if isinstance(item, int):
                    ids.append(item)
                else:
                    ids.extend(encoded[k].ids)
                    k += 1
            out.append(ids)
        return out

    def encode_documents(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Document ids: no prefix space, no special tokens added, cut to ``max_length`` tokens."""
        return [ids[:max_length] for ids in self._encode(texts)]

    def encode_queries(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Query ids ``[CLS] + BPE(" " + text) + [EOS]``, at most ``max_length`` ids in total.

        An empty text gets no prefix (the original would have crashed on ``text[0]``).
        """
        if max_length < 2:
            raise ValueError(f"max_length must leave room for CLS and EOS, got {max_length}")
        prefixed = [t if (not t or t[0].isspace()) else " " + t for t in texts]
        return [[self.cls_id, *ids[: max_length - 2], self.eos_id] for ids in self._encode(prefixed)]


# ----------------------------------------------------------------------------------------------
# Slow reference (tests and bench only)
# ----------------------------------------------------------------------------------------------

# GPT-2's pre-tokenization pattern, as used by the 2.8 slow tokenizer (needs the ``regex`` module).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class ReferenceRobertaTokenizer:
    """Pure-Python, one-text-at-a-time restatement of the 2.8 slow lower-cased RoBERTa tokenizer.

    Written from the algorithm, not from the fast path above: regex lower-casing that skips
    special strings, sequential ``split`` on each special string with 2.8's keep/drop rules,
    GPT-2 regex, byte encoder and the rank-ordered merge loop (with a per-word cache, as 2.8 had).
    """

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], special_tokens: Sequence[str],
                 unk_token: str = "<unk>", cls_token: str = "<s>", eos_token: str = "</s>"):
        import regex

        self.vocab = vocab
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.special_tokens = list(special_tokens)
        self.unk, self.cls, self.eos = unk_token, cls_token, eos_token
        self.pattern = regex.compile(GPT2_PATTERN)
        alternatives = "|".join(re.escape(s) for s in self.special_tokens)
        self.lower_pattern = re.compile("(" + alternatives + r")|(.+?)")
        self.byte_encoder = byte_to_unicode()
        self.cache: dict[str, list[str]] = {}

    @classmethod
    def from_tokenizer_json(cls, tokenizer_json: str, special_tokens: Sequence[str]) -> ReferenceRobertaTokenizer:
        """Read vocabulary and merges out of a serialised ``tokenizers`` BPE model."""
        model = json.loads(tokenizer_json)["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return cls(model["vocab"], merges, special_tokens)

    @classmethod
    def from_star(cls, star: StarTokenizer) -> ReferenceRobertaTokenizer:
        return cls.from_tokenizer_json(star.backend.to_str(), list(star.special_ids))

    def _lower(self, text: str) -> str:
        return self.lower_pattern.sub(lambda m: m.group(1) or m.group(2).lower(), text)

    def _split_on_token(self, tok: str, text: str) -> list[str]:
        parts = text.split(tok)
        result: list[str] = []
        for i, sub in enumerate(parts):
            sub = sub.rstrip()
            if i == 0 and not sub:
                result.append(tok)
            elif i == len(parts) - 1:
                if sub:
                    result.append(sub)
            else:
                if sub:
                    result.append(sub)
                result.append(tok)
        return result

    def _bpe(self, word: str) -> list[str]:
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            best, best_rank = None, None
            for pair in zip(parts, parts[1:]):
                r = self.ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self.cache[word] = parts
        return parts

    def tokenize(self, text: str, add_special_tokens: bool) -> list[str]:
        if add_special_tokens and text and not text[0].isspace():
            text = " " + text
        text = self._lower(text)
        if not text.strip():
            return []
        pieces = [text]
        for tok in self.special_tokens:
            nxt: list[str] = []
            for p in pieces:
                nxt += [p] if p in self.special_tokens else self._split_on_token(tok, p)
            pieces = nxt
        tokens: list[str] = []
        for p in pieces:
            if p in self.special_tokens:
                tokens.append(p)
                continue
            for word in self.pattern.findall(p):
                tokens += self._bpe("".join(self.byte_encoder[b] for b in word.encode("utf-8")))
        return tokens

    def encode(self, text: str, add_special_tokens: bool, max_length: int) -> list[int]:
        unk = self.vocab[self.unk]
        ids = [self.vocab.get(t, unk) for t in self.tokenize(text, add_special_tokens)]
        if not add_special_tokens:
            return ids[:max_length]
        return [self.vocab[self.cls], *ids[: max_length - 2], self.vocab[self.eos]]
