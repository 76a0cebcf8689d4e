"""Backbone adapters: what the segment-interaction loop needs from each family of stock encoders.

One small class per family, registered by ``model_type``. An adapter wraps the stock base model
(built by transformers' own class, attribute and checkpoint prefix = its ``base_model_prefix``) and
gives :func:`SeDR.modeling.encoder.encode` the embedding step (with the segment-type term),
the list of layers, the extra arguments of each layer call (mask format, rotary or relative
positions), the final norm and the position rule. The loop itself (CLS broadcast, row groups,
checkpointing) is written once, in ``encoder.py``. Where each family adds ``E_seg``, why a family
or a class is refused, and how positions are taken: docs/backbones.md#layers,
docs/backbones.md#refused.

Everything position-related is computed from the position ids and the column index of the full
row, never from a tensor's width, so a row group that drops padding columns gets exactly the
full row's numbers.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from SeDR.core.errors import SeDRInputError

# Additive attention-mask value of HF 4.12 (-10000): representable in fp16/bf16, and a row whose
# keys are all masked stays finite (uniform) instead of turning NaN.
ATTENTION_MASK_VALUE = -10000.0
ROBERTA_POSITIONS = "roberta"  # PAD -> padding_idx, real tokens padding_idx + 1, + 2, ...
ABSOLUTE_POSITIONS = "absolute"  # 0..T-1 on every row

BACKBONES: dict[str, type[Backbone]] = {}


def roberta_position_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Every non-PAD token gets ``padding_idx + (non-PAD tokens up to and including it)``;
    PAD gets ``padding_idx``."""
    not_pad = input_ids.ne(padding_idx).long()  # (n, T)
    return torch.cumsum(not_pad, dim=1) * not_pad + padding_idx  # (n, T)


