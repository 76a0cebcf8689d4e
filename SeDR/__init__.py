"""SeDR: Segment representation learning for long-document dense retrieval.

A re-implementation of Chen et al. (2022, arXiv 2211.10841) on stock Hugging Face
encoders. See ``../shared/SPEC.md`` (not shipped) and README.md for the behaviour.
"""

__version__ = "0.1.0"
