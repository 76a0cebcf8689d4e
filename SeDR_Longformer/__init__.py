"""SeDR-Longformer: one 2048-token pass with global CLS tokens (SPEC §3.4), on transformers' LongformerModel."""
