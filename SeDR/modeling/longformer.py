"""SeDR-Longformer on the stock ``transformers.LongformerModel`` (docs/longformer.md).

The original ran allenai's Longformer on ``transformers==3.0.2``. Today's ``LongformerModel``
has the same semantics (local sliding window plus global tokens with their own ``Q_g/K_g/V_g``;
a global token attends to every non-padding token, every token attends to the global ones), so
nothing is vendored. Mapping of the original's settings:

* allenai ``attention_window = 256`` is one-sided (256 left + self + 256 right); HF counts both
  sides, so the HF value is ``512`` (:data:`HF_ATTENTION_WINDOW`);
* allenai mask value 2 ("global") becomes ``global_attention_mask = 1``; HF merges it with the
  attention mask, so a global flag on a padding position stays padding, as in the original;
* HF pads every sequence to a multiple of the window itself, as the original did explicitly.

Folders the original wrote (its conversion and its checkpoints) carry allenai's config keys
(``attention_mode``, ``attention_dilation``, ``autoregressive``) next to the one-sided window;
:func:`allenai_to_hf` doubles the window and refuses anything it would have to guess
(docs/original-code.md).

The encoder attribute is named ``roberta`` so parameter names are the original checkpoint's
(``roberta.*``, ``embeddingHead.*``, ``norm.*``; docs/models.md#parameter-names);
:func:`SeDR.modeling.load_weights_into` and :func:`SeDR.modeling.save_pretrained` read and
write them unchanged.

A document is one row ``[CLS] + content + [EOS]`` padded to ``max_doc_length`` (the segment pipeline
with ``Lraw = max_doc_length``, ``M = 1``). Inside the model a ``CLS`` is written at positions
``0, 512, 1024, 1536`` (replacing the tokens there) with global attention inside the document;
the hidden states at those positions are the document's ``max_seg_num`` vectors.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn
from transformers import LongformerConfig, LongformerModel

from SeDR.core.errors import SeDRInputError
from SeDR.data.batches import QueryBatch, SegmentBatch
from SeDR.modeling.checkpoint import (
    CONFIG_NAME,
    ROBERTA_POSITION_ROWS,
    load_weights_into,
    read_config_dict,
    read_state_dict,
    save_pretrained,
)
from SeDR.modeling.models import (
    DEFAULT_CACHE_SIZE,
    MODEL_REGISTRY,
    DenseRetriever,
    ModelConfigError,
    register,
)

logger = logging.getLogger(__name__)

MODEL_CLASS_NAME = "SeDR_Longformer"
# Distance between the global CLS positions, hard-coded to 512 in the original
# (docs/longformer.md#global-cls-positions).
CLS_STRIDE = 512
# allenai's one-sided window and its HF equivalent, which counts both sides
# (docs/longformer.md#attention-window).
ALLENAI_ONE_SIDED_WINDOW = 256
HF_ATTENTION_WINDOW = 2 * ALLENAI_ONE_SIDED_WINDOW
# Document length of the README run and the position table it needs (RoBERTa offset 2).
DEFAULT_MAX_DOC_LENGTH = 2048
ROBERTA_POSITION_OFFSET = 2
# Number of global CLS positions of the README run (M = 4).
DEFAULT_MAX_SEG_NUM = 4
# Config keys that survive SeDR.modeling's Longformer -> RoBERTa config reduction,
# so load_model can rebuild us.
SAVED_WINDOW_KEY = "sedr_longformer_attention_window"
SAVED_POSITIONS_KEY = "sedr_longformer_max_position_embeddings"
# Keys of allenai's Longformer config, written by the original's conversion and training (window one-sided).
ALLENAI_KEYS = ("attention_mode", "attention_dilation", "autoregressive")
CONVERT_COMMAND = "python SeDR_Longformer/Star2Star_Longformer.py"


def cls_positions(max_seg_num: int, stride: int = CLS_STRIDE) -> list[int]:
    """Positions of the global CLS tokens: ``0, 512, 1024, 1536`` for ``M = 4``
    (docs/longformer.md#global-cls-positions)."""
    return [k * stride for k in range(max_seg_num)]


def place_global_cls(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cls_id: int,
    max_seg_num: int,
    stride: int = CLS_STRIDE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Write ``CLS`` at the fixed positions and flag the ones inside the document as global
    (docs/longformer.md#valid-segments).

    The token at each position ``p < T`` is **replaced** (a content token, the ``EOS`` or a ``PAD``);
    slot ``k`` is valid iff position ``512k`` lies inside ``[CLS] … [EOS]`` (``mask[p] != 0``), with no
    minimum-length rule. Positions at or past the row width (rows trimmed by the collator) are invalid.

    Args:
        input_ids: ``(n, T)`` document rows.
        attention_mask: ``(n, T)`` 0/1.

    Returns:
        ``(ids (n, T), global_attention_mask (n, T) 0/1, valid (n, M) bool)``.
    """
    n, T = input_ids.shape
    ids = input_ids.clone()
    glob = torch.zeros_like(attention_mask)
    valid = torch.zeros(n, max_seg_num, dtype=torch.bool, device=input_ids.device)
    for k, p in enumerate(cls_positions(max_seg_num, stride)):
        if p >= T:
            continue
        ids[:, p] = cls_id
        inside = attention_mask[:, p] != 0  # (n,)
        glob[:, p] = inside.to(glob.dtype)
        valid[:, k] = inside
    return ids, glob, valid


def longformer_config(config):
    """A ``LongformerConfig`` for ``config``: as is,
    or rebuilt from a RoBERTa reduction made by ``load_model``."""
    if config.model_type == "longformer":
        out = config
    else:
        d = config.to_dict()
        if SAVED_WINDOW_KEY not in d:
            raise ModelConfigError(
                f"{MODEL_CLASS_NAME} needs a Longformer config: this one lacks {SAVED_WINDOW_KEY} "
                f"and attention_window; load the folder with load_longformer (the "
                f"SeDR_Longformer scripts), or convert STAR again: {CONVERT_COMMAND}"
            )
        d["model_type"] = "longformer"
        d["attention_window"] = d[SAVED_WINDOW_KEY]
        d["max_position_embeddings"] = d[SAVED_POSITIONS_KEY]
        out = LongformerConfig.from_dict(d)
    setattr(
        out,
        SAVED_WINDOW_KEY,
        list(out.attention_window)
        if isinstance(out.attention_window, list)
        else [int(out.attention_window)] * int(out.num_hidden_layers),
    )
    setattr(out, SAVED_POSITIONS_KEY, int(out.max_position_embeddings))
    # HF Longformer has only its own (eager) attention; its mask code needs the float path.
    out._attn_implementation = "eager"
    return out


class SeDRLongformer(DenseRetriever):
    """SeDR-Longformer (docs/models.md#sedr-longformer): Longformer encoders, the Late-Cache CE loss.

    Training documents are ``(n, M, d)`` matrices whose invalid slots are zeroed **before** the
    head, so they equal ``norm(embeddingHead.bias)``, as in the original
    (docs/longformer.md#longformer-slot-values). At inference the head runs first and invalid slots become
    exact zeros; every document emits ``M`` rows (docs/deviations.md#dev-longformer-rows:
    the id is repeated ``M`` times), which is what the original's encoder produced.
    """

    model_class_name = MODEL_CLASS_NAME
    uses_cache = True
    loss_kind = "ce"

    def __init__(self, config):
        # DenseRetriever.__init__ builds a RoBERTa/BERT backbone with E_seg; this class has neither.
        nn.Module.__init__(self)
        config = longformer_config(config)
        self.config = config
        self.backbone_prefix = "roberta"
        self.roberta = LongformerModel(config, add_pooling_layer=False)
        self._add_head(config)

    # ------------------------------------------------------------------ settings
    @property
    def max_doc_length(self) -> int:
        return int(self.config.max_position_embeddings) - ROBERTA_POSITION_OFFSET

    def rows_per_document(self, seg_counts: torch.Tensor) -> torch.Tensor:
        """``M`` index rows per document, invalid ones zero
        (docs/longformer.md#longformer-rows-per-document)."""
        return torch.full_like(torch.as_tensor(seg_counts), self.max_seg_num)

    def gradient_checkpointing_enable(self) -> None:
        """HF's own per-layer checkpointing, non-reentrant (the layers cannot be driven from outside)."""
        self.gradient_checkpointing = True
        kwargs = {"use_reentrant": False}
        if hasattr(self.roberta, "activation_checkpointing_enable"):  # transformers >= 5.23
            self.roberta.activation_checkpointing_enable(kwargs)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.roberta.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False
        if hasattr(self.roberta, "activation_checkpointing_disable"):
            self.roberta.activation_checkpointing_disable()
        else:
            self.roberta.gradient_checkpointing_disable()

    # ------------------------------------------------------------------ encoders
    def run_encoder(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, global_attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Last hidden states ``(n, T, H)``; HF pads to a multiple of the window and cuts back."""
        if input_ids.shape[1] > self.max_doc_length:
            raise ValueError(
                f"rows of {input_ids.shape[1]} tokens exceed the position table "
                f"({self.max_doc_length} tokens); convert with a larger --max_doc_length"
            )
        out = self.roberta(
            input_ids=input_ids,
            attention_mask=attention_mask,
            global_attention_mask=global_attention_mask,
            return_dict=True,
        )
        return out.last_hidden_state

    def encode_queries(self, queries: QueryBatch) -> torch.Tensor:
        """Query vectors ``(B, d)``: the CLS is global (docs/longformer.md#longformer-queries),
        HF pads to the window."""
        glob = torch.zeros_like(queries.attention_mask)
        glob[:, 0] = 1
        hidden = self.run_encoder(queries.input_ids, queries.attention_mask, glob)  # (B, Lq, H)
        return self.head(hidden[:, 0])

    def _check_batch(self, batch: SegmentBatch) -> None:
        if batch.max_seg_num != 1 or bool((batch.seg_counts != 1).any()):
            raise ValueError(
                f"{MODEL_CLASS_NAME} reads one row per document: build its batches with "
                f"SegmentSpec(max_doc_length, 1)"
            )

    def slot_states(self, batch: SegmentBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states at the CLS positions ``(n, M, H)`` (a stand-in past the row)
        and their validity ``(n, M)``."""
        self._check_batch(batch)
        M = self.max_seg_num
        ids, glob, valid = place_global_cls(
            batch.input_ids, batch.attention_mask, self.special_ids["cls_id"], M
        )
        # Columns past the longest row are padding for every row: cutting them changes no valid output
        # (padding is never attended) but saves the 2048-token pass for short documents.
        width = max(int(batch.attention_mask.sum(dim=1).max()), 1)
        hidden = self.run_encoder(
            ids[:, :width], batch.attention_mask[:, :width], glob[:, :width]
        )  # (n, w, H)
        n, T, H = hidden.shape
        pos = torch.tensor(cls_positions(M), device=hidden.device).clamp(max=T - 1)  # (M,)
        states = hidden[:, pos]  # (n, M, H); slots past the row hold a stand-in and are invalid
        return states, valid

    def encode_documents(self, batch: SegmentBatch) -> torch.Tensor:
        """Training: ``head(S · valid)``, invalid slots = ``norm(embeddingHead.bias)``
        (docs/longformer.md#longformer-slot-values)."""
        states, valid = self.slot_states(batch)
        return self.head(states * valid[..., None].to(states.dtype))  # (n, M, d)

    def encode_segments(self, batch: SegmentBatch) -> torch.Tensor:
        """Inference: ``head(S) · valid``, ``M`` rows per document in slot order, ``(n·M, d)``."""
        states, valid = self.slot_states(batch)
        R = self.head(states) * valid[..., None].to(states.dtype)  # (n, M, d)
        return R.reshape(-1, R.shape[-1])


# ---------------------------------------------------------------------------------------------- loading


def _refuse(file, key: str, problem: str) -> NoReturn:
    raise ModelConfigError(
        f"{file}: {key} {problem}; the attended span would be a guess, so it is not loaded. "
        f"Convert STAR again ({CONVERT_COMMAND}, window counted on both sides)"
    )


def allenai_to_hf(cfg: dict, file) -> dict:
    """The original's allenai config as today's: its one-sided window ``w`` becomes ``attention_window = 2w``.

    Only the original's own settings are read (one window for every layer, no dilation, not
    autoregressive, ``sliding_chunks``); anything else is refused rather than guessed.
    """
    layers = int(cfg.get("num_hidden_layers", 0))
    for key in ("attention_window", *ALLENAI_KEYS):
        if key not in cfg:
            _refuse(
                file,
                key,
                f"is missing (an allenai Longformer config has attention_window, {', '.join(ALLENAI_KEYS)})",
            )
    if cfg.get("model_type") not in ("roberta", "longformer"):
        _refuse(file, "model_type", f"is {cfg.get('model_type')!r}, not roberta/longformer")
    if cfg["attention_mode"] != "sliding_chunks":
        _refuse(file, "attention_mode", f"is {cfg['attention_mode']!r}, not 'sliding_chunks'")
    if cfg["autoregressive"] is not False:
        _refuse(file, "autoregressive", f"is {cfg['autoregressive']!r}, not false")
    dil = cfg["attention_dilation"]
    if not (isinstance(dil, list) and len(dil) == layers and all(d == 1 for d in dil)):
        _refuse(file, "attention_dilation", f"is {dil!r}, not [1] * {layers}")
    win = cfg["attention_window"]
    if not (
        isinstance(win, list)
        and len(win) == layers
        and len(set(win)) == 1
        and isinstance(win[0], int)
        and win[0] > 0
    ):
        _refuse(
            file,
            "attention_window",
            f"is {win!r}, not one positive one-sided window for each of {layers} layers",
        )
    # gradient_checkpointing: the 3.0.2 config flag would switch on HF's own checkpointing here;
    # the training flag decides.
    d = {k: v for k, v in cfg.items() if k not in (*ALLENAI_KEYS, "gradient_checkpointing")}
    d.update(model_type="longformer", attention_window=[2 * win[0]] * layers)
    logger.info(
        "%s: the original's allenai Longformer config, window %d on each side: read as attention_window "
        "%d (both sides counted), the span it was trained with",
        file,
        win[0],
        2 * win[0],
    )
    return d


def _configured(folder, *, max_seg_num: int | None, cache_size: int | None):
    cfg = read_config_dict(folder)
    file = Path(folder) / CONFIG_NAME
    if any(k in cfg for k in ALLENAI_KEYS):
        d = allenai_to_hf(cfg, file)
    elif cfg.get("model_type") != "longformer":
        _refuse(
            file,
            "model_type",
            f"is {cfg.get('model_type')!r} without allenai's {', '.join(ALLENAI_KEYS)}: "
            "not a Longformer folder (or one whose window side count is unknown)",
        )
    elif "attention_window" not in cfg:
        _refuse(file, "attention_window", "is missing (today's Longformer would silently take 512)")
    else:
        d = cfg
    config = LongformerConfig.from_dict(d)
    config.sedr_model_class = MODEL_CLASS_NAME
    config.architectures = [MODEL_CLASS_NAME]
    config.max_seg_num = int(
        max_seg_num if max_seg_num is not None else cfg.get("max_seg_num", DEFAULT_MAX_SEG_NUM)
    )
    config.cache_size = int(
        cache_size if cache_size is not None else cfg.get("cache_size", DEFAULT_CACHE_SIZE)
    )
    config.sedr_special_ids = cfg.get("sedr_special_ids") or {
        "cls_id": int(cfg.get("bos_token_id", 0)),
        "eos_id": int(cfg.get("eos_token_id", 2)),
        "pad_id": int(cfg.get("pad_token_id", 1)),
    }
    return config


def _load(model: SeDRLongformer, folder) -> SeDRLongformer:
    """Weights from ``folder``; a non-finite position row that tokens can use (1 = padding) is refused."""
    load_weights_into(model, folder)
    pos = model.roberta.embeddings.position_embeddings.weight
    bad = (~torch.isfinite(pos[1:]).all(dim=1)).nonzero().flatten() + 1
    if len(bad):
        raise SeDRInputError(
            f"{folder}: roberta.embeddings.position_embeddings.weight rows {bad.tolist()[:5]} are "
            f"not finite (the original's conversion left rows 0-1 uninitialised); "
            f"convert STAR again: {CONVERT_COMMAND}"
        )
    return model


def build_longformer(
    init_path,
    *,
    max_seg_num: int = DEFAULT_MAX_SEG_NUM,
    cache_size: int = DEFAULT_CACHE_SIZE,
    gradient_checkpointing: bool = False,
) -> SeDRLongformer:
    """A model to train from a conversion (``./data/starlongformer``) or a SeDR-Longformer checkpoint."""
    if cache_size <= 0:
        raise ModelConfigError(
            f"--cache_size must be > 0 for {MODEL_CLASS_NAME} (got {cache_size}); "
            "docs/training.md#late-cache-capacity"
        )
    model = _load(
        SeDRLongformer(_configured(init_path, max_seg_num=max_seg_num, cache_size=cache_size)), init_path
    )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def load_longformer(path, max_seg_num: int | None = None) -> SeDRLongformer:
    """A trained SeDR-Longformer checkpoint;
    ``max_seg_num`` (the inference flag) overrides the recorded one."""
    return _load(SeDRLongformer(_configured(path, max_seg_num=max_seg_num, cache_size=None)), path)


def register_longformer() -> type[SeDRLongformer]:
    """Add the class to ``SeDR.modeling``'s registry (idempotent), so ``load_model`` reads our checkpoints.

    Not done at import: the registry of ``SeDR/train.py`` lists exactly the classes its
    ``--model_class`` accepts, and SeDR-Longformer has its own scripts.
    """
    if MODEL_REGISTRY.get(MODEL_CLASS_NAME) is not SeDRLongformer:
        register(MODEL_CLASS_NAME)(SeDRLongformer)
    return SeDRLongformer


# ---------------------------------------------------------------------------------------------- conversion

# Prefixes of STAR's keys carried into the conversion; the pooler and buffers are not part of the model.
_KEPT_PREFIXES = ("roberta.embeddings.", "roberta.encoder.", "embeddingHead.", "norm.")


def tile_positions(
    star_table: torch.Tensor, rows: int, offset: int = ROBERTA_POSITION_OFFSET
) -> torch.Tensor:
    """``rows``-row table: rows ``< offset`` copied, learned rows ``offset..`` repeated."""
    learned = star_table.shape[0] - offset  # 512 for STAR
    idx = torch.arange(rows)
    src = torch.where(idx < offset, idx, offset + (idx - offset) % learned)  # (rows,)
    return star_table[src].clone()


def convert_state_dict(star: dict[str, torch.Tensor], num_layers: int, rows: int) -> dict[str, torch.Tensor]:
    """STAR state dict -> SeDR-Longformer state dict (``roberta.*`` names, global projections copied)."""
    sd = {}
    for k, v in star.items():
        if k.split(".", 1)[0] in ("embeddings", "encoder"):
            k = "roberta." + k
        if k.startswith(_KEPT_PREFIXES) and not k.endswith(("position_ids", "token_type_ids")):
            sd[k] = v
    missing = [
        k for k in ("embeddingHead.weight", "embeddingHead.bias", "norm.weight", "norm.bias") if k not in sd
    ]
    if missing:
        raise SeDRInputError(
            f"the STAR checkpoint lacks {', '.join(missing)}: is it the DRhard STAR document model?"
        )
    pos = "roberta.embeddings.position_embeddings.weight"
    sd[pos] = tile_positions(sd[pos], rows)
    for n in range(num_layers):
        base = f"roberta.encoder.layer.{n}.attention.self."
        for name in ("query", "key", "value"):
            for part in ("weight", "bias"):
                sd[f"{base}{name}_global.{part}"] = sd[f"{base}{name}.{part}"].clone()
    return sd


def convert_star(
    star_path, output_path, *, max_doc_length: int, attention_window: int, max_seg_num: int
) -> Path:
    """Write a SeDR-Longformer initialisation of the STAR checkpoint at ``star_path`` into ``output_path``."""
    cfg = read_config_dict(star_path)
    if cfg.get("model_type") != "roberta":
        raise SeDRInputError(
            f"{star_path}: expected a RoBERTa (STAR) checkpoint, found model_type {cfg.get('model_type')!r}"
        )
    if int(cfg.get("max_position_embeddings", ROBERTA_POSITION_ROWS)) != ROBERTA_POSITION_ROWS:
        logger.warning(
            "%s has %s position rows (STAR has %d)",
            star_path,
            cfg.get("max_position_embeddings"),
            ROBERTA_POSITION_ROWS,
        )
    rows = max_doc_length + ROBERTA_POSITION_OFFSET
    d = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "_name_or_path")}
    d.update(
        max_position_embeddings=rows, attention_window=[attention_window] * int(cfg["num_hidden_layers"])
    )
    config = LongformerConfig.from_dict(d)
    config.max_seg_num = int(max_seg_num)
    config.cache_size = DEFAULT_CACHE_SIZE
    config.sedr_special_ids = {
        "cls_id": int(cfg.get("bos_token_id", 0)),
        "eos_id": int(cfg.get("eos_token_id", 2)),
        "pad_id": int(cfg.get("pad_token_id", 1)),
    }
    model = SeDRLongformer(config)
    sd = convert_state_dict(read_state_dict(star_path), config.num_hidden_layers, rows)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SeDRInputError(
            f"{star_path}: conversion left missing {result.missing_keys} / unexpected "
            f"{result.unexpected_keys} parameters"
        )
    out = Path(output_path)
    save_pretrained(model, out)
    logger.info(
        "wrote %s: %d position rows, window %d (one-sided %d), %d layers with global projections",
        out,
        rows,
        attention_window,
        attention_window // 2,
        config.num_hidden_layers,
    )
    return out


def check_doc_length(model, max_doc_length: int, path) -> None:
    if max_doc_length > model.max_doc_length:
        raise SeDRInputError(
            f"--max_doc_length {max_doc_length} exceeds the position table of {path} "
            f"({model.max_doc_length} tokens); convert with Star2Star_Longformer.py --max_doc_length"
        )
