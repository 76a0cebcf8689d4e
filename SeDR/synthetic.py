"""Tiny, offline stand-ins for what the real pipeline downloads.

Tests, benchmarks and smoke runs need a RoBERTa-style tokenizer, a STAR-format checkpoint
and an MS MARCO-format data folder without network access. Everything here is generated
on the fly and deterministic for a given seed:

* :func:`train_tokenizer` trains a small byte-level BPE (RoBERTa special-token order:
  ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``<mask>``=4) with the ``tokenizers`` library.
* :func:`install_in_hf_cache` lays a folder out as a Hugging Face hub cache entry, so that
  ``from_pretrained("roberta-base")`` resolves offline (``HF_HUB_OFFLINE=1``).
* :func:`make_star_checkpoint` writes a legacy ``pytorch_model.bin`` with the released STAR
  key names (``roberta.*``, ``embeddingHead.*``, ``norm.*``).
* :func:`make_msmarco_data` writes the nine files of SPEC §1.1 with learnable queries.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
FAKE_SNAPSHOT_HASH = "0" * 40


def _pseudo_words(rng: random.Random, n: int) -> list[str]:
    """Pronounceable distinct lower-case words, so BPE learns multi-character merges."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "zo", "pe", "shi", "vu", "dra", "gle", "on", "ix", "ber"]
    words: list[str] = []
    seen = set()
    while len(words) < n:
        w = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def train_tokenizer(out_dir: str | Path, texts: list[str] | None = None, vocab_size: int = 400,
                    model_max_length: int = 512) -> Path:
    """Train a byte-level BPE with RoBERTa's special tokens and save it as a RoBERTa tokenizer folder."""
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
                            special_tokens=ROBERTA_SPECIAL_TOKENS, show_progress=False)
    tok.save_model(str(out))
    (out / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "RobertaTokenizer",
        "model_max_length": model_max_length,
        "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
        "add_prefix_space": False,
    }))
    return out


def install_in_hf_cache(src_dir: str | Path, hf_home: str | Path, repo_id: str = "roberta-base") -> Path:
    """Copy ``src_dir`` into ``hf_home/hub`` as the cached snapshot of ``repo_id``; return the snapshot."""
    repo_dir = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / FAKE_SNAPSHOT_HASH
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in Path(src_dir).iterdir():
        if f.is_file():
            shutil.copy2(f, snapshot / f.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(FAKE_SNAPSHOT_HASH)
    return snapshot


def tiny_roberta_config(vocab_size: int, hidden_size: int = 32, num_hidden_layers: int = 2,
                        num_attention_heads: int = 4, intermediate_size: int = 37, **extra):
    """A RobertaConfig shaped like STAR's (514 positions, pad 1, one token type) but tiny."""
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
        max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, layer_norm_eps=1e-5, **extra,
    )


