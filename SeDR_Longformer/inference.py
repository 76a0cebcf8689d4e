"""Encode, search and evaluate SeDR-Longformer: ``python SeDR_Longformer/inference.py --max_doc_length 2048 ...``.

SPEC §7.5. Output folder ``./data/evaluate/{basename(model_path)}-inf{max_doc_length}-{max_seg_num}``.
Every document is one ``max_doc_length`` row and yields ``max_seg_num`` index rows (zero vectors for
CLS positions outside the document), its offset repeated in ``passages-id.memmap`` (the FIX of
SPEC §7.5 / §10 #25). Encoding, search, metrics and run files are :mod:`SeDR.inference`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path

from SeDR.args import build_longformer_inference_parser
from SeDR.errors import exit_on_input_error

logger = logging.getLogger(__name__)


@exit_on_input_error
def main(argv=None):
    args = build_longformer_inference_parser().parse_args(argv)
    if args.fp16 and args.bf16:
        raise SystemExit("--fp16 and --bf16 are exclusive")
    from SeDR import data
    from SeDR.data import SegmentSpec
    from SeDR.inference import default_output_dir, encode_documents, search_and_evaluate
    from SeDR.runtime import resolve_device, resolve_precision, setup_logging
    from SeDR_Longformer.model import load_longformer

    setup_logging()
    device = resolve_device(args.no_cuda)
    precision = resolve_precision(device, fp16=args.fp16, bf16=args.bf16, training=False)
    model = load_longformer(args.model_path, max_seg_num=args.max_seg_num)
    if args.max_doc_length > model.max_doc_length:
        raise SystemExit(f"--max_doc_length {args.max_doc_length} exceeds the position table of "
                         f"{args.model_path} ({model.max_doc_length} tokens)")
    model.to(device).eval()
    spec = SegmentSpec(args.max_doc_length, 1)
    out_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args.model_path, args.max_doc_length,
                                                                                args.max_seg_num)
    preprocess_dir = Path(args.preprocess_dir)
    passages = data.passages(preprocess_dir)
    info = {"model_path": str(Path(args.model_path).resolve()), "model_class": model.model_class_name,
            "max_doc_length": args.max_doc_length, "max_seg_num": args.max_seg_num, "num_docs": len(passages)}
    logger.info("model %s (%s), %d documents, rows of %d tokens, %d vectors each -> %s", args.model_path,
                model.model_class_name, len(passages), spec.row_len, args.max_seg_num, out_dir)
    encode_documents(model, passages, spec, args, device, precision, out_dir, info)
    return search_and_evaluate(model, out_dir, preprocess_dir, args, device, precision)


if __name__ == "__main__":
    main()
