"""The paper's model classes on a stock Hugging Face encoder, and the registry keyed by README names.

:class:`DenseRetriever` is STAR's ``RobertaDot`` (docs/models.md#dense-head): a stock encoder under
the family's ``base_model_prefix`` (``roberta`` for STAR), CLS pooling, a linear ``embeddingHead``
and a LayerNorm ``norm`` shared by queries and documents. Subclasses change one hook: the document
encoder, the loss, whether a cache is used (docs/models.md#model-registry). All model-defining values
live on ``self.config``, so a saved checkpoint records them; nothing is module-level state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from SeDR.core.errors import SeDRInputError
from SeDR.data.batches import QueryBatch, SegmentBatch, TrainBatch
from SeDR.modeling import backbones
from SeDR.modeling import encoder as enc
from SeDR.modeling.cross_device import gather_rows
from SeDR.modeling.scoring import (
    LateCache,
    cross_entropy_labels,
    cross_entropy_loss,
    cross_entropy_scores,
    star_pairwise_loss,
)

logger = logging.getLogger(__name__)

# Default number of view tokens of STAR_Multi (the original's K = 4).
DEFAULT_MULTI_VIEW_K = 4
# Default Late-Cache capacity (README --cache_size 50).
DEFAULT_CACHE_SIZE = 50

MODEL_REGISTRY: dict[str, type[DenseRetriever]] = {}


class ModelConfigError(SeDRInputError, ValueError):
    """A model-defining value that cannot work (scripts print it and exit 2; a ``ValueError`` elsewhere)."""


class UnknownModelClassError(ModelConfigError):
    """A ``--model_class`` that is not registered."""


def register(name: str):
    """Class decorator: register a model class under its README name (duplicates are an error)."""

    def deco(cls):
        if name in MODEL_REGISTRY:
            raise ValueError(f"model class {name!r} registered twice")
        cls.model_class_name = name
        MODEL_REGISTRY[name] = cls
        return cls

    return deco


def get_model_class(name: str) -> type[DenseRetriever]:
    """The class registered as ``name``; unknown names raise with the sorted list of valid ones."""
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        raise UnknownModelClassError(
            f"unknown model class {name!r}; valid: {', '.join(sorted(MODEL_REGISTRY))}"
        ) from None


@dataclass
class TrainOutput:
    """Result of a training forward: fp32 ``loss`` (with graph) and detached ``accuracy``."""

    loss: torch.Tensor
    accuracy: torch.Tensor
    num_rows: int  # rows of the loss (B + cache fill for cached classes)


def backbone_prefix(config) -> str:
    """Attribute / checkpoint prefix of the encoder: the family's ``base_model_prefix``
    (``roberta``, ``bert``, ...)."""
    return backbones.adapter_class(config.model_type).prefix(config)


def _build_backbone(config) -> nn.Module:
    return backbones.adapter_class(config.model_type).build(config)


def init_fresh(module: nn.Module, std: float, zero_bias: bool = True) -> None:
    """HF-style init of a freshly created sub-module: Linear/Embedding weights ``N(0, std²)``, LayerNorm 1/0.

    ``zero_bias=False`` is the original's ``_init_weights`` (the Transformer head): Linear biases keep
    what ``nn.Linear`` drew at construction, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if zero_bias and getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            for p, fill in ((m.weight, nn.init.ones_), (m.bias, nn.init.zeros_)):
                if p is not None:  # ModernBERT's norms have no bias
                    fill(p)


