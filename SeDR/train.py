"""Train a SeDR model class: ``python SeDR/train.py --model_class SeDR ...`` (README)."""

from SeDR.errors import exit_on_input_error
from SeDR.workflows import run_training


@exit_on_input_error
def main(argv=None):
    return run_training(argv).saved


if __name__ == "__main__":
    main()
