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

Rules 1 and 2 (and the forced no-prefix-space of rule 4) are the roberta-base emulation: they
apply to a byte-level BPE with RoBERTa's special tokens. Any other tokenizer (BERT WordPiece,
SentencePiece, ModernBERT's BPE) keeps its own casing and pre-tokenizer: nothing is lower-cased
here and queries get no added space, so a cased tokenizer sees the ids it was trained on
(docs/backbones.md#lower-casing).
Documents join their fields with :attr:`StarTokenizer.field_separator` (``[SEP]`` where there is
no ``</s>``).

Speed (``bench/preprocess.py``): for a byte-level BPE backend, pieces are cut into GPT-2
pre-tokens by the ``regex`` module here, and each distinct pre-token is BPE-encoded once by the
backend and its ids kept (:attr:`StarTokenizer._word_ids`, bounded), which is about three times
faster per core than the backend's own pre-tokenizer. Ids are the backend's: BPE never crosses a
pre-token, and a piece is only split here when every non-ASCII character in it is classified
alike by both regex engines (probed once per character); other pieces go to the backend whole.

:class:`ReferenceRobertaTokenizer` is a slow pure-Python restatement of the 2.8 algorithm *and
call path* (GPT-2 regex, byte encoder, merge loop, per-token id methods, one-token-at-a-time
truncation). It is the per-document baseline of ``bench/preprocess.py`` and the independent
oracle of the tests; nothing in the pipeline uses it.

Known divergence: Python 3.6-era Unicode tables of the original vs the interpreter's tables here
(only characters added to Unicode since then can lower-case or classify differently).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain

from SeDR.constants import DOC_FIELD_SEPARATOR

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


def _gpt2_word_pattern(backend):
    """The GPT-2 pre-token regex if ``backend`` is a plain byte-level BPE (RoBERTa, GPT-2), else None.

    Applied only to pieces whose characters the ``regex`` module and the backend's engine classify
    alike (all ASCII, or non-ASCII characters probed by :meth:`StarTokenizer._same_class`): their
    Unicode tables differ for characters added in recent versions.
    """
    import regex
    from tokenizers import models, pre_tokenizers

    pre = backend.pre_tokenizer
    if (backend.normalizer is not None or not isinstance(backend.model, models.BPE)
            or not isinstance(pre, pre_tokenizers.ByteLevel) or not pre.use_regex or pre.add_prefix_space):
        return None
    return regex.compile(GPT2_PATTERN)


class StarTokenizer:
    """Batched emulation of the 2.8 slow tokenizer (SPEC §1.2) on a ``tokenizers`` backend.

    Build it with :meth:`from_pretrained`; it pickles compactly (the backend travels as JSON, the
    caches stay behind), so worker processes can rebuild it without importing ``transformers``.
    ``word_cache=False`` hands every piece to the backend whole (the tests' and bench's yardstick).
    ``roberta_emulation`` switches rules 1, 2 and the prefix-space part of 4 on (``from_pretrained``
    decides it from the tokenizer).
    """

    def __init__(self, backend, special_ids: dict[str, int], cls_id: int, eos_id: int, word_cache: bool = True,
                 roberta_emulation: bool = True):
        from tokenizers import Tokenizer, pre_tokenizers

        # A private copy: we change its settings and must not touch the caller's tokenizer.
        self.backend = Tokenizer.from_str(backend.to_str()) if not isinstance(backend, str) else Tokenizer.from_str(backend)
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
        self._word_ids: dict[str, list[int]] = {}     # pre-token -> ids, bounded by WORD_CACHE_LIMIT
        self._char_ok: dict[str, bool] = {}           # non-ASCII character -> same class in both engines

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

    @property
    def lower_cases(self) -> bool:
        """Whether text reaches the ids lower-cased: by the emulation, or by the tokenizer's own normalizer."""
        def lowers(node) -> bool:
            if isinstance(node, list):
                return any(map(lowers, node))
            if not isinstance(node, dict):
                return False
            return node.get("type") == "Lowercase" or node.get("lowercase") is True or any(map(lowers, node.values()))

        return self.roberta_emulation or lowers(json.loads(self.backend.to_str()).get("normalizer"))

    def _fold(self, text: str) -> str:
        return lower_per_character(text) if self.roberta_emulation else text

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> StarTokenizer:
        """Load ``name_or_path`` with ``AutoTokenizer`` (fast) and read the special ids from it."""
        from transformers import AutoTokenizer

        return cls.from_tokenizer(AutoTokenizer.from_pretrained(name_or_path), name_or_path)

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
        roberta = (tok.cls_token, tok.sep_token) == ("<s>", "</s>") and isinstance(backend.model, models.BPE) \
            and isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel)
        return cls(backend, special_ids, tok.cls_token_id, tok.sep_token_id, roberta_emulation=roberta)

    def __reduce__(self):
        return (StarTokenizer, (self.backend.to_str(), self.special_ids, self.cls_id, self.eos_id, self.word_cache,
                                self.roberta_emulation))

    # ------------------------------------------------------------------------------------------

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Rules 2-4 on every text, with one backend call for all pieces of all texts.

        A piece is either handed to the backend whole, or (ASCII pieces of a byte-level BPE
        backend) cut into GPT-2 pre-tokens here, whose ids come from :attr:`_word_ids`; the
        pre-tokens missing there are BPE-encoded by the backend in the same call. Both give the
        backend's ids because byte-level BPE never merges across pre-tokens.
        """
        layouts: list[list] = []       # per text: special ids (int), backend markers (None), word lists
        pieces: list[str] = []
        word_lists: list[list[str]] = []
        for text in texts:
            parts = self._split.split(self._fold(text))
            layout: list = []
            for k, part in enumerate(parts):
                if k % 2:                       # a captured special-token string
                    layout.append(self._lowered_ids[part])
                    continue
                part = part.rstrip()            # rule 3: rstrip, never lstrip; drop empties
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
        encoded = self.backend.encode_batch_fast(missing + pieces, add_special_tokens=False) if missing or pieces else []
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
        ours = [["".join(table[b] for b in w.encode("utf-8")) for w in self._words.findall(p)] for p in probes]
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


# ----------------------------------------------------------------------------------------------
# Slow reference (tests and bench only): the transformers-2.8 call path, step by step
# ----------------------------------------------------------------------------------------------

# RoBERTa's special-token attributes in 2.8 (``SPECIAL_TOKENS_ATTRIBUTES`` minus the unset ones).
_ROBERTA_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                     "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}


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


def _symbol_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word, word[1:])}


class ReferenceRobertaTokenizer:
    """Pure-Python, one-text-at-a-time restatement of ``RobertaTokenizer(do_lower_case=True).encode`` in 2.8.

    Written from the algorithm, not from the fast path above, and kept to the *call path* of
    transformers 2.8 so that ``bench/preprocess.py`` times the original's method, not a leaner one:
    ``encode`` -> ``encode_plus`` -> ``tokenize`` (prefix space; lower-casing through ``re.sub`` with
    a Python callback per character; ``split_on_tokens`` over the special strings; per piece the GPT-2
    regex, the byte-encoder join and the cached ``bpe`` whose result is a space-joined string split
    again) -> ``convert_tokens_to_ids`` (one method chain per token) -> ``prepare_for_model``
    (``longest_first`` truncation one token per loop iteration, special tokens, the token-type and
    attention lists). Nothing is added that 2.8 did not do; its logging, tensor conversion and
    argument checks are left out.
    """

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]], special_ids: dict[str, int]):
        import regex

        self.encoder = encoder
        self.bpe_ranks = {tuple(m): i for i, m in enumerate(merges)}
        # Special strings missing from the BPE vocabulary (the GPT-2 files) are 2.8's added tokens.
        self.added_tokens_encoder = {s: i for s, i in special_ids.items() if s not in encoder}
        self._specials = {attr: s for attr, s in _ROBERTA_SPECIALS.items() if s in special_ids}
        self.unique_added_tokens_encoder = set(self.all_special_tokens) | set(self.added_tokens_encoder)
        self.init_kwargs = {"do_lower_case": True}
        self.pat = regex.compile(GPT2_PATTERN)
        self.byte_encoder = byte_to_unicode()
        self.cache: dict[str, str] = {}

    @classmethod
    def from_tokenizer_json(cls, tokenizer_json: str, special_ids: dict[str, int]) -> ReferenceRobertaTokenizer:
        """Read vocabulary and merges out of a serialised ``tokenizers`` BPE model."""
        model = json.loads(tokenizer_json)["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return cls(model["vocab"], merges, special_ids)

    @classmethod
    def from_star(cls, star: StarTokenizer) -> ReferenceRobertaTokenizer:
        return cls.from_tokenizer_json(star.backend.to_str(), star.special_ids)

    # 2.8 computed these on every access.
    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {attr: s for attr, s in self._specials.items() if s}

    @property
    def all_special_tokens(self) -> list[str]:
        return list(set(self.special_tokens_map.values()))

    @property
    def unk_token(self) -> str:
        return self._specials["unk_token"]

    @property
    def cls_token_id(self) -> int:
        return self.convert_tokens_to_ids(self._specials["cls_token"])

    @property
    def sep_token_id(self) -> int:
        return self.convert_tokens_to_ids(self._specials["sep_token"])

    # -- tokenize ------------------------------------------------------------------------------

    def prepare_for_tokenization(self, text: str, add_special_tokens: bool = False, **kwargs) -> str:
        # 2.8 read text[0] unguarded (an empty query crashed); the guard keeps StarTokenizer's contract.
        if kwargs.get("add_prefix_space", add_special_tokens) and text and not text[0].isspace():
            text = " " + text
        return text

    def tokenize(self, text: str, **kwargs) -> list[str]:
        specials = self.all_special_tokens
        text = self.prepare_for_tokenization(text, **kwargs)
        if self.init_kwargs.get("do_lower_case", False):
            # The pattern string is rebuilt per call (``re`` caches the compiled form); ``.`` skips
            # newlines, every other character goes through the callback on its own.
            pattern = "(" + "|".join(re.escape(s) for s in specials) + ")|(.+?)"
            text = re.sub(pattern, lambda m: m.groups()[0] or m.groups()[1].lower(), text)

        def split_on_token(tok: str, sub: str) -> list[str]:
            parts = sub.split(tok)
            out: list[str] = []
            for i, part in enumerate(parts):
                part = part.rstrip()
                if i == 0 and not part:
                    out += [tok]
                elif i == len(parts) - 1:
                    if part:
                        out += [part]
                else:
                    if part:
                        out += [part]
                    out += [tok]
            return out

        def split_on_tokens(tok_list, sub: str) -> list[str]:
            if not sub.strip():
                return []
            pieces = [sub]
            for tok in tok_list:
                nxt: list[str] = []
                for piece in pieces:
                    nxt += split_on_token(tok, piece) if piece not in self.unique_added_tokens_encoder else [piece]
                pieces = nxt
            return list(chain.from_iterable(
                self._tokenize(p) if p not in self.unique_added_tokens_encoder else [p] for p in pieces))

        return split_on_tokens(self.unique_added_tokens_encoder, text)

    def _tokenize(self, text: str) -> list[str]:
        bpe_tokens: list[str] = []
        for token in self.pat.findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            bpe_tokens.extend(t for t in self.bpe(token).split(" "))
        return bpe_tokens

    def bpe(self, token: str) -> str:
        """Rank-ordered merges of one pre-token; the space-joined result is cached per pre-token."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = _symbol_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _symbol_pairs(word)
        joined = " ".join(word)
        self.cache[token] = joined
        return joined

    # -- ids -----------------------------------------------------------------------------------

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._convert_token_to_id_with_added_voc(tokens)
        ids = []
        for token in tokens:
            ids.append(self._convert_token_to_id_with_added_voc(token))
        return ids

    def _convert_token_to_id_with_added_voc(self, token: str) -> int:
        if token in self.added_tokens_encoder:
            return self.added_tokens_encoder[token]
        return self._convert_token_to_id(token)

    def _convert_token_to_id(self, token: str) -> int:
        return self.encoder.get(token, self.encoder.get(self.unk_token))

    # -- encode --------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True, max_length: int | None = None) -> list[int]:
        """``input_ids`` of 2.8's ``encode(text, add_special_tokens=..., max_length=...)``."""
        return self.encode_plus(text, add_special_tokens=add_special_tokens, max_length=max_length)["input_ids"]

    def encode_plus(self, text: str, add_special_tokens: bool = True, max_length: int | None = None,
                    **kwargs) -> dict[str, list[int]]:
        def get_input_ids(t):
            if isinstance(t, str):
                return self.convert_tokens_to_ids(self.tokenize(t, add_special_tokens=add_special_tokens, **kwargs))
            raise ValueError("a string is expected")

        return self.prepare_for_model(get_input_ids(text), max_length=max_length,
                                      add_special_tokens=add_special_tokens)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    def build_inputs_with_special_tokens(self, ids: list[int], pair_ids: list[int] | None = None) -> list[int]:
        if pair_ids is None:
            return [self.cls_token_id] + ids + [self.sep_token_id]
        return [self.cls_token_id] + ids + [self.sep_token_id, self.sep_token_id] + pair_ids + [self.sep_token_id]

    def create_token_type_ids_from_sequences(self, ids: list[int], pair_ids: list[int] | None = None) -> list[int]:
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if pair_ids is None:
            return len(cls + ids + sep) * [0]
        return len(cls + ids + sep + sep + pair_ids + sep) * [0]

    def truncate_sequences(self, ids: list[int], num_tokens_to_remove: int = 0,
                           truncation_strategy: str = "longest_first", stride: int = 0):
        """2.8's single-sequence ``longest_first``: one token per iteration, overflow list prepended."""
        if num_tokens_to_remove <= 0:
            return ids, []
        if truncation_strategy != "longest_first":
            raise ValueError(f"only longest_first is restated, got {truncation_strategy!r}")
        overflowing: list[int] = []
        for _ in range(num_tokens_to_remove):
            overflowing = [ids[-1]] + overflowing
            ids = ids[:-1]
        window = min(len(ids), stride)
        if window > 0:
            overflowing = ids[-window:] + overflowing
        return ids, overflowing

    def prepare_for_model(self, ids: list[int], max_length: int | None = None, add_special_tokens: bool = True,
                          stride: int = 0, truncation_strategy: str = "longest_first") -> dict[str, list[int]]:
        total_len = len(ids) + (self.num_special_tokens_to_add(pair=False) if add_special_tokens else 0)
        if max_length and total_len > max_length:
            ids, _ = self.truncate_sequences(ids, num_tokens_to_remove=total_len - max_length,
                                             truncation_strategy=truncation_strategy, stride=stride)
        if add_special_tokens:
            sequence = self.build_inputs_with_special_tokens(ids)
            token_type_ids = self.create_token_type_ids_from_sequences(ids)
        else:
            sequence = ids
            token_type_ids = [0] * len(ids)
        return {"input_ids": sequence, "token_type_ids": token_type_ids, "attention_mask": [1] * len(sequence)}
