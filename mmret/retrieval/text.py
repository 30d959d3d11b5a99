"""What text a route indexes for a document: a format template over its fields.

Fields: ``{id}``, ``{text}``, ``{title}`` (``{path}`` is the same: EasyRAG's knowledge
path), ``{chunk}`` (``meta["chunk"]`` when a chunker stored the raw chunk, else ``text``)
and every key of ``meta``. EasyRAG (METHODS-TEXT §4.2) indexes route 1 with
``"###\\n{path}\\n\\n{text}"`` and route 2 with ``"{path}"``.

>>> from mmret.retrieval.types import Document
>>> document_text(Document("d1", "body", title="A > B"), "###\\n{path}\\n\\n{text}")
'###\\nA > B\\n\\nbody'
"""

from __future__ import annotations

from collections.abc import Sequence

from mmret.retrieval.types import Document

__all__ = ["DEFAULT_TEMPLATE", "EASYRAG_TEMPLATE", "document_text", "document_texts"]

DEFAULT_TEMPLATE = "{text}"
#: EasyRAG's route-1 and reranker passage text ("###\n{path}\n\n{chunk}")
EASYRAG_TEMPLATE = "###\n{path}\n\n{text}"


def document_text(doc: Document, template: str = DEFAULT_TEMPLATE) -> str:
    """``template`` filled with ``doc``'s fields; an unknown field names the document."""
    if template == DEFAULT_TEMPLATE:
        return doc.text
    fields = {**dict(doc.meta), "id": doc.id, "text": doc.text, "title": doc.title,
              "path": doc.title}
    fields.setdefault("chunk", doc.text)
    try:
        return template.format_map(fields)
    except KeyError as exc:
        raise KeyError(f"document {doc.id!r}: template {template!r} needs field {exc.args[0]!r}"
                       f", which the document lacks (fields: {sorted(fields)})") from None


def document_texts(documents: Sequence[Document], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """:func:`document_text` of every document."""
    return [document_text(d, template) for d in documents]
