"""The commands: flag declarations and each command's body (train, inference, ADORE, preprocess, the
Longformer conversion, index, search). The scripts at the original paths are one call into here.

Layer 6: imports every layer below; nothing of the library imports it.
"""
