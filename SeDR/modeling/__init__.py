"""SeDR models on stock Hugging Face encoders (docs/models.md).

Layer 2: imports :mod:`SeDR.core` and :mod:`SeDR.data`.

Public API::

    build_model(model_class, init_path, *, max_seg_num, cache_size=50, gradient_checkpointing=False, ...)
    load_model(path, model_class=None, max_seg_num=None)      # the checkpoint's own class by default
    load_weights_into(model, folder_or_state_dict) -> LoadReport
    model(batch: TrainBatch, cache=model.new_cache()) -> TrainOutput(loss, accuracy, num_rows)
    model.encode_queries(QueryBatch) -> (B, d); model.encode_segments(SegmentBatch) -> (rows, d)
    model.rows_per_document(seg_counts); model.special_ids; model.extra_content_reserve
    save_pretrained(model, folder)

The registry :data:`MODEL_REGISTRY` is keyed by the README names (``SeDR``, ``SeDR_MaxP``, ...).
"""

from SeDR.modeling.checkpoint import LoadReport, build_model, load_model, load_weights_into, save_pretrained
from SeDR.modeling.models import (
    MODEL_REGISTRY,
    DenseRetriever,
    ModelConfigError,
    SeDR,
    SeDRGlobalAttention,
    SeDRMaxP,
    SeDRTransformerHead,
    SeDRWithoutLateCache,
    StarMaxP,
    StarMulti,
    TrainOutput,
    UnknownModelClassError,
    get_model_class,
    register,
)
from SeDR.modeling.scoring import (
    MASKED_SCORE,
    LateCache,
    cross_entropy_labels,
    cross_entropy_loss,
    cross_entropy_scores,
    max_segment_scores,
    star_pairwise_loss,
)

__all__ = [
    "MODEL_REGISTRY",
    "MASKED_SCORE",
    "DenseRetriever",
    "ModelConfigError",
    "LateCache",
    "LoadReport",
    "SeDR",
    "SeDRGlobalAttention",
    "SeDRMaxP",
    "SeDRTransformerHead",
    "SeDRWithoutLateCache",
    "StarMaxP",
    "StarMulti",
    "TrainOutput",
    "UnknownModelClassError",
    "build_model",
    "cross_entropy_labels",
    "cross_entropy_loss",
    "cross_entropy_scores",
    "get_model_class",
    "load_model",
    "load_weights_into",
    "max_segment_scores",
    "register",
    "save_pretrained",
    "star_pairwise_loss",
]