class DenseRetriever(nn.Module):
    """Template dual encoder (STAR's ``RobertaDot``).

    Config fields read (besides the backbone's): ``max_seg_num`` (rows of the segment-type table
    and width ``M`` of a document matrix), ``cache_size``, ``multi_view_k``,
    ``output_embedding_size`` (optional, default hidden size) and ``sedr_special_ids``.
    """

    model_class_name: ClassVar[str] = ""
    variant: ClassVar[str] = enc.PLAIN  # document encoder
    uses_segment_types: ClassVar[bool] = False  # E_seg read in the document encoder
    uses_cache: ClassVar[bool] = False  # Late-Cache Negative (docs/training.md#late-cache)
    loss_kind: ClassVar[str] = "pairwise"  # "pairwise" (STAR) or "ce" (in-batch + hard negatives)
    # Parameter-name parts that a checkpoint may lack by design (initialised fresh, logged at INFO).
    fresh_parameters: ClassVar[tuple[str, ...]] = ("embeddings.segment_type_embeddings.",)

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.backbone_prefix = backbone_prefix(config)
        self.add_module(self.backbone_prefix, _build_backbone(config))
        # Every class carries E_seg, as the original's RoBERTa did (checkpoint compatibility).
        enc.add_segment_type_embeddings(
            self.backbone, int(config.max_seg_num), float(getattr(config, "initializer_range", 0.02))
        )
        self._add_head(config)

    def _add_head(self, config) -> None:
        """``embeddingHead`` (hidden -> d) and ``norm``, freshly initialised; a checkpoint replaces them."""
        hidden = config.hidden_size
        dim = int(getattr(config, "output_embedding_size", None) or hidden)
        std = float(getattr(config, "initializer_range", 0.02))
        self.embeddingHead = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        init_fresh(self.embeddingHead, std)
        init_fresh(self.norm, std)
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ properties used by the scripts
    @property
    def backbone(self) -> nn.Module:
        return self._modules[self.backbone_prefix]

    @property
    def adapter(self) -> backbones.Backbone:
        return backbones.backbone_adapter(self.backbone)

    @property
    def embedding_dim(self) -> int:
        return self.norm.normalized_shape[0]

    @property
    def max_seg_num(self) -> int:
        return int(self.config.max_seg_num)

    @property
    def special_ids(self) -> dict:
        """``cls_id``/``eos_id``/``pad_id`` the model reads rows with: those recorded on its config
        (from its tokenizer)."""
        ids = getattr(self.config, "sedr_special_ids", None) or backbones.roberta_config_ids(
            self.config.to_dict()
        )
        if not ids:
            raise ModelConfigError(
                f"the {self.config.model_type} config records no sedr_special_ids; build the "
                "model with SeDR.modeling.build_model from a folder holding its tokenizer"
            )
        return dict(ids)

    @property
    def extra_content_reserve(self) -> int:
        """Extra tokens to take off the segment content budget (``SegmentSpec(extra_reserve=...)``)."""
        return 0

    @property
    def added_vocab_rows(self) -> int:
        """Word-embedding rows this class adds to its source checkpoint's vocabulary (grown when loading)."""
        return 0

    @classmethod
    def adjust_config(cls, config, source_class: str | None) -> None:
        """Change the backbone config built from a checkpoint written by
        ``source_class`` (default: nothing)."""

    def rows_per_document(self, seg_counts: torch.Tensor) -> torch.Tensor:
        """Index rows each document contributes at inference: its segment count ``s_b``."""
        return torch.as_tensor(seg_counts)

    def new_cache(self) -> LateCache | None:
        """A fresh Late-Cache for the training loop to own, or ``None`` for classes without one."""
        return LateCache(int(self.config.cache_size)) if self.uses_cache else None

    def gradient_checkpointing_enable(self) -> None:
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ encoders
    def _encode(
        self, input_ids, attention_mask, *, segment_types=None, fuse_mat=None, variant=None, row_groups=None
    ):
        return enc.encode(
            self.backbone,
            input_ids,
            attention_mask,
            padding_idx=self.special_ids["pad_id"],
            segment_types=segment_types,
            fuse_mat=fuse_mat,
            variant=variant or self.variant,
            gradient_checkpointing=self.gradient_checkpointing and self.training,
            row_groups=row_groups,
        )

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """``LayerNorm(W·h + b)``."""
        return self.norm(self.embeddingHead(h))

    def encode_queries(self, queries: QueryBatch) -> torch.Tensor:
        """Query vectors ``(B, d)``: no fuse matrix, no segment types
        (the global variant keeps its CLS path)."""
        hidden = self._encode(queries.input_ids, queries.attention_mask)  # (B, Lq, H)
        return self.head(hidden[:, 0])

    def _check_batch(self, batch: SegmentBatch) -> None:
        if batch.max_seg_num != self.max_seg_num:
            raise ValueError(
                f"{self.model_class_name} was built with max_seg_num={self.max_seg_num}, "
                f"the batch has max_seg_num={batch.max_seg_num}"
            )

    def segment_cls(self, batch: SegmentBatch) -> torch.Tensor:
        """Last-layer CLS state of every segment row, ``(n_seg, H)``, with this class's document encoder.

        The batch's row groups (if any) are passed on: PLAIN and AFTER_LAYER encoders run each
        group at its own width, the GLOBAL one ignores them (:func:`SeDR.modeling.encoder.encode`).
        """
        self._check_batch(batch)
        interacting = self.variant != enc.PLAIN
        hidden = self._encode(
            batch.input_ids,
            batch.attention_mask,
            segment_types=batch.segment_types() if self.uses_segment_types else None,
            fuse_mat=batch.fuse_mat if interacting else None,
            row_groups=batch.row_groups,
        )
        return hidden[:, 0]

    def encode_segments(self, batch: SegmentBatch) -> torch.Tensor:
        """Inference: one vector per real segment, in batch order, ``(Σ s_b, d)``."""
        return self.head(self.segment_cls(batch))

    def encode_documents(self, batch: SegmentBatch) -> torch.Tensor:
        """Training: per-document matrices ``(n_docs, M, d)``; empty slots exactly 0
        (docs/models.md#empty-slots)."""
        seg = self.encode_segments(batch)  # (n_seg, d)
        return scatter_segments(seg, batch)

    # ------------------------------------------------------------------ training forward
    def forward(
        self, batch: TrainBatch, cache: LateCache | None = None, negatives_x_device: bool = False
    ) -> TrainOutput:
        """Loss of one micro-batch (docs/training.md#ce-loss, #star-pairwise-loss).

        ``negatives_x_device``: score against the positives and hard negatives of every rank
        (:mod:`SeDR.modeling.cross_device`); the batch's masks must then already span them
        (:func:`~SeDR.modeling.cross_device.globalize_batch`). The Late-Cache keeps this rank's rows.
        """
        if cache is not None and not self.uses_cache:
            raise ValueError(f"{self.model_class_name} does not use a Late-Cache; pass cache=None")
        q = self.encode_queries(batch.queries)  # (B, d)
        pos = self.encode_documents(batch.positives)  # (B, M, d)
        neg = self.encode_documents(batch.negatives)  # (B·h, M, d)
        B = q.shape[0]
        pos_cols, neg_cols, offset = pos, neg, 0
        if negatives_x_device:
            pos_cols, offset = gather_rows(pos)  # (N, M, d): every rank's positives, rank order
            neg_cols, _ = gather_rows(neg)  # (N', M, d)
        if self.loss_kind == "pairwise":
            loss, acc = star_pairwise_loss(
                q, pos_cols, neg_cols, batch.rel_pair_mask, batch.hard_pair_mask, positive_offset=offset
            )
            return TrainOutput(loss, acc, B)
        cq, cp, cn = cache.contents(q.device) if cache is not None else (None, None, None)
        scores = cross_entropy_scores(
            q,
            pos_cols,
            neg_cols,
            batch.rel_pair_mask,
            batch.hard_pair_mask,
            cq,
            cp,
            cn,
            positive_offset=offset,
        )
        labels = cross_entropy_labels(B, scores.shape[0] - B, pos_cols.shape[0], offset, device=scores.device)
        loss, acc = cross_entropy_loss(scores, B, labels)
        if cache is not None:
            cache.push(q, pos, neg)  # after the loss: the current batch is not its own cache
        return TrainOutput(loss, acc, scores.shape[0])


