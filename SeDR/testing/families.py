"""Tiny random models of the encoder families beyond RoBERTa, each saved by transformers' own
``save_pretrained`` next to a tiny tokenizer of the family's kind trained on the fly (tests, bench, docs)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from SeDR.testing import ROBERTA_RESERVED_TOKENS, _pseudo_words

BACKBONE_FAMILIES = (
    "roberta",
    "xlm-roberta",
    "camembert",
    "bert",
    "electra",
    "distilbert",
    "albert",
    "mpnet",
    "deberta-v2",
    "modernbert",
)
# family -> (tokenizer kind, transformers tokenizer class, special tokens first in the vocabulary)
_FAMILY_TOKENIZERS = {
    "roberta": ("bpe", "RobertaTokenizer", ROBERTA_RESERVED_TOKENS),
    "modernbert": ("bpe", "PreTrainedTokenizerFast", ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]),
    "bert": ("wordpiece", "BertTokenizer", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    "electra": ("wordpiece", "ElectraTokenizer", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    "distilbert": ("wordpiece", "DistilBertTokenizer", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    "mpnet": ("wordpiece", "MPNetTokenizer", ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]),
    "xlm-roberta": ("unigram", "XLMRobertaTokenizer", ["<s>", "<pad>", "</s>", "<unk>"]),
    "camembert": (
        "unigram",
        "CamembertTokenizer",
        ["<s>NOTUSED", "<pad>", "</s>NOTUSED", "<unk>", "<unk>NOTUSED", "<s>", "</s>"],
    ),
    "deberta-v2": ("unigram", "DebertaV2Tokenizer", ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]),
    "albert": ("unigram", "AlbertTokenizer", ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]),
}


def _family_texts() -> list[str]:
    """The words of :func:`make_msmarco_data` (same syllables), mixed case, with URL and query characters."""
    rng = random.Random(0)
    words = _pseudo_words(rng, 400)
    texts = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(200)]
    return (
        texts
        + [t.title() for t in texts[:60]]
        + ["http://example.com/0123456789 What is X? Foo, Bar. Unjudged"] * 5
    )


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
        bpe.train_from_iterator(
            texts,
            vocab_size=vocab_size,
            min_frequency=1,
            show_progress=False,
            special_tokens=specials if family == "roberta" else [],
        )
        if family == "roberta":
            model = json.loads(bpe._tokenizer.to_str())["model"]
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
            return cls(vocab=model["vocab"], merges=merges)
        bpe.add_special_tokens(specials)
        return cls(
            tokenizer_object=bpe._tokenizer,
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            mask_token="[MASK]",
        )
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
    uni.train_from_iterator(
        texts,
        trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False
        ),
    )
    pieces = [(p, s) for p, s in json.loads(uni.to_str())["model"]["vocab"] if p != "<unk>"]
    extra = {"unk_id": specials.index("[UNK]")} if family == "deberta-v2" else {}
    return cls(vocab=[(t, 0.0) for t in specials] + pieces, **extra)


def tiny_family_config(
    family: str,
    tok,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 37,
    **extra,
):
    """A random-init config of ``family`` sized like :func:`tiny_roberta_config`, with ``tok``'s special ids.

    ELECTRA and ALBERT embed at half the hidden size (so their projection runs), DeBERTa-v2 is
    set up like DeBERTa-v3 (relative attention, log buckets, no absolute positions), ModernBERT
    gets a short sliding window (``local_attention`` 8) so that tiny rows see it, and at least 4 layers
    (full, sliding, sliding, full: its own pattern), so that a full layer follows a CLS broadcast.
    """
    from transformers import CONFIG_MAPPING

    ids = {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.cls_token_id,
        "eos_token_id": tok.sep_token_id,
    }
    size = {
        "vocab_size": len(tok),
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
    }
    per_family = {
        "roberta": {
            "max_position_embeddings": tok.pad_token_id + 513,
            "type_vocab_size": 1,
            "layer_norm_eps": 1e-5,
        },
        "xlm-roberta": {"max_position_embeddings": tok.pad_token_id + 513, "type_vocab_size": 1},
        "camembert": {"max_position_embeddings": tok.pad_token_id + 513, "type_vocab_size": 1},
        "electra": {"embedding_size": hidden_size // 2},
        "albert": {"embedding_size": hidden_size // 2, "num_hidden_groups": 1, "inner_group_num": 1},
        "mpnet": {"max_position_embeddings": 514},
        "deberta-v2": {
            "relative_attention": True,
            "position_buckets": 8,
            "max_relative_positions": -1,
            "pos_att_type": ["p2c", "c2p"],
            "share_att_key": True,
            "norm_rel_ebd": "layer_norm",
            "position_biased_input": False,
            "type_vocab_size": 0,
            "layer_norm_eps": 1e-7,
        },
        "modernbert": {
            "local_attention": 8,
            "cls_token_id": tok.cls_token_id,
            "sep_token_id": tok.sep_token_id,
            "num_hidden_layers": max(num_hidden_layers, 4),
        },
        "distilbert": {
            "dim": hidden_size,
            "n_layers": num_hidden_layers,
            "n_heads": num_attention_heads,
            "hidden_dim": intermediate_size,
        },
    }.get(family, {})
    if family == "distilbert":
        size = {"vocab_size": len(tok)}
    return CONFIG_MAPPING[family](**ids, **{**size, **per_family, **extra})


def make_backbone_folder(
    out_dir: str | Path, family: str, seed: int = 0, tokenizer=None, **config_kwargs
) -> Path:
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
