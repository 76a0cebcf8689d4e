"""``python -m SeDR.export_original MODEL_DIR OUT_DIR``: a checkpoint in the original code's layout
(:mod:`SeDR.tools.export_original`)."""

from SeDR.tools.export_original import main

if __name__ == "__main__":
    main()
