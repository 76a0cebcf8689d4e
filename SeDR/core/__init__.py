"""Foundations: constants, one-line user errors, runtime switches (device, precision, seeds, logging,
process groups) and output ownership (atomic writes, locks, backups, fingerprints, run records).

Layer 0: imports nothing else of SeDR.
"""