def make_star_checkpoint(out_dir: str | Path, vocab_size: int, seed: int = 0, with_position_ids: bool = True,
                         tokenizer_dir: str | Path | None = None, **config_kwargs) -> Path:
    """Write a randomly initialised model in the released STAR layout (legacy ``pytorch_model.bin``)."""
    import torch
    from transformers import RobertaModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_roberta_config(vocab_size, **config_kwargs)
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
    cfg = config.to_dict()
    cfg["architectures"] = ["RobertaDot"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer_dir is not None:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and f.name != "config.json":
                shutil.copy2(f, out / f.name)
    return out


@dataclass
class SyntheticCorpus:
    """What :func:`make_msmarco_data` wrote, for tests that check against it."""

    data_dir: Path
    doc_ids: list[int]          # MS MARCO doc numbers, in file order
    topic_words: list[list[str]]
    queries: dict[str, list[tuple[int, str]]]   # split -> [(qid, text)] in file order
    qrels: dict[str, list[tuple[int, int, int]]]  # split -> [(qid, doc number, rel)]


def make_msmarco_data(data_dir: str | Path, n_docs: int = 40, seed: int = 0, n_train: int | None = None,
                      n_dev: int = 10, n_test: int = 6, long_fraction: float = 0.6,
                      max_words: int = 1600) -> SyntheticCorpus:
    """Write an MS MARCO Document + TREC-DL style folder whose queries can be learned.

    Each document owns three "topic" words repeated through its body; its queries are made of
    those words, so a retriever can learn the task. About ``long_fraction`` of the documents
    run past one segment. Train/dev qrels are binary; the two TREC splits are graded (0..3)
    and include ``rel = 0`` lines, as NIST's files do.
    """
    rng = random.Random(seed)
    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    words = _pseudo_words(rng, 400)
    filler, topical = words[:250], words[250:]
    doc_ids = rng.sample(range(1, 10_000_000), n_docs)
    topic_words = [rng.sample(topical, 3) for _ in range(n_docs)]
    with open(out / "msmarco-docs.tsv", "w", encoding="utf-8") as f:
        for i, did in enumerate(doc_ids):
            n_words = rng.randint(300, max_words) if rng.random() < long_fraction else rng.randint(5, 120)
            body = []
            for _ in range(n_words):
                body.append(rng.choice(topic_words[i]) if rng.random() < 0.15 else rng.choice(filler))
            title = " ".join(w.capitalize() for w in rng.sample(topic_words[i], 2))
            f.write(f"D{did}\thttp://example.com/{did}\t{title}\t{' '.join(body)}\n")

    def query_text(i: int) -> str:
        return "What is " + " ".join(rng.sample(topic_words[i], 2)) + "?"

    n_train = n_docs if n_train is None else n_train
    queries: dict[str, list[tuple[int, str]]] = {}
    qrels: dict[str, list[tuple[int, int, int]]] = {}
    used_qids: set[int] = set()

    def new_qid() -> int:
        while True:
            q = rng.randint(1, 2_000_000)
            if q not in used_qids:
                used_qids.add(q)
                return q

    names = {"train": ("msmarco-doctrain-queries.tsv", "msmarco-doctrain-qrels.tsv"),
             "dev": ("msmarco-docdev-queries.tsv", "msmarco-docdev-qrels.tsv"),
             "test": ("msmarco-test2019-queries.tsv", "2019qrels-docs.txt"),
             "2020test": ("msmarco-test2020-queries.tsv", "2020qrels-docs.txt")}
    sizes = {"train": n_train, "dev": n_dev, "test": n_test, "2020test": n_test}
    for split, (qfile, rfile) in names.items():
        targets = [rng.randrange(n_docs) for _ in range(sizes[split])]
        qs = [(new_qid(), query_text(t)) for t in targets]
        lines: list[tuple[int, int, int]] = []
        for (qid, _), t in zip(qs, targets):
            if split in ("train", "dev"):
                lines.append((qid, doc_ids[t], 1))
            else:
                lines.append((qid, doc_ids[t], 3))
                for other in rng.sample(range(n_docs), 3):
                    if other != t:
                        lines.append((qid, doc_ids[other], rng.choice([0, 1, 2])))
        # Unjudged queries exist in the TREC query files (200 listed, ~43 judged).
        extra = [(new_qid(), "unjudged " + rng.choice(filler)) for _ in range(2 if split in ("test", "2020test") else 0)]
        all_qs = qs + extra
        rng.shuffle(all_qs)
        queries[split] = all_qs
        qrels[split] = lines
        with open(out / qfile, "w", encoding="utf-8") as f:
            for qid, text in all_qs:
                f.write(f"{qid}\t{text}\n")
        with open(out / rfile, "w", encoding="utf-8") as f:
            for qid, did, rel in lines:
                iteration = "0" if split in ("train", "dev") else "Q0"
                f.write(f"{qid} {iteration} D{did} {rel}\n")
    return SyntheticCorpus(out, doc_ids, topic_words, queries, qrels)


# ==============================================================================================
# Encoder families beyond RoBERTa: a tiny random model saved by transformers' own save_pretrained
# next to a tiny tokenizer of the family's kind, trained on the fly (tests, bench, docs)
# ==============================================================================================

BACKBONE_FAMILIES = ("roberta", "xlm-roberta", "camembert", "bert", "electra", "distilbert", "albert", "mpnet",
                     "deberta-v2", "modernbert")
# family -> (tokenizer kind, transformers tokenizer class, special tokens first in the vocabulary)
_FAMILY_TOKENIZERS = {
    "roberta": ("bpe", "RobertaTokenizer", ROBERTA_SPECIAL_TOKENS),
    "modernbert": ("bpe", "PreTrainedTokenizerFast", ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]),
    "bert": ("wordpiece", "BertTokenizer", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    "electra": ("wordpiece", "ElectraTokenizer", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    "distilbert": ("wordpiece", "DistilBertTokenizer", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    "mpnet": ("wordpiece", "MPNetTokenizer", ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]),
    "xlm-roberta": ("unigram", "XLMRobertaTokenizer", ["<s>", "<pad>", "</s>", "<unk>"]),
    "camembert": ("unigram", "CamembertTokenizer", ["<s>NOTUSED", "<pad>", "</s>NOTUSED", "<unk>", "<unk>NOTUSED",
                                                    "<s>", "</s>"]),
    "deberta-v2": ("unigram", "DebertaV2Tokenizer", ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]),
    "albert": ("unigram", "AlbertTokenizer", ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]),
}


def _family_texts() -> list[str]:
    """The words of :func:`make_msmarco_data` (same syllables), mixed case, with URL and query characters."""
    rng = random.Random(0)
    words = _pseudo_words(rng, 400)
    texts = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(200)]
    return texts + [t.title() for t in texts[:60]] + ["http://example.com/0123456789 What is X? Foo, Bar. Unjudged"] * 5


