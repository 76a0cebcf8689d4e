"""Encode, search and evaluate SeDR-Longformer:
``python SeDR_Longformer/inference.py --max_doc_length 2048 ...``.

Output folder ``./data/evaluate/{basename(model_path)}-inf{max_doc_length}-{max_seg_num}``. Every
document is one ``max_doc_length`` row and yields ``max_seg_num`` index rows (zero vectors for CLS
positions outside the document), its offset repeated in ``passages-id.memmap``.
"""

from SeDR.cli.inference import run_longformer_inference
from SeDR.core.errors import exit_on_input_error


@exit_on_input_error
def main(argv=None):
    return run_longformer_inference(argv)


if __name__ == "__main__":
    main()
