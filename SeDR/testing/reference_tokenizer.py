"""The transformers-2.8 slow RoBERTa tokenizer, restated step by step: the reference that the fast
emulation (:class:`SeDR.data.tokenization.StarTokenizer`) is checked against in tests and in
bench/preprocess.py."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from itertools import chain

import regex

from SeDR.data.tokenization import GPT2_PATTERN, StarTokenizer, byte_to_unicode

# ----------------------------------------------------------------------------------------------
# The transformers-2.8 slow tokenizer, step by step
# ----------------------------------------------------------------------------------------------

# RoBERTa's special-token attributes in 2.8 (its list of attribute names minus the unset ones).
_ROBERTA_TOKEN_ATTRIBUTES = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}


def _symbol_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word, word[1:])}


class ReferenceRobertaTokenizer:
    """Pure-Python, one-text-at-a-time restatement of ``RobertaTokenizer(do_lower_case=True).encode`` in 2.8.

    Written from the algorithm, not from :class:`~SeDR.data.tokenization.StarTokenizer`, and kept to the
    *call path* of transformers 2.8 so that ``bench/preprocess.py`` times the original's method, not a leaner
    one:
    ``encode`` -> ``encode_plus`` -> ``tokenize`` (prefix space; lower-casing through ``re.sub`` with
    a Python callback per character; ``split_on_tokens`` over the special strings; per piece the GPT-2
    regex, the byte-encoder join and the cached ``bpe`` whose result is a space-joined string split
    again) -> ``convert_tokens_to_ids`` (one method chain per token) -> ``prepare_for_model``
    (``longest_first`` truncation one token per loop iteration, special tokens, the token-type and
    attention lists). Nothing is added that 2.8 did not do; its logging, tensor conversion and
    argument checks are left out.
    """

    def __init__(
        self, encoder: dict[str, int], merges: Sequence[tuple[str, str]], special_ids: dict[str, int]
    ):
        self.encoder = encoder
        self.bpe_ranks = {tuple(m): i for i, m in enumerate(merges)}
        # Special strings missing from the BPE vocabulary (the GPT-2 files) are 2.8's added tokens.
        self.added_tokens_encoder = {s: i for s, i in special_ids.items() if s not in encoder}
        self._specials = {attr: s for attr, s in _ROBERTA_TOKEN_ATTRIBUTES.items() if s in special_ids}
        self.unique_added_tokens_encoder = set(self.all_special_tokens) | set(self.added_tokens_encoder)
        self.init_kwargs = {"do_lower_case": True}
        self.pat = regex.compile(GPT2_PATTERN)
        self.byte_encoder = byte_to_unicode()
        self.cache: dict[str, str] = {}

    @classmethod
    def from_tokenizer_json(
        cls, tokenizer_json: str, special_ids: dict[str, int]
    ) -> ReferenceRobertaTokenizer:
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
                    nxt += (
                        split_on_token(tok, piece)
                        if piece not in self.unique_added_tokens_encoder
                        else [piece]
                    )
                pieces = nxt
            return list(
                chain.from_iterable(
                    self._tokenize(p) if p not in self.unique_added_tokens_encoder else [p] for p in pieces
                )
            )

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
        return self.encode_plus(text, add_special_tokens=add_special_tokens, max_length=max_length)[
            "input_ids"
        ]

    def encode_plus(
        self, text: str, add_special_tokens: bool = True, max_length: int | None = None, **kwargs
    ) -> dict[str, list[int]]:
        def get_input_ids(t):
            if isinstance(t, str):
                return self.convert_tokens_to_ids(
                    self.tokenize(t, add_special_tokens=add_special_tokens, **kwargs)
                )
            raise ValueError("a string is expected")

        return self.prepare_for_model(
            get_input_ids(text), max_length=max_length, add_special_tokens=add_special_tokens
        )

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    def build_inputs_with_special_tokens(
        self, ids: list[int], pair_ids: list[int] | None = None
    ) -> list[int]:
        if pair_ids is None:
            return [self.cls_token_id] + ids + [self.sep_token_id]
        return (
            [self.cls_token_id]
            + ids
            + [self.sep_token_id, self.sep_token_id]
            + pair_ids
            + [self.sep_token_id]
        )

    def create_token_type_ids_from_sequences(
        self, ids: list[int], pair_ids: list[int] | None = None
    ) -> list[int]:
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if pair_ids is None:
            return len(cls + ids + sep) * [0]
        return len(cls + ids + sep + sep + pair_ids + sep) * [0]

    def truncate_sequences(
        self,
        ids: list[int],
        num_tokens_to_remove: int = 0,
        truncation_strategy: str = "longest_first",
        stride: int = 0,
    ):
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

    def prepare_for_model(
        self,
        ids: list[int],
        max_length: int | None = None,
        add_special_tokens: bool = True,
        stride: int = 0,
        truncation_strategy: str = "longest_first",
    ) -> dict[str, list[int]]:
        total_len = len(ids) + (self.num_special_tokens_to_add(pair=False) if add_special_tokens else 0)
        if max_length and total_len > max_length:
            ids, _ = self.truncate_sequences(
                ids,
                num_tokens_to_remove=total_len - max_length,
                truncation_strategy=truncation_strategy,
                stride=stride,
            )
        if add_special_tokens:
            sequence = self.build_inputs_with_special_tokens(ids)
            token_type_ids = self.create_token_type_ids_from_sequences(ids)
        else:
            sequence = ids
            token_type_ids = [0] * len(ids)
        return {
            "input_ids": sequence,
            "token_type_ids": token_type_ids,
            "attention_mask": [1] * len(sequence),
        }
