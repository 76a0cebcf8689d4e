"""Convert the STAR checkpoint into a SeDR-Longformer initialisation (SPEC §3.4, §10 #26, Appendix A).

    python SeDR_Longformer/Star2Star_Longformer.py          # ./data/star -> ./data/starlongformer

* position table: ``max_doc_length + 2`` rows (2050); STAR's learned rows ``2..513`` are tiled into
  rows ``2..513, 514..1025, 1026..1537, 1538..2049``; rows 0 and 1 (1 = padding) are STAR's
  (the original left them uninitialised: FIX §10 #26);
* every layer keeps STAR's ``query/key/value``; ``query_global/key_global/value_global`` are copies;
* window 256 on each side for every layer (HF ``attention_window = 512``, both sides counted);
* STAR's ``embeddingHead`` and ``norm`` are copied; keys ``roberta.*``, ``embeddingHead.*``, ``norm.*``.

The result also initialises ``SeDR_Global_Attention`` (README), which keeps the global
projections and the first 514 position rows.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from SeDR.errors import SeDRInputError, exit_on_input_error

logger = logging.getLogger(__name__)

# Prefixes of STAR's keys we carry over; the pooler and buffers are not part of the model.
_KEPT_PREFIXES = ("roberta.embeddings.", "roberta.encoder.", "embeddingHead.", "norm.")


def build_parser() -> argparse.ArgumentParser:
    from SeDR_Longformer.model import DEFAULT_MAX_DOC_LENGTH, DEFAULT_MAX_SEG_NUM, HF_ATTENTION_WINDOW

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--star_path", default="./data/star", help="STAR checkpoint folder (DRhard release)")
    p.add_argument("--output_path", default="./data/starlongformer", help="where the conversion is written")
    p.add_argument("--max_doc_length", type=int, default=DEFAULT_MAX_DOC_LENGTH,
                   help="longest document row; the position table gets max_doc_length + 2 rows")
    p.add_argument("--attention_window", type=int, default=HF_ATTENTION_WINDOW,
                   help="HF window counting both sides (512 = the original's one-sided 256)")
    p.add_argument("--max_seg_num", type=int, default=DEFAULT_MAX_SEG_NUM,
                   help="global CLS positions recorded in the config (the training flag overrides it)")
    return p


def tile_positions(star_table: torch.Tensor, rows: int, offset: int = 2) -> torch.Tensor:
    """``rows``-row table: rows ``< offset`` copied, learned rows ``offset..`` repeated (SPEC §3.4)."""
    learned = star_table.shape[0] - offset  # 512 for STAR
    idx = torch.arange(rows)
    src = torch.where(idx < offset, idx, offset + (idx - offset) % learned)  # (rows,)
    return star_table[src].clone()


def convert_state_dict(star: dict[str, torch.Tensor], num_layers: int, rows: int) -> dict[str, torch.Tensor]:
    """STAR state dict → SeDR-Longformer state dict (``roberta.*`` names, global projections copied)."""
    sd = {}
    for k, v in star.items():
        if k.split(".", 1)[0] in ("embeddings", "encoder"):
            k = "roberta." + k
        if k.startswith(_KEPT_PREFIXES) and not k.endswith(("position_ids", "token_type_ids")):
            sd[k] = v
    missing = [k for k in ("embeddingHead.weight", "embeddingHead.bias", "norm.weight", "norm.bias") if k not in sd]
    if missing:
        raise SeDRInputError(f"the STAR checkpoint lacks {', '.join(missing)}: is it the DRhard STAR document model?")
    pos = "roberta.embeddings.position_embeddings.weight"
    sd[pos] = tile_positions(sd[pos], rows)
    for n in range(num_layers):
        base = f"roberta.encoder.layer.{n}.attention.self."
        for name in ("query", "key", "value"):
            for part in ("weight", "bias"):
                sd[f"{base}{name}_global.{part}"] = sd[f"{base}{name}.{part}"].clone()
    return sd


def convert(star_path, output_path, *, max_doc_length: int, attention_window: int, max_seg_num: int) -> Path:
    from transformers import LongformerConfig

    from SeDR.modeling.checkpoint import ROBERTA_POSITION_ROWS, read_config_dict, read_state_dict
    from SeDR_Longformer.model import ROBERTA_POSITION_OFFSET, SeDRLongformer

    cfg = read_config_dict(star_path)
    if cfg.get("model_type") != "roberta":
        raise SeDRInputError(f"{star_path}: expected a RoBERTa (STAR) checkpoint, found model_type "
                             f"{cfg.get('model_type')!r}")
    if int(cfg.get("max_position_embeddings", ROBERTA_POSITION_ROWS)) != ROBERTA_POSITION_ROWS:
        logger.warning("%s has %s position rows (STAR has %d)", star_path, cfg.get("max_position_embeddings"),
                       ROBERTA_POSITION_ROWS)
    rows = max_doc_length + ROBERTA_POSITION_OFFSET
    d = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "_name_or_path")}
    d.update(max_position_embeddings=rows, attention_window=[attention_window] * int(cfg["num_hidden_layers"]))
    config = LongformerConfig.from_dict(d)
    config.max_seg_num = int(max_seg_num)
    config.cache_size = 50
    config.sedr_special_ids = {"cls_id": int(cfg.get("bos_token_id", 0)), "eos_id": int(cfg.get("eos_token_id", 2)),
                               "pad_id": int(cfg.get("pad_token_id", 1))}
    model = SeDRLongformer(config)
    sd = convert_state_dict(read_state_dict(star_path), config.num_hidden_layers, rows)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SeDRInputError(f"{star_path}: conversion left missing {result.missing_keys} / unexpected "
                             f"{result.unexpected_keys} parameters")
    out = Path(output_path)
    model.save_pretrained(out)
    logger.info("wrote %s: %d position rows, window %d (one-sided %d), %d layers with global projections",
                out, rows, attention_window, attention_window // 2, config.num_hidden_layers)
    return out


@exit_on_input_error
def main(argv=None) -> Path:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    if args.attention_window % 2 or args.attention_window <= 0:
        raise SystemExit("--attention_window must be a positive even number (it counts both sides)")
    return convert(args.star_path, args.output_path, max_doc_length=args.max_doc_length,
                   attention_window=args.attention_window, max_seg_num=args.max_seg_num)


if __name__ == "__main__":
    main()