def absolute_position_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """BERT's rule: ``0..T-1`` on every row."""
    n, T = input_ids.shape
    return torch.arange(T, device=input_ids.device).expand(n, T)  # (n, T)


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """dtype the attention scores will have: the autocast dtype when autocast is on,
    else the weights' dtype."""
    dev = reference.device.type
    if dev in ("cuda", "cpu", "xpu") and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return reference.dtype


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(1 - m) · (-10000)`` of shape ``(n, T)`` in ``dtype``."""
    return (1.0 - attention_mask.to(dtype)) * ATTENTION_MASK_VALUE  # (n, T)


def register(cls):
    for model_type in cls.model_types:
        BACKBONES[model_type] = cls
    return cls


def _unsupported(model_type) -> str:
    return f"unsupported backbone model_type {model_type!r}; supported: {', '.join(BACKBONES)}"


def adapter_class(model_type: str) -> type[Backbone]:
    """The adapter of ``model_type``; an unsupported family raises with the supported ones listed."""
    if model_type not in BACKBONES:
        raise SeDRInputError(_unsupported(model_type))
    return BACKBONES[model_type]


def backbone_adapter(backbone: nn.Module) -> Backbone:
    return adapter_class(backbone.config.model_type)(backbone)


def refusal(config) -> str | None:
    """Why a backbone config cannot be driven exactly (``None`` when it can)."""
    if config.model_type not in BACKBONES:
        return _unsupported(config.model_type)
    return BACKBONES[config.model_type].refusal(config)


def check_backbone_folder(name_or_path) -> None:
    """Refuse, before any work is done, a local model folder whose family cannot be driven exactly."""
    import json
    from pathlib import Path

    from transformers import CONFIG_MAPPING

    path = Path(name_or_path) / "config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    model_type = cfg.get("model_type")
    if (
        model_type is None or model_type == "longformer"
    ):  # a hub name, a bare tokenizer, a Longformer conversion
        return
    reason = (
        refusal(CONFIG_MAPPING[model_type].from_dict(cfg))
        if model_type in BACKBONES
        else _unsupported(model_type)
    )
    if reason:
        raise SeDRInputError(f"{name_or_path}: {reason}")


def roberta_config_ids(cfg: dict) -> dict | None:
    """RoBERTa's own ids (``<s>`` 0, ``</s>`` 2, ``<pad>`` 1) when a RoBERTa config records exactly those.

    The released STAR folder has no tokenizer files; its config's ``bos/eos/pad_token_id`` are the
    ids it was trained with. Any other family, or other ids, needs the tokenizer.
    """
    ids = (cfg.get("bos_token_id"), cfg.get("eos_token_id"), cfg.get("pad_token_id"))
    if cfg.get("model_type") in ("roberta", "longformer") and ids == (0, 2, 1):
        return {"cls_id": 0, "eos_id": 2, "pad_id": 1}
    return None


class Backbone:
    """Template adapter; subclasses override the steps where their family differs."""

    model_types: ClassVar[tuple[str, ...]] = ()
    position_rule: ClassVar[str] = ABSOLUTE_POSITIONS
    with_pooler: ClassVar[bool] = False  # the stock constructor takes ``add_pooling_layer``
    # Why SeDR_Global_Attention cannot run on this family ("" where the layers allow it).
    no_global_attention: ClassVar[str] = (
        "its layers have no separate self-attention context and output step "
        "into which the global CLS attention could be placed"
    )

    def __init__(self, module: nn.Module):
        self.module = module

    # ------------------------------------------------------------------ config level
    @staticmethod
    def stock_class(config) -> type[nn.Module]:
        from transformers import MODEL_MAPPING

        return MODEL_MAPPING[type(config)]

    @classmethod
    def prefix(cls, config) -> str:
        """Attribute and checkpoint prefix of the encoder: the family's own ``base_model_prefix``."""
        return cls.stock_class(config).base_model_prefix

    @classmethod
    def build(cls, config) -> nn.Module:
        """The stock base model, without pooler; SDPA where the family has it, else eager attention."""
        stock = cls.stock_class(config)
        if config._attn_implementation == "sdpa" and not stock._supports_sdpa:
            config._attn_implementation = "eager"
        return stock(config, **({"add_pooling_layer": False} if cls.with_pooler else {}))

    @classmethod
    def refusal(cls, config) -> str | None:
        return None

    @classmethod
    def position_table(cls, config) -> tuple[int, int] | None:
        """``(first position id of a real token, rows of the absolute position table)``, or ``None``."""
        return 0, int(config.max_position_embeddings)

    # ------------------------------------------------------------------ the steps of the loop
    @property
    def layers(self) -> list[nn.Module]:
        return list(self.module.encoder.layer)

    def position_ids(self, input_ids: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
        if self.position_rule == ROBERTA_POSITIONS:
            return roberta_position_ids(
                input_ids, self.module.config.pad_token_id if padding_idx is None else padding_idx
            )
        return absolute_position_ids(input_ids)

    def mask_dtype(self) -> torch.dtype:
        return compute_dtype(self.module.get_input_embeddings().weight)

    def segment_term(self, segment_types: torch.Tensor) -> torch.Tensor:
        return self.module.embeddings.segment_type_embeddings(segment_types)[:, None, :]  # (n, 1, E) over T

    def embed(self, input_ids, position_ids, attention_mask, segment_types) -> torch.Tensor:
        raise NotImplementedError

    def layer_args(self, hidden, attention_mask, position_ids, columns) -> list[tuple]:
        """Per layer, the arguments that follow ``hidden`` (positionally); default: an additive 4-D mask."""
        mask4d = additive_mask(attention_mask, self.mask_dtype())[:, None, None, :]  # (n, 1, 1, T)
        return [(mask4d,)] * len(self.layers)

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def head_layer(self) -> nn.Module:
        """A fresh layer of the family for SeDR_Transformer_Head."""
        return type(self.layers[0])(self.module.config)

    def head_args(self, slots: torch.Tensor) -> tuple:
        """Arguments of the head layer over ``(n, M, H)`` slots with an all-ones mask."""
        return (None,)


class SumEmbeddings(Backbone):
    """``LayerNorm(E_word + E_type[0] + E_pos + E_seg) → dropout`` (token types where the family has them),
    the stock sub-modules in the stock summation order;
    ``project`` maps the embedding width to the layers'."""

    def embed(self, input_ids, position_ids, attention_mask, segment_types):
        emb = self.module.embeddings
        x = emb.word_embeddings(input_ids)  # (n, T, E)
        types = getattr(emb, "token_type_embeddings", None)
        if types is not None:
            x = x + types(torch.zeros_like(input_ids))
        x = x + emb.position_embeddings(position_ids)
        if segment_types is not None:
            x = x + self.segment_term(segment_types)
        return self.project(emb.dropout(emb.LayerNorm(x)))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register
class Roberta(SumEmbeddings):
    model_types = ("roberta", "xlm-roberta", "camembert")
    position_rule = ROBERTA_POSITIONS
    with_pooler = True
    no_global_attention = ""

    @classmethod
    def position_table(cls, config):
        return int(config.pad_token_id) + 1, int(config.max_position_embeddings)


@register
class Bert(SumEmbeddings):
    model_types = ("bert",)
    with_pooler = True
    no_global_attention = ""


@register
class Electra(SumEmbeddings):
    """BERT layers behind ``embeddings_project`` when the embedding width differs from the hidden size."""

    model_types = ("electra",)
    no_global_attention = ""

    def project(self, x):
        proj = getattr(self.module, "embeddings_project", None)
        return x if proj is None else proj(x)


@register
class Albert(SumEmbeddings):
    """One shared layer group applied ``num_hidden_layers`` times:
    the layer list repeats the stock modules."""

    model_types = ("albert",)
    with_pooler = True

    @property
    def layers(self):
        c, groups = self.module.config, self.module.encoder.albert_layer_groups
        return [
            groups[int(i / (c.num_hidden_layers / c.num_hidden_groups))] for i in range(c.num_hidden_layers)
        ]

    def project(self, x):
        return self.module.encoder.embedding_hidden_mapping_in(x)


@register
class DistilBert(SumEmbeddings):
    model_types = ("distilbert",)

    @property
    def layers(self):
        return list(self.module.transformer.layer)


@register
class MPNet(SumEmbeddings):
    """RoBERTa positions (its table's padding row is 1 whatever the tokenizer says), plus a relative-position
    bias on column distance, computed once per pass by the stock bucket function and table."""

    model_types = ("mpnet",)
    position_rule = ROBERTA_POSITIONS
    with_pooler = True

    @classmethod
    def position_table(cls, config):
        return 2, int(config.max_position_embeddings)

    def position_ids(self, input_ids, padding_idx):
        return roberta_position_ids(input_ids, self.module.embeddings.padding_idx)

    def layer_args(self, hidden, attention_mask, position_ids, columns):
        enc = self.module.encoder
        cols = columns[0]
        bucket = enc.relative_position_bucket(cols[None, :] - cols[:, None])  # memory - context, (T, T)
        dtype = self.mask_dtype()
        bias = enc.relative_attention_bias(bucket).permute(2, 0, 1)[None].to(dtype)  # (1, heads, T, T)
        mask4d = additive_mask(attention_mask, dtype)[:, None, None, :]
        return [(mask4d, bias)] * len(self.layers)


@register
class DebertaV2(Backbone):
    """Disentangled attention: its own 0/1 query-and-key mask, relative positions on column distance
    (log-bucketed by the stock function) and the stock relative embeddings, passed to every layer."""

    model_types = ("deberta-v2",)

    @classmethod
    def refusal(cls, config):
        if getattr(config, "conv_kernel_size", 0) > 0:
            return (
                "its convolution after the first layer mixes neighbouring columns, so a segment's tokens "
                "would mix with the placeholder slots and with the padding a row group drops "
                f"(conv_kernel_size {config.conv_kernel_size}; DeBERTa-v3 configs have none)"
            )
        return None

    @classmethod
    def position_table(cls, config):
        return (
            (0, int(config.max_position_embeddings))
            if getattr(config, "position_biased_input", True)
            else None
        )

    def embed(self, input_ids, position_ids, attention_mask, segment_types):
        emb = self.module.embeddings
        x = emb.word_embeddings(input_ids)  # (n, T, E)
        if emb.position_biased_input:
            x = x + emb.position_embeddings(position_ids)
        if emb.token_type_embeddings is not None:
            x = x + emb.token_type_embeddings(torch.zeros_like(input_ids))
        if segment_types is not None:
            x = x + self.segment_term(segment_types)
        if emb.embed_proj is not None:
            x = emb.embed_proj(x)
        x = emb.LayerNorm(x) * attention_mask[:, :, None].to(x.dtype)  # the stock model zeroes masked tokens
        return emb.dropout(x)

    def layer_args(self, hidden, attention_mask, position_ids, columns):
        from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

        enc = self.module.encoder
        relative = None
        if enc.relative_attention:
            cols = columns[0]
            relative = cols[:, None] - cols[None, :]  # query - key, (T, T)
            if enc.position_buckets > 0 and enc.max_relative_positions > 0:
                relative = make_log_bucket_position(
                    relative, enc.position_buckets, enc.max_relative_positions
                )
            relative = relative.long()[None]  # (1, T, T)
        mask = enc.get_attention_mask(attention_mask)  # (n, 1, T, T): query and key both real
        return [(mask, None, relative, enc.get_rel_embedding())] * len(self.layers)

    def head_args(self, slots):
        n, M, _ = slots.shape
        ones = slots.new_ones(n, M, dtype=torch.long)
        return self.layer_args(slots, ones, None, torch.arange(M, device=slots.device)[None])[0]


@register
class ModernBert(Backbone):
    """Rotary positions per layer type,
    full and sliding-window layers each with its own mask, ``final_norm``."""

    model_types = ("modernbert",)

    @classmethod
    def position_table(cls, config):
        return None  # rotary: no table to overflow

    @property
    def layers(self):
        return list(self.module.layers)

    def embed(self, input_ids, position_ids, attention_mask, segment_types):
        emb = self.module.embeddings
        x = emb.tok_embeddings(input_ids)  # (n, T, H)
        if segment_types is not None:
            x = x + self.segment_term(segment_types)
        return emb.drop(emb.norm(x))

    def layer_args(self, hidden, attention_mask, position_ids, columns):
        add = additive_mask(attention_mask, self.mask_dtype())[:, None, None, :]  # (n, 1, 1, T)
        # |i - j| <= sliding_window on position ids, the stock window, whatever columns a row group dropped.
        far = (position_ids[:, :, None] - position_ids[:, None, :]).abs() > self.module.config.sliding_window
        masks = {
            "full_attention": add,
            "sliding_attention": add + far[:, None].to(add.dtype) * ATTENTION_MASK_VALUE,
        }
        kinds = [layer.attention_type for layer in self.layers]
        rope = {k: self.module.rotary_emb(hidden, position_ids, k) for k in set(kinds)}
        return [(masks[k], rope[k]) for k in kinds]

    def finish(self, hidden):
        return self.module.final_norm(hidden)

    def head_layer(self):
        return type(self.layers[0])(self.module.config, 0)

    def head_args(self, slots):
        n, M, _ = slots.shape
        pos = torch.arange(M, device=slots.device).expand(n, M)
        return self.layer_args(slots, slots.new_ones(n, M), pos, pos[:1])[0]