def scatter_segments(seg: torch.Tensor, batch: SegmentBatch, width: int | None = None) -> torch.Tensor:
    """``R[b, k] = seg[seg_sep[b] + k]`` for ``k < s_b``, zeros elsewhere, out of place."""
    width = batch.max_seg_num if width is None else width
    doc = torch.repeat_interleave(
        torch.arange(batch.num_docs, device=seg.device),
        batch.seg_counts.to(seg.device),
        output_size=batch.num_segments,  # known on the host: no sync on a GPU
    )
    slot = batch.segment_types().to(seg.device)
    out = seg.new_zeros(batch.num_docs, width, seg.shape[-1])  # (n_docs, M, d)
    return out.index_put((doc, slot), seg)


# ---------------------------------------------------------------------------------------------- classes


@register("STAR_MaxP")
class StarMaxP(DenseRetriever):
    """STAR on the segment rows, STAR's pairwise loss, no cache (docs/models.md#star-maxp);
    ``M = 1`` is STAR FirstP."""


@register("SeDR_without_LateCache")
class SeDRWithoutLateCache(DenseRetriever):
    """Segment-Interaction Transformer, CE over in-batch + hard negatives, no cache
    (docs/models.md#sedr-without-latecache)."""

    variant = enc.AFTER_LAYER
    uses_segment_types = True
    loss_kind = "ce"


@register("SeDR")
class SeDR(SeDRWithoutLateCache):
    """The main model: Segment-Interaction Transformer + Late-Cache Negative (docs/models.md#sedr)."""

    uses_cache = True


@register("SeDR_MaxP")
class SeDRMaxP(SeDR):
    """No interaction, Late-Cache (docs/models.md#sedr-maxp). Placeholders stay attended; E_seg is never read.

    Inference encodes exactly as training (no fuse matrix, no segment types:
    docs/deviations.md#dev-sedr-maxp-inference).
    """

    variant = enc.PLAIN
    uses_segment_types = False


