"""Offline stand-ins for what the real pipeline downloads, and the slow 2.8 reference tokenizer.

Used by the tests and ``bench/``; nothing in the pipeline imports this module. Everything is
generated on the fly and deterministic for a given seed:

* :func:`train_tokenizer`: a small byte-level BPE with RoBERTa's special-token order
  (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``<mask>``=4);
* :func:`install_in_hf_cache`: a folder laid out as a Hugging Face hub cache entry, so that
  ``from_pretrained("roberta-base")`` resolves offline (``HF_HUB_OFFLINE=1``);
* :func:`make_star_checkpoint`: a random model in the released STAR layout (legacy
  ``pytorch_model.bin`` with ``roberta.*``, ``embeddingHead.*``, ``norm.*``);
* :func:`make_msmarco_data`: the nine MS MARCO Document / TREC-DL files, with learnable queries;
* :class:`ReferenceRobertaTokenizer`: transformers 2.8's slow lower-cased RoBERTa tokenizer,
  restated step by step (the oracle of :class:`SeDR.tokenization.StarTokenizer`).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import regex

from SeDR.constants import CORPUS_FILE, SPLIT_FILES
from SeDR.tokenization import GPT2_PATTERN, StarTokenizer, byte_to_unicode

ROBERTA_RESERVED_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
FAKE_SNAPSHOT_HASH = "0" * 40


def _pseudo_words(rng: random.Random, n: int) -> list[str]:
    """Pronounceable distinct lower-case words, so BPE learns multi-character merges."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "zo", "pe", "shi", "vu", "dra", "gle", "on", "ix", "ber"]
    words: dict[str, None] = {}
    while len(words) < n:
        words.setdefault("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))))
    return list(words)


def train_tokenizer(out_dir: str | Path, texts: list[str] | None = None, vocab_size: int = 400,
                    model_max_length: int = 512) -> Path:
    """Train a byte-level BPE with RoBERTa's special tokens and save it as a RoBERTa tokenizer folder."""
    # tokenizers, torch and transformers are imported on first use: the tests point HF_HOME at a
    # private cache after importing this module and before huggingface_hub is first imported.
    from tokenizers import ByteLevelBPETokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if texts is None:
        rng = random.Random(0)
        words = _pseudo_words(rng, 300)
        texts = [" ".join(rng.choice(words) for _ in range(50)) for _ in range(200)]
        texts += ["https://a.b/ Foo Bar Baz. What is X? http://example.com/doc title body"] * 5
    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=ROBERTA_RESERVED_TOKENS, show_progress=False)
    tok.save_model(str(out))
    (out / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "RobertaTokenizer", "model_max_length": model_max_length,
        "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>", "add_prefix_space": False,
    }))
    return out


def _copy_files(src_dir: str | Path, dst_dir: Path, skip: tuple[str, ...] = ()) -> None:
    for f in Path(src_dir).iterdir():
        if f.is_file() and f.name not in skip:
            shutil.copy2(f, dst_dir / f.name)


def install_in_hf_cache(src_dir: str | Path, hf_home: str | Path, repo_id: str = "roberta-base") -> Path:
    """Copy ``src_dir`` into ``hf_home/hub`` as the cached snapshot of ``repo_id``; return the snapshot."""
    repo_dir = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / FAKE_SNAPSHOT_HASH
    snapshot.mkdir(parents=True, exist_ok=True)
    _copy_files(src_dir, snapshot)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(FAKE_SNAPSHOT_HASH)
    return snapshot


