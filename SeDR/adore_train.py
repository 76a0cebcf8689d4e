"""ADORE query-encoder fine-tuning on a frozen SeDR index (SPEC §8).

``python SeDR/adore_train.py --metric_cut 200 --init_path ./data/models/epoch-4-512-4-17-SeDR
--pembed_dir ./data/evaluate/epoch-4-512-4-17-SeDR-inf512-4 --model_save_dir ./data/adoremodels
--log_dir ./data/log --preprocess_dir ./data/preprocess --model_gpu_index 0 --faiss_gpu_index 0
--learning_rate 3e-6``
"""

from __future__ import annotations

from SeDR.args import build_adore_parser
from SeDR.errors import exit_on_input_error
from SeDR.tokenizer_record import check_tokenizer_record


@exit_on_input_error
def main(argv=None):
    args = build_adore_parser().parse_args(argv)
    from SeDR.adore import AdoreRun
    from SeDR.modeling import load_model
    from SeDR.runtime import resolve_device, resolve_precision, seed_everything, setup_logging

    setup_logging()
    seed_everything(args.seed)
    device = resolve_device(args.no_cuda, args.model_gpu_index)
    precision = resolve_precision(device, training=True)
    model = load_model(args.init_path)  # the checkpoint's own class (SPEC §10 #36)
    check_tokenizer_record(args.preprocess_dir, model, args.init_path)
    model.to(device)
    return AdoreRun(args, model, device, precision).run()


if __name__ == "__main__":
    main()
