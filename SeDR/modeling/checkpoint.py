"""Checkpoints in and out: the released STAR checkpoint, the original SeDR code's,
a Longformer conversion, ours.

We write ``config.json`` (the backbone config plus every model-defining SeDR field) and
``model.safetensors`` under the original's parameter names (docs/models.md#parameter-names), so the
original's ``pytorch_model.bin`` reads as is; the original's transformers cannot read safetensors:
``python -m SeDR.export_original`` writes its layout. Reading is one explicit key mapping
(:func:`adapt_state_dict`) whatever the source (docs/models.md#checkpoint-loading); every key that
is missing or unexpected beyond what a source lacks by design is listed in a warning.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import CONFIG_MAPPING

from SeDR.core.errors import DataFormatError, MissingInputError, SeDRInputError, check_model_folder
from SeDR.core.outputs import fingerprint, process_umask
from SeDR.data.tokenizer_record import has_tokenizer_files, load_tokenizer
from SeDR.modeling import backbones
from SeDR.modeling import models as M

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
# RoBERTa/STAR position table: a longer table (Longformer conversion, 2050 rows) is cut to this.
ROBERTA_POSITION_ROWS = 514
# Longformer-only config fields dropped when a conversion is read as RoBERTa.
_LONGFORMER_FIELDS = (
    "attention_window",
    "attention_mode",
    "attention_dilation",
    "autoregressive",
    "onnx_export",
    "sep_token_id",
    "gradient_checkpointing",
)
# Families with an adapter, plus a Longformer conversion read as RoBERTa.
_SUPPORTED_TYPES = (*backbones.BACKBONES, "longformer")


@dataclass
class LoadReport:
    """What a load did: documented new/derived keys, adaptations, and the keys that deserve a warning."""

    new: list[str] = field(default_factory=list)  # documented: initialised fresh or derived
    adapted: list[str] = field(default_factory=list)  # documented: renamed, cut or grown
    ignored: list[str] = field(default_factory=list)  # documented: buffers and pooler dropped
    missing: list[str] = field(default_factory=list)  # NOT documented: warned
    unexpected: list[str] = field(default_factory=list)  # NOT documented: warned


# ------------------------------------------------------------------------------------------- files


def read_config_dict(path) -> dict:
    check_model_folder(path)
    cfg = Path(path) / CONFIG_NAME
    if not cfg.exists():
        raise MissingInputError(cfg, "a checkpoint folder needs config.json next to its weights")
    try:
        return json.loads(cfg.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataFormatError(
            cfg, None, f"not a readable JSON config ({err}); re-copy the checkpoint"
        ) from None


def weights_path(path) -> Path:
    """``model.safetensors`` if present, else the legacy ``pytorch_model.bin``."""
    folder = Path(path)
    for name in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME):
        if (folder / name).exists():
            return folder / name
    raise MissingInputError(folder / WEIGHTS_NAME, f"no {WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME} in {folder}")


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors; a truncated or corrupt file is one clear error, not a library traceback."""
    file = weights_path(path)
    try:
        if file.name == WEIGHTS_NAME:
            return load_file(str(file))
        return torch.load(file, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        raise DataFormatError(
            file,
            None,
            f"unreadable or truncated checkpoint ({str(err).splitlines()[0][:200]}); "
            "re-copy it or train it again",
        ) from None


def model_fingerprint(path) -> str:
    """Identity of a checkpoint's weights and config (sha256 of both files),
    tying outputs to what made them."""
    return fingerprint([Path(path) / CONFIG_NAME, weights_path(path)])


def recorded_class(cfg: dict) -> str | None:
    """The model class a checkpoint records (ours: ``sedr_model_class``; the original: ``architectures``)."""
    name = cfg.get("sedr_model_class")
    if name:
        return name
    for arch in cfg.get("architectures") or []:
        if arch in M.MODEL_REGISTRY:
            return arch
    return None


def _special_ids(cfg: dict, folder: Path, record: dict | None) -> dict:
    """Ids recorded in the config (ours), else the saved tokenizer's, else RoBERTa's own config ids;
    never a guess (docs/backbones.md#special-ids)."""
    if cfg.get("sedr_special_ids"):
        return {k: int(v) for k, v in cfg["sedr_special_ids"].items()}
    if record is not None:
        missing = [k for k, v in record["special_ids"].items() if v is None]
        if missing:
            raise SeDRInputError(f"{folder}: the tokenizer saved there defines no {', '.join(missing)} token")
        return dict(record["special_ids"])
    ids = backbones.roberta_config_ids(cfg)
    if ids is None:
        raise SeDRInputError(
            f"{folder}: no tokenizer files and no sedr_special_ids in config.json, so the CLS, separator "
            f"and PAD ids of this {cfg.get('model_type')} model are unknown; save its tokenizer there "
            f"(tokenizer.save_pretrained('{folder}')) or add \"sedr_special_ids\": "
            '{"cls_id": ..., "eos_id": ..., "pad_id": ...} to its config.json'
        )
    return ids


def make_config(
    cfg: dict,
    folder,
    model_class: str,
    *,
    max_seg_num: int,
    cache_size: int,
    multi_view_k: int,
    output_embedding_size: int | None = None,
    attn_implementation: str = "sdpa",
):
    """Backbone config from a checkpoint's ``config.json`` plus the SeDR fields of ``model_class``."""
    d = dict(cfg)
    model_type = d.get("model_type")
    if model_type not in _SUPPORTED_TYPES:
        raise SeDRInputError(
            f"{folder}: unsupported backbone model_type {model_type!r}; "
            f"supported: {', '.join(_SUPPORTED_TYPES)}"
        )
    record = cfg.get("sedr_tokenizer") or (load_tokenizer(folder)[1] if has_tokenizer_files(folder) else None)
    if model_type == "longformer" or "attention_window" in d:  # the original's trained ones say roberta
        for k in _LONGFORMER_FIELDS:
            d.pop(k, None)
        d["model_type"] = "roberta"
        d["max_position_embeddings"] = min(
            int(d.get("max_position_embeddings", ROBERTA_POSITION_ROWS)), ROBERTA_POSITION_ROWS
        )
    special = _special_ids(cfg, Path(folder), record)
    config = CONFIG_MAPPING[d["model_type"]].from_dict(d)
    reason = backbones.refusal(config)
    if reason:
        raise M.ModelConfigError(f"{folder}: {config.model_type} backbone refused: {reason}")
    config.sedr_model_class = model_class
    config.architectures = [model_class]
    config.max_seg_num = int(max_seg_num)
    config.cache_size = int(cache_size)
    config.multi_view_k = int(multi_view_k)
    if output_embedding_size:
        config.output_embedding_size = int(output_embedding_size)
    config.sedr_special_ids = special
    if record is not None:
        config.sedr_tokenizer = record
    M.get_model_class(model_class).adjust_config(config, recorded_class(cfg))
    config._attn_implementation = attn_implementation
    return config


# ------------------------------------------------------------------------------------------- mapping


def adapt_state_dict(model: M.DenseRetriever, sd: dict[str, torch.Tensor]) -> tuple[dict, LoadReport]:
    """Map a STAR / original / Longformer-conversion / plain-encoder / own state dict
    onto ``model``'s keys."""
    report = LoadReport()
    p = model.backbone_prefix
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.endswith("position_ids") or k.endswith("token_type_ids"):
            report.ignored.append(k)
            continue
        new_k = k
        if k.startswith("longformer."):
            new_k = p + k[len("longformer") :]
        elif k.split(".", 1)[0] in {"pooler", *dict(model.backbone.named_children())}:  # a plain encoder
            new_k = f"{p}.{k}"
        if new_k.startswith(f"{p}.pooler."):
            report.ignored.append(k)
            continue
        if new_k != k:
            report.adapted.append(f"{k} -> {new_k}")
        out[new_k] = v

    pos_key = f"{p}.embeddings.position_embeddings.weight"
    if pos_key in out and out[pos_key].shape[0] > target[pos_key].shape[0]:
        rows = target[pos_key].shape[0]
        report.adapted.append(f"{pos_key}: first {rows} of {out[pos_key].shape[0]} rows kept")
        out[pos_key] = out[pos_key][:rows]

    word_key = f"{p}.embeddings.word_embeddings.weight"
    if model.added_vocab_rows and word_key in out:
        have, want = out[word_key].shape[0], target[word_key].shape[0]
        if have == want - model.added_vocab_rows:
            grown = target[word_key].clone()
            grown[:have] = out[word_key]
            out[word_key] = grown
            report.new.append(f"{word_key}[{have}:{want}] ({model.model_class_name} view tokens)")

    seg_key = f"{p}.embeddings.segment_type_embeddings.weight"
    if seg_key in out and out[seg_key].shape[0] != model.max_seg_num:
        raise M.ModelConfigError(
            f"the checkpoint's segment-type table has {out[seg_key].shape[0]} rows (it was trained with "
            f"max_seg_num={out[seg_key].shape[0]}) but max_seg_num={model.max_seg_num} was requested; "
            f"pass --max_seg_num {out[seg_key].shape[0]}"
        )

    for key in target:
        if "_global." in key and key not in out:
            local = (
                key.replace("query_global", "query")
                .replace("key_global", "key")
                .replace("value_global", "value")
            )
            if local in out:
                out[key] = out[local].clone()
                report.new.append(f"{key} (copied from {local})")

    for k, v in out.items():
        if k in target and tuple(v.shape) != tuple(target[k].shape):
            raise SeDRInputError(
                f"checkpoint tensor {k} has shape {tuple(v.shape)}, the model expects "
                f"{tuple(target[k].shape)}"
            )
    return out, report


def _documented_new(model: M.DenseRetriever, key: str, head_absent: bool) -> bool:
    if any(part in key for part in model.fresh_parameters):
        return True
    return head_absent and key.split(".", 1)[0] in ("embeddingHead", "norm")


def load_weights_into(model: M.DenseRetriever, source) -> LoadReport:
    """Load a checkpoint folder (or a state dict) into ``model``; warn about undocumented differences."""
    sd = source if isinstance(source, dict) else read_state_dict(source)
    out, report = adapt_state_dict(model, sd)
    head_absent = not any(k.split(".", 1)[0] in ("embeddingHead", "norm") for k in out)
    result = model.load_state_dict(out, strict=False)
    for k in result.missing_keys:
        (report.new if _documented_new(model, k, head_absent) else report.missing).append(k)
    report.unexpected.extend(result.unexpected_keys)
    if head_absent:
        _identity_head(model)
    where = source if not isinstance(source, dict) else "state dict"
    if report.new:
        logger.info("%s: new parameters (documented): %s", where, ", ".join(report.new))
    if report.adapted or report.ignored:
        logger.info("%s: adapted %s; ignored %s", where, report.adapted, report.ignored)
    if report.missing:
        logger.warning(
            "%s: %d parameters missing from the checkpoint (left at their initialisation): %s",
            where,
            len(report.missing),
            ", ".join(report.missing),
        )
    if report.unexpected:
        logger.warning(
            "%s: %d checkpoint entries unused by %s: %s",
            where,
            len(report.unexpected),
            model.model_class_name,
            ", ".join(report.unexpected),
        )
    return report


def _identity_head(model: M.DenseRetriever) -> None:
    """Fresh head on a pretrained encoder: ``W = I``, ``b = 0`` (when d = H), norm 1/0."""
    with torch.no_grad():
        W = model.embeddingHead.weight
        if W.shape[0] == W.shape[1]:
            W.copy_(torch.eye(W.shape[0], dtype=W.dtype))
            model.embeddingHead.bias.zero_()
        model.norm.weight.fill_(1.0)
        model.norm.bias.zero_()


# ------------------------------------------------------------------------------------------- API


def _instantiate(
    folder,
    model_class: str,
    *,
    max_seg_num: int,
    cache_size: int,
    multi_view_k: int,
    output_embedding_size: int | None,
    attn_implementation: str,
    gradient_checkpointing: bool,
):
    cls = M.get_model_class(model_class)
    cfg = read_config_dict(folder)
    config = make_config(
        cfg,
        folder,
        model_class,
        max_seg_num=max_seg_num,
        cache_size=cache_size,
        multi_view_k=multi_view_k,
        output_embedding_size=output_embedding_size,
        attn_implementation=attn_implementation,
    )
    model = cls(config)
    load_weights_into(model, folder)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def build_model(
    model_class: str,
    init_path,
    *,
    max_seg_num: int,
    cache_size: int = M.DEFAULT_CACHE_SIZE,
    gradient_checkpointing: bool = False,
    multi_view_k: int = M.DEFAULT_MULTI_VIEW_K,
    output_embedding_size: int | None = None,
    attn_implementation: str = "sdpa",
) -> M.DenseRetriever:
    """A model of class ``model_class`` to train,
    initialised from ``init_path`` (STAR, a conversion, any ours).

    ``cache_size <= 0`` is rejected for the cached classes (docs/training.md#late-cache-capacity). For
    STAR_Multi the vocabulary grows by ``multi_view_k`` here, i.e. before any optimizer exists
    (docs/deviations.md#dev-star-multi-vocab).
    """
    cls = M.get_model_class(model_class)
    if cls.uses_cache and cache_size <= 0:
        raise M.ModelConfigError(
            f"--cache_size must be > 0 for {model_class} (got {cache_size}); "
            "train SeDR_without_LateCache for the run without the cache"
        )
    cfg = read_config_dict(init_path)
    multi_view_k = int(cfg.get("multi_view_k", multi_view_k))
    return _instantiate(
        init_path,
        model_class,
        max_seg_num=max_seg_num,
        cache_size=cache_size,
        multi_view_k=multi_view_k,
        output_embedding_size=output_embedding_size,
        attn_implementation=attn_implementation,
        gradient_checkpointing=gradient_checkpointing,
    )


def load_model(
    path, model_class: str | None = None, max_seg_num: int | None = None, attn_implementation: str = "sdpa"
) -> M.DenseRetriever:
    """A trained checkpoint as its own class (docs/models.md#inference-class) unless
    ``model_class`` overrides it.

    ``max_seg_num`` (the inference flag) overrides the recorded value; it must match the
    checkpoint's segment-type table, else a clear error says which value to pass.
    """
    cfg = read_config_dict(path)
    recorded = recorded_class(cfg)
    name = model_class or recorded
    if name is None:
        name = "SeDR"
        logger.warning("%s records no model class; loading it as %s", path, name)
    elif recorded and model_class and model_class != recorded:
        logger.warning("%s was saved as %s; loading it as %s", path, recorded, model_class)
    M.get_model_class(name)
    m = max_seg_num if max_seg_num is not None else cfg.get("max_seg_num")
    if m is None:
        raise SeDRInputError(f"{path}: config.json has no max_seg_num; pass --max_seg_num")
    return _instantiate(
        path,
        name,
        max_seg_num=int(m),
        cache_size=int(cfg.get("cache_size", M.DEFAULT_CACHE_SIZE)),
        multi_view_k=int(cfg.get("multi_view_k", M.DEFAULT_MULTI_VIEW_K)),
        output_embedding_size=cfg.get("output_embedding_size"),
        attn_implementation=attn_implementation,
        gradient_checkpointing=False,
    )


def save_pretrained(model: M.DenseRetriever, folder) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (the original's parameter names) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg.pop("_attn_implementation", None)
    cfg.update(
        {
            "sedr_model_class": model.model_class_name,
            "architectures": [model.model_class_name],
            "max_seg_num": model.max_seg_num,
            "sedr_special_ids": model.special_ids,
        }
    )
    (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    os.chmod(folder / WEIGHTS_NAME, 0o666 & ~process_umask())  # safetensors writes it 0600
    return folder
