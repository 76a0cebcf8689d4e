"""The STAR tokenizer: transformers-2.8's lower-cased slow RoBERTa tokenizer, emulated on a fast one.

Every SeDR number was trained on ids of a vendored transformers-2.8 *slow* ``RobertaTokenizer``
with ``do_lower_case=True``, which today's transformers no longer ships. Its five rules
(docs/data.md#star-tokenizer: prefix space for queries, per-character lower-casing, special-token
splitting with ``rstrip``, BPE per piece, truncation before CLS/EOS) are reproduced here on the
Rust ``tokenizers`` backend, batched. They are the roberta-base emulation; any other tokenizer
keeps its own casing and pre-tokenizer (docs/backbones.md#lower-casing). For byte-level BPE,
distinct GPT-2 pre-tokens are BPE-encoded once and their ids reused (ids byte-identical to the
backend's; ``bench/preprocess.py``). The slow reference is
:class:`SeDR.testing.reference_tokenizer.ReferenceRobertaTokenizer`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain

from SeDR.core.constants import DOC_FIELD_SEPARATOR
from SeDR.core.errors import check_model_folder

logger = logging.getLogger(__name__)

# Capital sigma is the only character whose lower case CPython computes from context (final
# sigma); lower-casing one character at a time, as 2.8 did, always yields the non-final form.
_CAPITAL_SIGMA, _SMALL_SIGMA = "\u03a3", "\u03c3"
# GPT-2's pre-tokenization pattern, as used by the 2.8 slow tokenizer (needs the ``regex`` module).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Pre-tokens whose ids a StarTokenizer keeps (about 50 MB); the cache is emptied when full.
WORD_CACHE_LIMIT = 200_000
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def lower_per_character(text: str) -> str:
    """Lower-case ``text`` as 2.8's ``do_lower_case`` did: each character on its own
    (docs/data.md#lower-casing).

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


def _gpt2_word_pattern(backend):
    """The GPT-2 pre-token regex if ``backend`` is a plain byte-level BPE (RoBERTa, GPT-2), else None.

    Applied only to pieces whose characters the ``regex`` module and the backend's engine classify
    alike (all ASCII, or non-ASCII characters probed by :meth:`StarTokenizer._same_class`): their
    Unicode tables differ for characters added in recent versions.
    """
    import regex
    from tokenizers import models, pre_tokenizers

    pre = backend.pre_tokenizer
    if (
        backend.normalizer is not None
        or not isinstance(backend.model, models.BPE)
        or not isinstance(pre, pre_tokenizers.ByteLevel)
        or not pre.use_regex
        or pre.add_prefix_space
    ):
        return None
    return regex.compile(GPT2_PATTERN)


def auto_tokenizer(name_or_path):
    """transformers' ``AutoTokenizer`` of a folder or a cached Hugging Face id; an id that is neither here
    nor downloadable is one line with the download command."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except OSError:
        check_model_folder(name_or_path)
        raise


class StarTokenizer:
    """Batched emulation of the 2.8 slow tokenizer on a ``tokenizers`` backend.

    Build it with :meth:`from_pretrained`; it pickles compactly (the backend travels as JSON, the
    caches stay behind), so worker processes can rebuild it without importing ``transformers``.
    ``word_cache=False`` hands every piece to the backend whole (the tests' and bench's yardstick).
    ``roberta_emulation`` switches rules 1, 2 and the prefix-space part of 4 on (``from_pretrained``
    decides it from the tokenizer).
    """

    def __init__(
        self,
        backend,
        special_ids: dict[str, int],
        cls_id: int,
        eos_id: int,
        word_cache: bool = True,
        roberta_emulation: bool = True,
    ):
        from tokenizers import Tokenizer, pre_tokenizers

        # A private copy: we change its settings and must not touch the caller's tokenizer.
        self.backend = (
            Tokenizer.from_str(backend.to_str())
            if not isinstance(backend, str)
            else Tokenizer.from_str(backend)
        )
        self.backend.no_truncation()
        self.backend.no_padding()
        self.roberta_emulation = roberta_emulation
        pre = self.backend.pre_tokenizer
        if roberta_emulation and isinstance(pre, pre_tokenizers.ByteLevel) and pre.add_prefix_space:
            # Rule 4: pieces are encoded without a prefix space.
            pre.add_prefix_space = False
            self.backend.pre_tokenizer = pre
        self.special_ids = dict(special_ids)
        self.cls_id, self.eos_id = cls_id, eos_id
        # Text is lower-cased before the split (rule 2), so the split matches lower-cased special
        # strings (RoBERTa's are all lower case anyway).
        self._lowered_ids = {self._fold(s): i for s, i in self.special_ids.items()}
        self._split = _split_pattern(list(self._lowered_ids))
        self.word_cache = word_cache
        self._words = _gpt2_word_pattern(self.backend) if word_cache else None
        self._word_ids: dict[str, list[int]] = {}  # pre-token -> ids, bounded by WORD_CACHE_LIMIT
        self._char_ok: dict[str, bool] = {}  # non-ASCII character -> same class in both engines

    @property
    def field_separator(self) -> str:
        """The string that joins url, title and body of a document (docs/data.md#document-text).

        RoBERTa's literal ``</s>``; a tokenizer without it (BERT WordPiece) uses its own separator
        token string (``[SEP]``), which the split turns into ``eos_id`` just as ``</s>`` becomes 2.
        """
        if DOC_FIELD_SEPARATOR in self.special_ids:
            return DOC_FIELD_SEPARATOR
        for s, i in self.special_ids.items():
            if i == self.eos_id:
                return s
        raise ValueError(f"no special-token string has the separator id {self.eos_id}")

    @property
    def lower_cases(self) -> bool:
        """Whether text reaches the ids lower-cased: by the emulation,
        or by the tokenizer's own normalizer."""

        def lowers(node) -> bool:
            if isinstance(node, list):
                return any(map(lowers, node))
            if not isinstance(node, dict):
                return False
            return (
                node.get("type") == "Lowercase"
                or node.get("lowercase") is True
                or any(map(lowers, node.values()))
            )

        return self.roberta_emulation or lowers(json.loads(self.backend.to_str()).get("normalizer"))

    def _fold(self, text: str) -> str:
        return lower_per_character(text) if self.roberta_emulation else text

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> StarTokenizer:
        """Load ``name_or_path`` with ``AutoTokenizer`` (fast) and read the special ids from it."""
        return cls.from_tokenizer(auto_tokenizer(name_or_path), name_or_path)

    @classmethod
    def from_tokenizer(cls, tok, name_or_path: str = "") -> StarTokenizer:
        """From a loaded fast tokenizer; the emulation is on for a byte-level BPE with RoBERTa's specials."""
        from tokenizers import models, pre_tokenizers

        backend = getattr(tok, "backend_tokenizer", None)
        if not getattr(tok, "is_fast", False) or backend is None:
            raise ValueError(f"{name_or_path}: a fast (tokenizers-backed) tokenizer is required")
        # 2.8 split on every special and added token string (``unique_added_tokens_encoder``).
        strings = list(tok.all_special_tokens) + list(tok.get_added_vocab())
        special_ids = {s: tok.convert_tokens_to_ids(s) for s in strings}
        roberta = (
            (tok.cls_token, tok.sep_token) == ("<s>", "</s>")
            and isinstance(backend.model, models.BPE)
            and isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel)
        )
        return cls(backend, special_ids, tok.cls_token_id, tok.sep_token_id, roberta_emulation=roberta)

    def __reduce__(self):
        return (
            StarTokenizer,
            (
                self.backend.to_str(),
                self.special_ids,
                self.cls_id,
                self.eos_id,
                self.word_cache,
                self.roberta_emulation,
            ),
        )

    # ------------------------------------------------------------------------------------------

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Rules 2-4 on every text, with one backend call for all pieces of all texts.

        A piece is either handed to the backend whole, or (ASCII pieces of a byte-level BPE
        backend) cut into GPT-2 pre-tokens here, whose ids come from :attr:`_word_ids`; the
        pre-tokens missing there are BPE-encoded by the backend in the same call. Both give the
        backend's ids because byte-level BPE never merges across pre-tokens.
        """
        layouts: list[list] = []  # per text: special ids (int), backend markers (None), word lists
        pieces: list[str] = []
        word_lists: list[list[str]] = []
        for text in texts:
            parts = self._split.split(self._fold(text))
            layout: list = []
            for k, part in enumerate(parts):
                if k % 2:  # a captured special-token string
                    layout.append(self._lowered_ids[part])
                    continue
                part = part.rstrip()  # rule 3: rstrip, never lstrip; drop empties
                if not part:
                    continue
                if self._words is not None and self._pretokenizable(part):
                    words = self._words.findall(part)
                    layout.append(words)
                    word_lists.append(words)
                else:
                    layout.append(None)
                    pieces.append(part)
            layouts.append(layout)
        cache = self._word_ids
        missing = list(set().union(*word_lists).difference(cache)) if word_lists else []
        if len(cache) + len(missing) > WORD_CACHE_LIMIT:
            cache.clear()
            missing = list(set().union(*word_lists))
        encoded = (
            self.backend.encode_batch_fast(missing + pieces, add_special_tokens=False)
            if missing or pieces
            else []
        )
        for word, enc in zip(missing, encoded):
            cache[word] = enc.ids
        lookup = cache.__getitem__
        out: list[list[int]] = []
        k = len(missing)
        for layout in layouts:
            ids: list[int] = []
            for item in layout:
                if item.__class__ is int:
                    ids.append(item)
                elif item is None:
                    ids.extend(encoded[k].ids)
                    k += 1
                else:
                    ids.extend(chain.from_iterable(map(lookup, item)))
            out.append(ids)
        return out

    def _pretokenizable(self, piece: str) -> bool:
        """Whether our regex splits ``piece`` as the backend would: true when every non-ASCII
        character in it falls in the same class (letter, number, space, other) for both engines."""
        if piece.isascii():
            return True
        known = self._char_ok
        for c in set(_NON_ASCII.findall(piece)):
            same = known.get(c)
            if same is None:
                same = known[c] = self._same_class(c)
            if not same:
                return False
        return True

    def _same_class(self, c: str) -> bool:
        # One probe per class: "aca" is one pre-token iff c is a letter, "1c1" a number, ".c." other;
        # none of them if c is a space. The last probe checks the whitespace-run rule as well.
        probes = (f"a{c}a", f"1{c}1", f".{c}.", f"a{c}{c} x")
        table = byte_to_unicode()
        ours = [
            ["".join(table[b] for b in w.encode("utf-8")) for w in self._words.findall(p)] for p in probes
        ]
        theirs = [[w for w, _ in self.backend.pre_tokenizer.pre_tokenize_str(p)] for p in probes]
        return ours == theirs

    def encode_documents(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Document ids: no prefix space, no special tokens added, cut to ``max_length`` tokens."""
        return [ids[:max_length] for ids in self._encode(texts)]

    def encode_queries(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Query ids ``[CLS] + BPE(" " + text) + [EOS]``, at most ``max_length`` ids in total.

        An empty text gets no prefix (the original would have crashed on ``text[0]``); outside the
        emulation no text does.
        """
        if max_length < 2:
            raise ValueError(f"max_length must leave room for CLS and EOS, got {max_length}")
        prefixed = [t if (not t or t[0].isspace() or not self.roberta_emulation) else " " + t for t in texts]
        return [[self.cls_id, *ids[: max_length - 2], self.eos_id] for ids in self._encode(prefixed)]


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (printable bytes map to themselves)."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
