"""SeDR: Segment representation learning for long-document dense retrieval.

A re-implementation of Chen et al. (2022, arXiv 2211.10841) on stock Hugging Face
encoders. The method as implemented: docs/README.md; the module map: docs/architecture.md#module-map.
"""

__version__ = "0.1.0"