def make_star_checkpoint(out_dir: str | Path, vocab_size: int, seed: int = 0, with_position_ids: bool = True,
                         tokenizer_dir: str | Path | None = None, hidden_size: int = 32, num_hidden_layers: int = 2,
                         num_attention_heads: int = 4, intermediate_size: int = 37, **config_kwargs) -> Path:
    """Write a random model shaped like STAR (514 positions, pad 1, one token type) but tiny, in the
    released STAR layout (legacy ``pytorch_model.bin``); ``tokenizer_dir``'s files are copied beside it."""
    import torch  # see train_tokenizer
    from transformers import RobertaConfig, RobertaModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = RobertaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
        max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, layer_norm_eps=1e-5, **config_kwargs)
    torch.manual_seed(seed)
    encoder = RobertaModel(config, add_pooling_layer=False)
    head = torch.nn.Linear(config.hidden_size, config.hidden_size)
    norm = torch.nn.LayerNorm(config.hidden_size, eps=1e-5)
    with torch.no_grad():
        head.weight.normal_(0, 0.02)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_(0, 0.1)
    state = {f"roberta.{k}": v for k, v in encoder.state_dict().items() if "position_ids" not in k}
    if with_position_ids:
        state["roberta.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    state.update({f"embeddingHead.{k}": v for k, v in head.state_dict().items()})
    state.update({f"norm.{k}": v for k, v in norm.state_dict().items()})
    torch.save(state, out / "pytorch_model.bin")
    (out / "config.json").write_text(json.dumps({**config.to_dict(), "architectures": ["RobertaDot"]}, indent=2))
    if tokenizer_dir is not None:
        _copy_files(tokenizer_dir, out, skip=("config.json",))
    return out


@dataclass
class SyntheticCorpus:
    """What :func:`make_msmarco_data` wrote, for tests that check against it."""

    data_dir: Path
    doc_ids: list[int]          # MS MARCO doc numbers, in file order
    queries: dict[str, list[tuple[int, str]]]   # split -> [(qid, text)] in file order
    qrels: dict[str, list[tuple[int, int, int]]]  # split -> [(qid, doc number, rel)]


def make_msmarco_data(data_dir: str | Path, n_docs: int = 40, seed: int = 0, n_train: int | None = None,
                      n_dev: int = 10, n_test: int = 6, long_fraction: float = 0.6,
                      max_words: int = 1600) -> SyntheticCorpus:
    """Write an MS MARCO Document + TREC-DL style folder whose queries can be learned.

    Each document owns three "topic" words repeated through its body; its queries are made of
    those words. About ``long_fraction`` of the documents run past one segment. Train/dev qrels
    are binary; the two TREC splits are graded (0..3) with ``rel = 0`` lines and unjudged
    queries, as NIST's files have.
    """
    rng = random.Random(seed)
    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    words = _pseudo_words(rng, 400)
    filler, topical = words[:250], words[250:]
    doc_ids = rng.sample(range(1, 10_000_000), n_docs)
    topic_words = [rng.sample(topical, 3) for _ in range(n_docs)]
    with open(out / CORPUS_FILE, "w", encoding="utf-8") as f:
        for i, did in enumerate(doc_ids):
            n_words = rng.randint(300, max_words) if rng.random() < long_fraction else rng.randint(5, 120)
            body = [rng.choice(topic_words[i]) if rng.random() < 0.15 else rng.choice(filler) for _ in range(n_words)]
            title = " ".join(w.capitalize() for w in rng.sample(topic_words[i], 2))
            f.write(f"D{did}\thttp://example.com/{did}\t{title}\t{' '.join(body)}\n")

    used_qids: set[int] = set()

    def new_qid() -> int:
        while (q := rng.randint(1, 2_000_000)) in used_qids:
            pass
        used_qids.add(q)
        return q

    sizes = {"train": n_docs if n_train is None else n_train, "dev": n_dev, "test": n_test, "2020test": n_test}
    queries: dict[str, list[tuple[int, str]]] = {}
    qrels: dict[str, list[tuple[int, int, int]]] = {}
    for split, (qfile, rfile) in SPLIT_FILES.items():
        trec = split not in ("train", "dev")
        targets = [rng.randrange(n_docs) for _ in range(sizes[split])]
        qs = [(new_qid(), "What is " + " ".join(rng.sample(topic_words[t], 2)) + "?") for t in targets]
        lines: list[tuple[int, int, int]] = []
        for (qid, _), t in zip(qs, targets):
            lines.append((qid, doc_ids[t], 3 if trec else 1))
            if trec:
                lines += [(qid, doc_ids[o], rng.choice([0, 1, 2])) for o in rng.sample(range(n_docs), 3) if o != t]
        qs += [(new_qid(), "unjudged " + rng.choice(filler)) for _ in range(2 if trec else 0)]
        rng.shuffle(qs)
        queries[split], qrels[split] = qs, lines
        with open(out / qfile, "w", encoding="utf-8") as f:
            f.writelines(f"{qid}\t{text}\n" for qid, text in qs)
        with open(out / rfile, "w", encoding="utf-8") as f:
            f.writelines(f"{qid} {'Q0' if trec else '0'} D{did} {rel}\n" for qid, did, rel in lines)
    return SyntheticCorpus(out, doc_ids, queries, qrels)


# ----------------------------------------------------------------------------------------------
# The transformers-2.8 slow tokenizer, step by step
# ----------------------------------------------------------------------------------------------

# RoBERTa's special-token attributes in 2.8 (its list of attribute names minus the unset ones).
_ROBERTA_TOKEN_ATTRIBUTES = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                     "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}


def _symbol_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word, word[1:])}


class ReferenceRobertaTokenizer:
    """Pure-Python, one-text-at-a-time restatement of ``RobertaTokenizer(do_lower_case=True).encode`` in 2.8.

    Written from the algorithm, not from :class:`~SeDR.tokenization.StarTokenizer`, and kept to the *call path* of
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
