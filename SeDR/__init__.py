"""SeDR: Segment representation learning for long-document dense retrieval.

A re-implementation of Chen et al. (2022, arXiv 2211.10841) on stock Hugging Face
encoders. The method as implemented: docs/README.md; the package's layers and the data flow:
docs/architecture.md#module-map. Searching your own documents: ``from SeDR import Retriever``
(docs/your-documents.md).
"""

__version__ = "0.1.0"
__all__ = ["DocumentIndex", "Hit", "Retriever"]


def __getattr__(name):
    # PEP 562: the retriever (torch, transformers) is imported on first use,
    # so `import SeDR.cli.flags` stays light.
    if name in __all__:
        from SeDR.api import retriever

        return getattr(retriever, name)
    raise AttributeError(f"module 'SeDR' has no attribute {name!r}")
