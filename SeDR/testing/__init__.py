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
  restated step by step (the oracle of :class:`SeDR.data.tokenization.StarTokenizer`).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from SeDR.core.constants import CORPUS_FILE, SPLIT_FILES

ROBERTA_RESERVED_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
FAKE_SNAPSHOT_HASH = "0" * 40


def _pseudo_words(rng: random.Random, n: int) -> list[str]:
    """Pronounceable distinct lower-case words, so BPE learns multi-character merges."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "zo", "pe", "shi", "vu", "dra", "gle", "on", "ix", "ber"]
    words: dict[str, None] = {}
    while len(words) < n:
        words.setdefault("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))))
    return list(words)


def train_tokenizer(
    out_dir: str | Path, texts: list[str] | None = None, vocab_size: int = 400, model_max_length: int = 512
) -> Path:
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
    tok.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=ROBERTA_RESERVED_TOKENS,
        show_progress=False,
    )
    tok.save_model(str(out))
    (out / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "RobertaTokenizer",
                "model_max_length": model_max_length,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "sep_token": "</s>",
                "cls_token": "<s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "mask_token": "<mask>",
                "add_prefix_space": False,
            }
        )
    )
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


def make_star_checkpoint(
    out_dir: str | Path,
    vocab_size: int,
    seed: int = 0,
    with_position_ids: bool = True,
    tokenizer_dir: str | Path | None = None,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 37,
    **config_kwargs,
) -> Path:
    """Write a random model shaped like STAR (514 positions, pad 1, one token type) but tiny, in the
    released STAR layout (legacy ``pytorch_model.bin``); ``tokenizer_dir``'s files are copied beside it."""
    import torch  # see train_tokenizer
    from transformers import RobertaConfig, RobertaModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
        **config_kwargs,
    )
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
    (out / "config.json").write_text(
        json.dumps({**config.to_dict(), "architectures": ["RobertaDot"]}, indent=2)
    )
    if tokenizer_dir is not None:
        _copy_files(tokenizer_dir, out, skip=("config.json",))
    return out


@dataclass
class SyntheticCorpus:
    """What :func:`make_msmarco_data` wrote, for tests that check against it."""

    data_dir: Path
    doc_ids: list[int]  # MS MARCO doc numbers, in file order
    queries: dict[str, list[tuple[int, str]]]  # split -> [(qid, text)] in file order
    qrels: dict[str, list[tuple[int, int, int]]]  # split -> [(qid, doc number, rel)]


def make_msmarco_data(
    data_dir: str | Path,
    n_docs: int = 40,
    seed: int = 0,
    n_train: int | None = None,
    n_dev: int = 10,
    n_test: int = 6,
    long_fraction: float = 0.6,
    max_words: int = 1600,
) -> SyntheticCorpus:
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
            body = [
                rng.choice(topic_words[i]) if rng.random() < 0.15 else rng.choice(filler)
                for _ in range(n_words)
            ]
            title = " ".join(w.capitalize() for w in rng.sample(topic_words[i], 2))
            f.write(f"D{did}\thttp://example.com/{did}\t{title}\t{' '.join(body)}\n")

    used_qids: set[int] = set()

    def new_qid() -> int:
        while (q := rng.randint(1, 2_000_000)) in used_qids:
            pass
        used_qids.add(q)
        return q

    sizes = {
        "train": n_docs if n_train is None else n_train,
        "dev": n_dev,
        "test": n_test,
        "2020test": n_test,
    }
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
                lines += [
                    (qid, doc_ids[o], rng.choice([0, 1, 2])) for o in rng.sample(range(n_docs), 3) if o != t
                ]
        qs += [(new_qid(), "unjudged " + rng.choice(filler)) for _ in range(2 if trec else 0)]
        rng.shuffle(qs)
        queries[split], qrels[split] = qs, lines
        with open(out / qfile, "w", encoding="utf-8") as f:
            f.writelines(f"{qid}\t{text}\n" for qid, text in qs)
        with open(out / rfile, "w", encoding="utf-8") as f:
            f.writelines(f"{qid} {'Q0' if trec else '0'} D{did} {rel}\n" for qid, did, rel in lines)
    return SyntheticCorpus(out, doc_ids, queries, qrels)
