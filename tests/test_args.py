"""Every README command parses with the real parsers (argparse prefix matching included)."""

import re
import shlex
from pathlib import Path

import pytest

from SeDR import args as sedr_args

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(script: str) -> list[list[str]]:
    """Argument lists of the README's ``python <script> ...`` lines inside bash code blocks."""
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    cmds = []
    for block in blocks:
        for line in block.splitlines():
            words = shlex.split(line)
            if len(words) >= 2 and words[0] == "python" and words[1] == script:
                cmds.append(words[2:])
    return cmds


def test_readme_lists_every_original_command():
    assert len(readme_commands("SeDR/train.py")) == 6
    assert len(readme_commands("SeDR/inference.py")) == 7
    assert len(readme_commands("SeDR/adore_train.py")) == 1


@pytest.mark.parametrize("argv", readme_commands("SeDR/train.py"))
def test_train_commands_parse(argv):
    ns = sedr_args.build_train_parser().parse_args(argv)
    sedr_args.validate_train_args(ns)
    if "--learning" in argv:
        assert ns.learning_rate == 5e-5          # prefix of --learning_rate
    else:
        assert ns.learning_rate == 1e-4          # STAR_* commands take the default
    assert ns.optimizer_str == "lamb" and ns.num_train_epochs == 25 and ns.warmup_steps == 1000
    assert ns.max_bsize == 17 and ns.max_query_length == 32 and ns.use_gradient_checkpointing


@pytest.mark.parametrize("argv", readme_commands("SeDR/inference.py"))
def test_inference_commands_parse(argv):
    ns = sedr_args.build_inference_parser().parse_args(argv)
    sedr_args.validate_inference_args(ns)
    assert ns.faiss_gpus == [0] and ns.max_bsize == 100 and ns.eval_batch_size == 32


def test_adore_command_parses():
    (argv,) = readme_commands("SeDR/adore_train.py")
    ns = sedr_args.build_adore_parser().parse_args(argv)
    assert ns.learning_rate == 3e-6 and ns.max_seq_length == 64 and ns.faiss_gpu_index == [0]


def test_ambiguous_prefix_is_rejected(capsys):
    with pytest.raises(SystemExit):
        sedr_args.build_train_parser().parse_args(["--max_seg", "4"])
    assert "ambiguous option: --max_seg could match --max_seg_length, --max_seg_num" in capsys.readouterr().err
