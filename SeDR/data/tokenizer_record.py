"""Which tokenizer made a preprocess folder, checked against the model's before any id is read.

Preprocessing writes the record next to its settings (key ``tokenizer`` of :data:`RECORD_FILE`):
the tokenizer's name or path and class, its size and a hash of its vocabulary, the
CLS/separator/PAD ids and whether text was lower-cased (by the roberta-base emulation or by the
tokenizer itself). A model carries the same record on its
config (``sedr_tokenizer``), taken from the tokenizer files saved with it; a folder without any
(the released STAR checkpoint) is compared on its config's vocabulary size and special ids.
``train.py``, ``inference.py`` (hard negatives included) and ``adore_train.py`` call
:func:`check_tokenizer_record` right after loading the model (docs/backbones.md#tokenizer-record).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from SeDR.core.constants import PREPROCESS_RECORD
from SeDR.core.errors import SeDRInputError

logger = logging.getLogger(__name__)

RECORD_FILE = PREPROCESS_RECORD  # the original code writes none
RECORD_KEY = "tokenizer"
# Files of a saved tokenizer (any one suffices for AutoTokenizer together with the others it needs).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "spm.model",
    "tokenizer.model",
)


def has_tokenizer_files(folder) -> bool:
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def make_record(name_or_path: str, tok, star) -> dict:
    """The record of a loaded fast tokenizer ``tok`` and the
    :class:`~SeDR.data.tokenization.StarTokenizer` built on it."""
    vocab = json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False)
    return {
        "name_or_path": str(name_or_path),
        "tokenizer_class": type(tok).__name__,
        "vocab_size": len(tok),
        "vocab_sha256": hashlib.sha256(vocab.encode("utf-8")).hexdigest(),
        "special_ids": {"cls_id": star.cls_id, "eos_id": star.eos_id, "pad_id": tok.pad_token_id},
        "lower_case": star.lower_cases,
        "roberta_emulation": star.roberta_emulation,
    }


def load_tokenizer(name_or_path: str):
    """``(StarTokenizer, record)`` of ``name_or_path``, from one ``AutoTokenizer`` load."""
    from SeDR.data.tokenization import StarTokenizer, auto_tokenizer

    tok = auto_tokenizer(name_or_path)
    star = StarTokenizer.from_tokenizer(tok, str(name_or_path))
    return star, make_record(name_or_path, tok, star)


def read_record(folder) -> dict | None:
    path = Path(folder) / RECORD_FILE
    return json.loads(path.read_text()).get(RECORD_KEY) if path.is_file() else None


def describe(record: dict) -> str:
    ids = record["special_ids"]
    case = "lower-cased" if record.get("lower_case") else "cased"
    return (
        f"{record.get('tokenizer_class', 'a tokenizer')} of {record['vocab_size']} tokens "
        f"(vocabulary sha256 {record.get('vocab_sha256', '?')[:12]}), CLS {ids['cls_id']} separator "
        f"{ids['eos_id']} PAD {ids['pad_id']}, {case}"
    )


def _rerun_command(preprocess_dir: Path, model_path: str) -> str:
    meta = preprocess_dir / "passages_meta"
    length = f" --max_seq_length {json.loads(meta.read_text())['embedding_size']}" if meta.is_file() else ""
    new = preprocess_dir.with_name(f"{preprocess_dir.name}-{Path(model_path).name or 'model'}")
    return (
        f"python SeDR_preprocess.py --data_path {preprocess_dir.parent}{length} "
        f"--model_name_or_path {model_path} "
        f"--output_dir {new}, then pass --preprocess_dir {new}"
    )


def model_mismatch(record: dict, model) -> str | None:
    """None when the ids of the tokenizer ``record`` describes mean the same tokens to ``model``, else the
    model's side of the difference (its saved tokenizer record, or its config's vocabulary size and ids)."""
    config = model.config
    mine = getattr(config, "sedr_tokenizer", None)
    ids = model.special_ids
    if mine is not None:
        same = all(record.get(k) == mine.get(k) for k in ("vocab_size", "vocab_sha256", "lower_case"))
        model_side = describe(dict(mine, special_ids=ids))
    else:  # no tokenizer saved with the model: its config's vocabulary size and special ids
        size = int(config.vocab_size) - (
            int(config.multi_view_k) if model.model_class_name == "STAR_Multi" else 0
        )
        same = record["vocab_size"] == size
        model_side = (
            f"a vocabulary of {size} tokens with CLS {ids['cls_id']} "
            f"separator {ids['eos_id']} PAD {ids['pad_id']}"
        )
    return None if same and record["special_ids"] == ids else model_side


def check_tokenizer_record(preprocess_dir, model, model_path=None) -> None:
    """Refuse a preprocess folder whose ids come from another tokenizer than ``model``'s
    (:class:`SeDRInputError`).

    A folder without a record (the original code's, or one written before records existed) is
    accepted with one warning for a RoBERTa model with RoBERTa's ids, as the original would read it.
    """
    preprocess_dir = Path(preprocess_dir)
    config = model.config
    mine = getattr(config, "sedr_tokenizer", None)
    name = str(model_path or (mine or {}).get("name_or_path") or f"the {config.model_type} model")
    ids = model.special_ids
    theirs = read_record(preprocess_dir)
    if theirs is None:
        if config.model_type in ("roberta", "longformer") and ids == {"cls_id": 0, "eos_id": 2, "pad_id": 1}:
            logger.warning(
                "%s has no tokenizer record (written by the original code or an older version); assuming "
                "roberta-base ids, which fit %s",
                preprocess_dir,
                name,
            )
            return
        raise SeDRInputError(
            f"{preprocess_dir} has no tokenizer record, so nothing says its ids come from the "
            f"tokenizer of {name} ({config.model_type}); rerun preprocessing with it: "
            + _rerun_command(preprocess_dir, name)
        )
    model_side = model_mismatch(theirs, model)
    if model_side is not None:
        raise SeDRInputError(
            f"{preprocess_dir} was tokenized with {theirs['name_or_path']} ({describe(theirs)}) but "
            f"{name} has {model_side}: its ids would mean other tokens to the model; rerun "
            f"preprocessing with the model's tokenizer: " + _rerun_command(preprocess_dir, name)
        )
