"""Train SeDR-Longformer: ``python SeDR_Longformer/train.py --max_doc_length 2048 --max_seg_num 4 ...``.

The loop, optimizer, schedule, clipping, logging, Late-Cache and checkpointing are SeDR's trainer's;
every document is one ``max_doc_length`` row (so ``--max_bsize`` counts documents), the schedule
horizon omits the factor ``M``, and checkpoints are named
``epoch-{e}-{max_doc_length}-{max_seg_num}-{max_bsize}-SeDR_Longformer``.
"""

from SeDR.cli.train import run_longformer_training
from SeDR.core.errors import exit_on_input_error


@exit_on_input_error
def main(argv=None):
    return run_longformer_training(argv).saved


if __name__ == "__main__":
    main()
