"""Training and evaluation as library calls: what ``SeDR/train.py`` and ``SeDR/inference.py`` run."""

# placeholder: replaced by the lead's module at merge

from SeDR import inference, train


def run_training(argv: list[str]):
    """Train as ``SeDR/train.py ARGV`` does; returns the Trainer (``.saved`` lists the checkpoints)."""
    return train.run(argv)


def run_inference(argv: list[str]):
    """Encode, search and evaluate as ``SeDR/inference.py ARGV`` does; returns the evaluation."""
    return inference.main.__wrapped__(argv)
