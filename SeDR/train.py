"""Train a SeDR model class: ``python SeDR/train.py --model_class SeDR ...`` (README)."""

from SeDR.cli.train import run_training
from SeDR.core.errors import exit_on_input_error


@exit_on_input_error
def main(argv=None):
    return run_training(argv).saved


if __name__ == "__main__":
    main()
