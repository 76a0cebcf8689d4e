"""Every README command parses with the real parsers (argparse prefix matching included)."""

import re
import shlex
from pathlib import Path

import pytest

from SeDR.cli import flags
from SeDR.core.errors import SeDRInputError

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
    ns = flags.build_train_parser().parse_args(argv)
    flags.validate_train_args(ns)
    if "--learning" in argv:
        assert ns.learning_rate == 5e-5  # prefix of --learning_rate
    else:
        assert ns.learning_rate == 1e-4  # STAR_* commands take the default
    assert ns.optimizer_str == "lamb" and ns.num_train_epochs == 25 and ns.warmup_steps == 1000
    assert ns.max_bsize == 17 and ns.max_query_length == 32 and ns.use_gradient_checkpointing


@pytest.mark.parametrize("argv", readme_commands("SeDR/inference.py"))
def test_inference_commands_parse(argv):
    ns = flags.build_inference_parser().parse_args(argv)
    flags.validate_inference_args(ns)
    assert ns.faiss_gpus == [0] and ns.max_bsize == 100 and ns.eval_batch_size == 32


def test_adore_command_parses():
    (argv,) = readme_commands("SeDR/adore_train.py")
    ns = flags.build_adore_parser().parse_args(argv)
    assert ns.learning_rate == 3e-6 and ns.max_seq_length == 64 and ns.faiss_gpu_index == [0]


def test_ambiguous_prefix_is_rejected(capsys):
    with pytest.raises(SystemExit):
        flags.build_train_parser().parse_args(["--max_seg", "4"])
    assert (
        "ambiguous option: --max_seg could match --max_seg_length, --max_seg_num" in capsys.readouterr().err
    )


TRAIN_OK = [
    "--max_query_length",
    "32",
    "--max_seg_length",
    "512",
    "--max_seg_num",
    "4",
    "--init_path",
    "x",
    "--hardneg_path",
    "y",
]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--max_query_length", "0", "argument --max_query_length: must be >= 2, got 0"),
        ("--max_bsize", "0", "argument --max_bsize: must be >= 1, got 0"),
        ("--num_train_epochs", "0", "argument --num_train_epochs: must be >= 1, got 0"),
        ("--max_seg_num", "0", "argument --max_seg_num: must be >= 1, got 0"),
        ("--learning", "-1", "argument --learning_rate: must be > 0, got -1"),
        ("--cache_size", "0", "argument --cache_size: must be >= 1, got 0"),
        ("--max_grad_norm", "0", "argument --max_grad_norm: must be > 0, got 0"),
        ("--warmup_steps", "x", "argument --warmup_steps: expected an integer, got 'x'"),
    ],
)
def test_bad_numbers_are_refused_while_parsing(capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        flags.build_train_parser().parse_args([*TRAIN_OK, flag, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and message in err, err
    flags.build_train_parser().parse_args([*TRAIN_OK, "--max_grad_norm", "-1"])  # -1 = no clipping


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max_seg_length", "12"], "--max_seg_length 12 leaves no content tokens with --max_seg_num 4"),
        (
            ["--num_train_epochs", "3", "--epochs_to_run", "5"],
            "--epochs_to_run 5 exceeds --num_train_epochs 3",
        ),
        (["--fp16", "--bf16"], "--fp16 and --bf16 are exclusive"),
        (["--resume", "--overwrite_output_dir"], "--resume and --overwrite_output_dir are exclusive"),
    ],
)
def test_cross_flag_errors_are_user_errors(extra, message):
    ns = flags.build_train_parser().parse_args([*TRAIN_OK, *extra])
    with pytest.raises(SeDRInputError, match=re.escape(message)):
        flags.validate_train_args(ns)


def test_inference_and_adore_ranges(capsys):
    base = ["--model_path", "m"]
    for argv in (
        [*base, "--eval_batch_size", "0"],
        [*base, "--search_shards", "0"],
        [*base, "--num_shards", "0"],
    ):
        with pytest.raises(SystemExit):
            flags.build_inference_parser().parse_args(argv)
        assert "must be >= 1, got 0" in capsys.readouterr().err
    ns = flags.build_inference_parser().parse_args([*base, "--num_shards", "2", "--shard_id", "2"])
    with pytest.raises(SeDRInputError, match="--shard_id must lie in 0..1"):
        flags.validate_inference_args(ns)
    with pytest.raises(SystemExit):
        flags.build_adore_parser().parse_args(
            [
                "--init_path",
                "a",
                "--pembed_dir",
                "b",
                "--model_save_dir",
                "c",
                "--log_dir",
                "d",
                "--preprocess_dir",
                "e",
                "--metric_cut",
                "0",
            ]
        )
    assert "argument --metric_cut: must be >= 1, got 0" in capsys.readouterr().err