def train_family_tokenizer(family: str, texts: list[str] | None = None, vocab_size: int = 300):
    """A transformers tokenizer of ``family``'s class over a vocabulary trained here by ``tokenizers``.

    The special tokens come first (ModernBERT's last, as in its real vocabulary), in the family's
    order, so their ids are the family's small ids (BERT ``[CLS]`` = 2, not 101).
    """
    import transformers
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, normalizers, pre_tokenizers, trainers

    kind, cls_name, specials = _FAMILY_TOKENIZERS[family]
    texts = texts or _family_texts()
    cls = getattr(transformers, cls_name)
    if kind == "bpe":
        bpe = ByteLevelBPETokenizer(add_prefix_space=False)
        bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                special_tokens=specials if family == "roberta" else [])
        if family == "roberta":
            model = json.loads(bpe._tokenizer.to_str())["model"]
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
            return cls(vocab=model["vocab"], merges=merges)
        bpe.add_special_tokens(specials)
        return cls(tokenizer_object=bpe._tokenizer, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                   pad_token="[PAD]", mask_token="[MASK]")
    if kind == "wordpiece":
        wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        wp.normalizer = normalizers.BertNormalizer(lowercase=True)
        wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        wp.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, show_progress=False))
        learned = sorted(wp.get_vocab().items(), key=lambda kv: kv[1])
        tokens = specials + [t for t, _ in learned if t not in specials]
        return cls(vocab={t: i for i, t in enumerate(tokens)})
    uni = Tokenizer(models.Unigram())
    uni.normalizer = normalizers.NFKC()
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<unk>"],
                                                           unk_token="<unk>", show_progress=False))
    pieces = [(p, s) for p, s in json.loads(uni.to_str())["model"]["vocab"] if p != "<unk>"]
    extra = {"unk_id": specials.index("[UNK]")} if family == "deberta-v2" else {}
    return cls(vocab=[(t, 0.0) for t in specials] + pieces, **extra)


def tiny_family_config(family: str, tok, hidden_size: int = 32, num_hidden_layers: int = 2,
                       num_attention_heads: int = 4, intermediate_size: int = 37, **extra):
    """A random-init config of ``family`` sized like :func:`tiny_roberta_config`, with ``tok``'s special ids.

    ELECTRA and ALBERT embed at half the hidden size (so their projection runs), DeBERTa-v2 is
    set up like DeBERTa-v3 (relative attention, log buckets, no absolute positions), ModernBERT
    gets a short sliding window (``local_attention`` 8) so that tiny rows see it, and at least 4 layers
    (full, sliding, sliding, full: its own pattern), so that a full layer follows a CLS broadcast.
    """
    from transformers import CONFIG_MAPPING

    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.cls_token_id, "eos_token_id": tok.sep_token_id}
    size = {"vocab_size": len(tok), "hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size}
    per_family = {
        "roberta": {"max_position_embeddings": tok.pad_token_id + 513, "type_vocab_size": 1, "layer_norm_eps": 1e-5},
        "xlm-roberta": {"max_position_embeddings": tok.pad_token_id + 513, "type_vocab_size": 1},
        "camembert": {"max_position_embeddings": tok.pad_token_id + 513, "type_vocab_size": 1},
        "electra": {"embedding_size": hidden_size // 2},
        "albert": {"embedding_size": hidden_size // 2, "num_hidden_groups": 1, "inner_group_num": 1},
        "mpnet": {"max_position_embeddings": 514},
        "deberta-v2": {"relative_attention": True, "position_buckets": 8, "max_relative_positions": -1,
                       "pos_att_type": ["p2c", "c2p"], "share_att_key": True, "norm_rel_ebd": "layer_norm",
                       "position_biased_input": False, "type_vocab_size": 0, "layer_norm_eps": 1e-7},
        "modernbert": {"local_attention": 8, "cls_token_id": tok.cls_token_id, "sep_token_id": tok.sep_token_id,
                       "num_hidden_layers": max(num_hidden_layers, 4)},
        "distilbert": {"dim": hidden_size, "n_layers": num_hidden_layers, "n_heads": num_attention_heads,
                       "hidden_dim": intermediate_size},
    }.get(family, {})
    if family == "distilbert":
        size = {"vocab_size": len(tok)}
    return CONFIG_MAPPING[family](**ids, **{**size, **per_family, **extra})


def make_backbone_folder(out_dir: str | Path, family: str, seed: int = 0, tokenizer=None, **config_kwargs) -> Path:
    """A folder as a researcher gets it from transformers: ``save_pretrained`` of a random base model of
    ``family`` (``config.json`` + ``model.safetensors``) and of its tokenizer (``tokenizer.json`` +
    ``tokenizer_config.json``, no ``vocab.txt``)."""
    import torch
    from transformers import MODEL_MAPPING

    out = Path(out_dir)
    tok = tokenizer if tokenizer is not None else train_family_tokenizer(family)
    config = tiny_family_config(family, tok, **config_kwargs)
    torch.manual_seed(seed)
    MODEL_MAPPING[type(config)](config).save_pretrained(out)
    tok.save_pretrained(out)
    return out
