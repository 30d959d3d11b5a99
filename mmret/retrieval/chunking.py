"""Token-budget chunking with overlap and a metadata prefix (EasyRAG §4.1).

A document's text is cut into tokens (default: each word ``\\w+`` or punctuation mark
``[^\\w\\s]`` is one token, found with its character span); windows of ``budget`` tokens
start every ``budget - overlap`` tokens, the last window ends at the last token; a chunk is
the original text from its first token's start to its last token's end (whitespace and
line breaks inside are kept).

The metadata prefix is a template, by default EasyRAG's ``"###\\n{path}\\n\\n{chunk}"``
(``path`` = the document's ``title``, its knowledge path). Its length in tokens,
``m = len(tokens(template with chunk=""))``, is subtracted from the budget or not:

- ``subtract_metadata=True`` (llama-index SentenceSplitter's metadata-aware default):
  ``budget = chunk_size - m``, so prefix + chunk fit in ``chunk_size``;
- ``subtract_metadata=False`` (EasyRAG's "remove path influence" fix): ``budget =
  chunk_size``, so a long path does not shrink the chunks.

Each chunk is a :class:`Document` with id ``"{id}#{j}"``, the parent's title and meta plus
``parent``, ``chunk_index`` and ``chunk`` (the raw chunk text); its ``text`` is the raw
chunk, or the rendered prefix + chunk with ``render=True``. Routes can render it
themselves with a ``template`` (:mod:`mmret.retrieval.text`). Unlike llama-index's
splitter, windows are cut at token boundaries, not at sentence boundaries.

>>> from mmret.retrieval.types import Document
>>> chunker = TokenChunker(chunk_size=4, overlap=1, template=None)
>>> [c.text for c in chunker.chunk(Document("d", "a b c d e f g"))]
['a b c d', 'd e f g']
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from mmret.retrieval.types import Document

__all__ = ["EASYRAG_PREFIX", "TokenChunker", "chunk_documents"]

logger = logging.getLogger(__name__)

#: EasyRAG's metadata prefix
EASYRAG_PREFIX = "###\n{path}\n\n{chunk}"
TOKEN_PATTERN = r"\w+|[^\w\s]"


class TokenChunker:
    """Cut documents into overlapping token windows (module docstring).

    Args:
        chunk_size: tokens per chunk, prefix included when ``subtract_metadata``.
        overlap: tokens shared by consecutive chunks (``< budget``).
        template: the metadata prefix template (fields ``path``/``title``/``chunk``/
            ``id``); ``None``: no prefix.
        subtract_metadata: subtract the prefix's token count from the budget.
        render: store prefix + chunk as the chunk's ``text`` (else the raw chunk).
        token_pattern: regex whose matches are the tokens.
        on_empty: ``"raise"`` or ``"skip"`` (counted, logged) for documents with no token.
    """

    def __init__(self, chunk_size: int = 1024, overlap: int = 200,
                 template: str | None = EASYRAG_PREFIX, subtract_metadata: bool = True,
                 render: bool = False, token_pattern: str = TOKEN_PATTERN,
                 on_empty: str = "raise") -> None:
        if int(chunk_size) < 1 or int(overlap) < 0:
            raise ValueError(f"chunking: chunk_size must be >= 1 and overlap >= 0, got "
                             f"{chunk_size!r} and {overlap!r}")
        if on_empty not in ("raise", "skip"):
            raise ValueError(f"chunking: on_empty must be 'raise' or 'skip', got {on_empty!r}")
        self.chunk_size, self.overlap = int(chunk_size), int(overlap)
        self.template = template
        self.subtract_metadata = bool(subtract_metadata)
        self.render = bool(render)
        self._pattern = re.compile(token_pattern)
        self.on_empty = on_empty
        self.skipped = 0

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        return sum(1 for _ in self._pattern.finditer(text))

    def _prefix(self, doc: Document, chunk: str) -> str:
        assert self.template is not None
        return self.template.format(path=doc.title, title=doc.title, id=doc.id, chunk=chunk)

    def budget(self, doc: Document) -> int:
        """Content tokens per chunk of ``doc``."""
        meta = self.count(self._prefix(doc, "")) if self.template and self.subtract_metadata else 0
        budget = self.chunk_size - meta
        if budget <= self.overlap:
            raise ValueError(
                f"chunking: document {doc.id!r}: its metadata prefix takes {meta} of "
                f"{self.chunk_size} tokens, leaving {budget}, which must exceed the overlap "
                f"{self.overlap} (shorten the path, raise chunk_size, or "
                "subtract_metadata=False)")
        return budget

    def chunk(self, doc: Document) -> list[Document]:
        """The chunks of one document, in order."""
        spans = [m.span() for m in self._pattern.finditer(doc.text)]
        if not spans:
            if self.on_empty == "raise":
                raise ValueError(f"chunking: document {doc.id!r} has no tokens "
                                 "(on_empty='skip' leaves it out, counted)")
            self.skipped += 1
            logger.warning("chunking: document %r has no tokens; skipped", doc.id)
            return []
        budget = self.budget(doc)
        step = budget - self.overlap
        out: list[Document] = []
        start = 0
        while True:
            end = min(start + budget, len(spans))
            raw = doc.text[spans[start][0]:spans[end - 1][1]]
            j = len(out)
            text = self._prefix(doc, raw) if (self.render and self.template) else raw
            meta = {**dict(doc.meta), "parent": doc.id, "chunk_index": j, "chunk": raw}
            out.append(Document(f"{doc.id}#{j}", text, title=doc.title, meta=meta))
            if end == len(spans):
                return out
            start += step

    def chunk_all(self, documents: Sequence[Document]) -> list[Document]:
        """Every document's chunks; duplicate parent ids raise."""
        seen: set[str] = set()
        out: list[Document] = []
        for doc in documents:
            if doc.id in seen:
                raise ValueError(f"chunking: duplicate document id {doc.id!r}")
            seen.add(doc.id)
            out.extend(self.chunk(doc))
        return out


def chunk_documents(documents: Sequence[Document], **settings: object) -> list[Document]:
    """``TokenChunker(**settings).chunk_all(documents)``."""
    return TokenChunker(**settings).chunk_all(documents)  # type: ignore[arg-type]
