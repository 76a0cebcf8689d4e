"""``python -m SeDR.export_original MODEL_DIR OUT_DIR``: one of our checkpoints in the original code's layout.

The original loads checkpoints with transformers 4.12 (3.0.2 for SeDR-Longformer), which cannot
read ``model.safetensors``. OUT_DIR gets ``pytorch_model.bin`` (the state dict under the names the
original uses, which are ours, in torch's legacy format that torch of that era reads) and a
``config.json`` with RoBERTa's fields and the original's own: ``max_seg_num``,
``output_embedding_size``, and for SeDR-Longformer allenai's keys with the one-sided window.
OUT_DIR must not exist or be empty. See docs/original-code.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from SeDR.core.errors import SeDRInputError, exit_on_input_error
from SeDR.core.outputs import atomic_save_dir
from SeDR.core.runtime import setup_logging
from SeDR.modeling import load_model
from SeDR.modeling.checkpoint import CONFIG_NAME, LEGACY_WEIGHTS_NAME, read_config_dict, recorded_class
from SeDR.modeling.longformer import MODEL_CLASS_NAME as LONGFORMER
from SeDR.modeling.longformer import load_longformer

logger = logging.getLogger(__name__)

# Model-defining RoBERTa config fields that transformers 4.12 and 3.0.2 both read.
ROBERTA_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)
# STAR_Multi's number of view tokens is a constant (4) of the original code.
ORIGINAL_MULTI_VIEW_K = 4


def load_ours(model_dir):
    """The checkpoint as its recorded class; a folder that records none is refused (no guessing)."""
    cfg = read_config_dict(model_dir)
    name = recorded_class(cfg) or (LONGFORMER if LONGFORMER in (cfg.get("architectures") or []) else None)
    if name is None:
        raise SeDRInputError(f"{Path(model_dir) / CONFIG_NAME}: records no model class (sedr_model_class)")
    return load_longformer(model_dir) if name == LONGFORMER else load_model(model_dir)


def original_config(model) -> dict:
    """``config.json`` for the original's loaders: RoBERTa fields, its class name and its own fields only."""
    c, name = model.config, model.model_class_name
    if c.model_type not in ("roberta", "longformer"):
        raise SeDRInputError(
            f"the original code runs RoBERTa only; this checkpoint's backbone is {c.model_type}"
        )
    ids = {"cls_id": c.bos_token_id, "eos_id": c.eos_token_id, "pad_id": c.pad_token_id}
    if model.special_ids != ids:
        raise SeDRInputError(
            f"special ids {model.special_ids} differ from the config's bos/eos/pad {ids}, "
            "which is all the original's config can say"
        )
    if name == "STAR_Multi" and model.K != ORIGINAL_MULTI_VIEW_K:
        raise SeDRInputError(
            f"STAR_Multi with {model.K} view tokens: the original runs {ORIGINAL_MULTI_VIEW_K} only"
        )
    out = {k: getattr(c, k) for k in ROBERTA_FIELDS}
    out.update(model_type="roberta", architectures=[name], max_seg_num=model.max_seg_num)
    if getattr(c, "output_embedding_size", None):
        out["output_embedding_size"] = int(c.output_embedding_size)
    if name == LONGFORMER:  # allenai's keys, window one-sided (3.0.2's RobertaConfig keeps unknown keys)
        layers = int(c.num_hidden_layers)
        win = c.attention_window if isinstance(c.attention_window, list) else [c.attention_window] * layers
        out.update(
            attention_window=[int(w) // 2 for w in win],
            attention_dilation=[1] * layers,
            attention_mode="sliding_chunks",
            autoregressive=False,
        )
    return out


def original_state_dict(model) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.model_class_name != LONGFORMER:  # 4.12's RoBERTa embeddings save this buffer
        sd["roberta.embeddings.position_ids"] = torch.arange(int(model.config.max_position_embeddings))[None]
    return sd


def export_original(model_dir, out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SeDRInputError(
            f"{out} exists and is not an empty folder; nothing was written (choose another OUT_DIR)"
        )
    model = load_ours(model_dir)
    cfg, sd = original_config(model), original_state_dict(model)

    def write(folder: Path) -> None:
        torch.save(sd, folder / LEGACY_WEIGHTS_NAME, _use_new_zipfile_serialization=False)
        (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))

    atomic_save_dir(out, write)
    logger.info(
        "wrote %s: %s, %d tensors, the original's layout (transformers %s)",
        out,
        model.model_class_name,
        len(sd),
        "3.0.2" if model.model_class_name == LONGFORMER else "4.12",
    )
    return out


@exit_on_input_error
def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description="Write one of our checkpoints in the original code's layout.")
    p.add_argument("model_dir", help="one of our checkpoints (config.json + model.safetensors)")
    p.add_argument("out_dir", help="new or empty folder for pytorch_model.bin + config.json")
    args = p.parse_args(argv)
    setup_logging()
    return export_original(args.model_dir, args.out_dir)
