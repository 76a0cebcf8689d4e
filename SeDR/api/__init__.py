"""Search your own documents: :class:`~SeDR.api.retriever.Retriever` and its index folder
(docs/your-documents.md).

Layer 4: imports :mod:`SeDR.core`, :mod:`SeDR.data`, :mod:`SeDR.modeling` and :mod:`SeDR.retrieval`.
"""
