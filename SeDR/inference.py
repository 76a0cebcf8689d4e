"""Encode every segment, search, rank documents by their best segment, evaluate.

``python SeDR/inference.py --model_class SeDR --max_query_length 32 --max_seg_length 512
--max_seg_num 4 --model_path ./data/models/epoch-4-512-4-17-SeDR --faiss_gpus 0``

Writes into ``./data/evaluate/{basename(model_path)}-inf{max_seg_length}-{max_seg_num}``:
``passages.memmap`` + ``passages-id.memmap`` (reused when complete), run files with the
original ids, ``metrics.json``; prints a results table. ``--gen_hardneg`` also writes the hard
negatives of every training query. Under ``torchrun`` (or with ``--num_shards/--shard_id``) each
process encodes one contiguous document range.
"""

from SeDR.cli.inference import run_inference
from SeDR.core.errors import exit_on_input_error


@exit_on_input_error
def main(argv=None):
    return run_inference(argv)


if __name__ == "__main__":
    main()
