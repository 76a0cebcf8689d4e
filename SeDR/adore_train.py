"""ADORE query-encoder fine-tuning on a frozen SeDR index.

``python SeDR/adore_train.py --metric_cut 200 --init_path ./data/models/epoch-4-512-4-17-SeDR
--pembed_dir ./data/evaluate/epoch-4-512-4-17-SeDR-inf512-4 --model_save_dir ./data/adoremodels
--log_dir ./data/log --preprocess_dir ./data/preprocess --model_gpu_index 0 --faiss_gpu_index 0
--learning_rate 3e-6``
"""

from SeDR.cli.adore import run_adore
from SeDR.core.errors import exit_on_input_error


@exit_on_input_error
def main(argv=None):
    return run_adore(argv)


if __name__ == "__main__":
    main()
