"""Maintenance commands beside the pipeline: export to the original code's layout, the reproduction
ledger.

Layer 5: imports any layer below :mod:`SeDR.cli`.
"""