@register("SeDR_Transformer_Head")
class SeDRTransformerHead(SeDRMaxP):
    """Independent segments, then one fresh encoder layer over the ``M`` raw CLS slots
    (docs/models.md#sedr-transformer-head)."""

    fresh_parameters = (*SeDRMaxP.fresh_parameters, "trans_head.")

    def __init__(self, config):
        super().__init__(config)
        self.trans_head = self.adapter.head_layer()  # a fresh layer of the backbone's family
        init_fresh(self.trans_head, float(getattr(config, "initializer_range", 0.02)), zero_bias=False)

    def _slots(self, batch: SegmentBatch) -> torch.Tensor:
        X = scatter_segments(self.segment_cls(batch), batch)  # (n_docs, M, H), zero slots
        # All-ones mask: real segments also attend to the zero slots of short documents.
        return self.head(enc.run_layer(self.trans_head, X, *self.adapter.head_args(X)))  # (n_docs, M, d)

    def encode_documents(self, batch: SegmentBatch) -> torch.Tensor:
        return self._slots(batch)  # empty slots = head(layer(0...)) != 0

    def encode_segments(self, batch: SegmentBatch) -> torch.Tensor:
        R = self._slots(batch)
        doc = torch.repeat_interleave(
            torch.arange(batch.num_docs, device=R.device),
            batch.seg_counts.to(R.device),
            output_size=batch.num_segments,
        )
        return R[doc, batch.segment_types().to(R.device)]  # (Σ s_b, d): real segments only


@register("SeDR_Global_Attention")
class SeDRGlobalAttention(SeDR):
    """Global-Attention encoder (broadcast before each layer + global CLS attention), Late-Cache loss
    (docs/models.md#sedr-global-attention).

    Queries go through the same encoder: their CLS uses the global projections over their own row.
    """

    variant = enc.GLOBAL

    def __init__(self, config):
        reason = backbones.adapter_class(config.model_type).no_global_attention
        if reason:
            raise ModelConfigError(
                f"SeDR_Global_Attention cannot run on a {config.model_type} backbone: {reason}; "
                "it runs on the RoBERTa, BERT and ELECTRA layouts"
            )
        super().__init__(config)
        enc.add_global_projections(self.backbone)


@register("STAR_Multi")
class StarMulti(StarMaxP):
    """K view tokens replace the leading CLS of a FirstP row; K vectors per document
    (docs/models.md#star-multi).

    The word-embedding table already has ``vocab_size`` rows including the K view rows (the last K):
    the checkpoint loader grows it before any optimizer exists (docs/deviations.md#dev-star-multi-vocab). The
    content budget is ``Lraw - 2 - (K - 1)`` so the row stays within the position table
    (docs/deviations.md#dev-star-multi-budget).
    """

    @property
    def K(self) -> int:
        return int(self.config.multi_view_k)

    @property
    def added_vocab_rows(self) -> int:
        return self.K

    @classmethod
    def adjust_config(cls, config, source_class: str | None) -> None:
        if source_class != cls.model_class_name:  # grow the vocabulary before any optimizer exists
            config.vocab_size = int(config.vocab_size) + int(config.multi_view_k)

    @property
    def extra_content_reserve(self) -> int:
        return self.K - 1

    @property
    def view_token_ids(self) -> torch.Tensor:
        V = int(self.config.vocab_size)
        return torch.arange(V - self.K, V)

    def rows_per_document(self, seg_counts: torch.Tensor) -> torch.Tensor:
        return torch.full_like(torch.as_tensor(seg_counts), self.K)

    def _check_batch(self, batch: SegmentBatch) -> None:
        if batch.max_seg_num != 1 or bool((batch.seg_counts != 1).any()):
            raise ValueError(
                "STAR_Multi reads one FirstP row per document: build its batches with max_seg_num=1"
            )

    def encode_documents(self, batch: SegmentBatch) -> torch.Tensor:
        self._check_batch(batch)
        ids, mask = batch.input_ids, batch.attention_mask
        n = ids.shape[0]
        views = self.view_token_ids.to(ids.device).expand(n, self.K)  # (n, K)
        ids = torch.cat([views, ids[:, 1:]], dim=1)  # (n, K + T - 1): CLS dropped, views prepended
        mask = torch.cat([mask.new_ones(n, self.K), mask[:, 1:]], dim=1)
        hidden = self._encode(ids, mask, variant=enc.PLAIN)  # (n, K + T - 1, H)
        return self.head(hidden[:, : self.K])  # (n, K, d): no zero slots

    def encode_segments(self, batch: SegmentBatch) -> torch.Tensor:
        R = self.encode_documents(batch)
        return R.reshape(-1, R.shape[-1])  # (n_docs·K, d)
